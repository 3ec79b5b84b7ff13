"""One general trainer: AdamW, a pluggable loss, Orbax checkpoints, resume.

`train(model, data, loss_fn, config)` minimises `loss_fn(model, batch)` over
batches drawn from `data` (a dict of host arrays with a common leading axis N)
with AdamW under linear warm-up and cosine decay. The same loop serves policy
SFT (`losses.sft_loss`), critics (MSE / BCE losses) and fine-tuning a loaded
model: only the loss and the data differ.

Determinism: the batch at step s is `batch_indices(N, B, seed, s)`, a pure
function of (seed, s) (a fresh permutation of the N examples per epoch), and
the jitted step is the same computation on every run, so a run interrupted
after a checkpoint and resumed (`resume=True`) ends with bit-identical
parameters to an uninterrupted run.

Checkpoints: an Orbax `CheckpointManager` under `checkpoint_dir` stores
{'params', 'opt_state'} at every `checkpoint_every` steps and at the end; the
checkpoint's step number is the number of updates applied. Metrics are
averaged over `log_every` steps and appended to `log_path` as JSON lines;
beside it (`tensorboard_dir(log_path)`: `metrics.jsonl` ->
`metrics_tensorboard/`) the same scalars go to TensorBoard event files
(tensorboardX; `train/<name>` and `eval/<name>` tags at the step;
`tensorboard=False` turns them off). View them with
`tensorboard --logdir <run dir>`.

Meshes: with `mesh=` every batch is split over the mesh's 'data' axis and
the parameters and optimizer state take the `param_layout` of
`partitioning` ('replicated': data parallel; 'fsdp': sharded over 'data';
'tensor': split over 'model'). Checkpoints hold whole arrays, so a run
saved on one mesh or layout resumes (or `restore_params` loads) on any
other; restored arrays take the layout of the run that reads them.
"""

from __future__ import annotations

import dataclasses
import json
import os
import time
from typing import Callable, Mapping

import jax
import jax.numpy as jnp
import numpy as np
import optax
import orbax.checkpoint as ocp
from flax import nnx
from tqdm.auto import tqdm

from qstar_jax.parallel import place_tree, shard_rows
from qstar_jax.partitioning import param_specs
from qstar_jax.training.tensorboard import ScalarLog

LossFn = Callable[[nnx.Module, dict], tuple[jax.Array, dict]]


@dataclasses.dataclass(frozen=True, kw_only=True)
class TrainConfig:
    """Optimisation, batching, checkpointing and logging settings.

    Attributes:
      learning_rate: peak learning rate (reached after warm-up).
      warmup_steps: linear warm-up from 0 to the peak.
      total_steps: optimiser updates in the whole run.
      end_lr_ratio: the cosine decay ends at learning_rate * end_lr_ratio.
      weight_decay: AdamW decoupled weight decay (matrices only, not norms
        or biases).
      b1: Adam first-moment decay.
      b2: Adam second-moment decay.
      batch_size: B examples per step.
      grad_clip: global gradient-norm clip (0 disables).
      checkpoint_every: save every this many steps (0: only at the end).
      max_checkpoints: checkpoints kept by the manager.
      log_every: steps averaged per metrics record.
      seed: the batch order's seed.
    """

    learning_rate: float = 1e-3
    warmup_steps: int = 100
    total_steps: int = 1000
    end_lr_ratio: float = 0.1
    weight_decay: float = 0.01
    b1: float = 0.9
    b2: float = 0.95
    batch_size: int = 32
    grad_clip: float = 1.0
    checkpoint_every: int = 0
    max_checkpoints: int = 2
    log_every: int = 50
    seed: int = 0

    def __post_init__(self):
        if self.total_steps < 1 or self.batch_size < 1 or self.log_every < 1:
            raise ValueError("total_steps, batch_size and log_every must be "
                             ">= 1")
        if not 0 <= self.warmup_steps <= self.total_steps:
            raise ValueError("warmup_steps must be in [0, total_steps]")
        if self.checkpoint_every < 0 or self.max_checkpoints < 1:
            raise ValueError("checkpoint_every >= 0, max_checkpoints >= 1")


@dataclasses.dataclass(frozen=True)
class TrainResult:
    """What `train` returns.

    Attributes:
      model: the trained model (the same object, updated in place).
      step: updates applied in total (resumed ones included).
      history: the logged metrics records of this run.
      wall_time_s: seconds spent in this run's training loop.
    """

    model: nnx.Module
    step: int
    history: list[dict]
    wall_time_s: float


def learning_rate_schedule(config: TrainConfig) -> optax.Schedule:
    """Linear warm-up to the peak, then cosine decay to the end ratio."""
    return optax.warmup_cosine_decay_schedule(
        init_value=0.0, peak_value=config.learning_rate,
        warmup_steps=config.warmup_steps,
        decay_steps=max(config.total_steps, config.warmup_steps + 1),
        end_value=config.learning_rate * config.end_lr_ratio)


def make_optimizer(config: TrainConfig) -> optax.GradientTransformation:
    """AdamW with the schedule, global-norm clipping and masked decay."""
    adamw = optax.adamw(
        learning_rate_schedule(config), b1=config.b1, b2=config.b2,
        weight_decay=config.weight_decay,
        mask=lambda params: jax.tree.map(lambda p: p.ndim >= 2, params))
    if config.grad_clip > 0:
        return optax.chain(optax.clip_by_global_norm(config.grad_clip), adamw)
    return adamw


def batch_indices(num_examples: int, batch_size: int, seed: int,
                  step: int) -> np.ndarray:
    """[B] example indices of the batch at `step` (a function of seed, step).

    Example positions s*B .. (s+1)*B - 1 of an endless stream in which
    epoch e is a permutation of range(N) seeded by (seed, e).
    """
    positions = np.arange(step * batch_size, (step + 1) * batch_size)
    epochs, offsets = np.divmod(positions, num_examples)
    out = np.empty(batch_size, np.int64)
    for epoch in np.unique(epochs):
        perm = np.random.default_rng([seed, int(epoch)]).permutation(
            num_examples)
        where = epochs == epoch
        out[where] = perm[offsets[where]]
    return out


def _checkpoint_manager(directory: str,
                        config: TrainConfig) -> ocp.CheckpointManager:
    options = ocp.CheckpointManagerOptions(
        max_to_keep=config.max_checkpoints, create=True)
    return ocp.CheckpointManager(os.path.abspath(directory), options=options)


def save_checkpoint(manager: ocp.CheckpointManager, step: int, params,
                    opt_state) -> None:
    """Saves {'params', 'opt_state'} as checkpoint `step` (blocking)."""
    manager.save(step, args=ocp.args.StandardSave(
        {"params": params, "opt_state": opt_state}), force=True)
    manager.wait_until_finished()


def restore_checkpoint(manager: ocp.CheckpointManager, step: int, params,
                       opt_state):
    """Restores checkpoint `step` into the structure of (params, opt_state)."""
    target = jax.tree.map(ocp.utils.to_shape_dtype_struct,
                          {"params": params, "opt_state": opt_state})
    restored = manager.restore(step, args=ocp.args.StandardRestore(target))
    return restored["params"], restored["opt_state"]


def place_train_state(params, opt_state, mesh: jax.sharding.Mesh,
                      layout: str):
    """(params, opt_state) placed on `mesh` in a `partitioning` layout
    (optimizer moments follow their parameters; step counters are
    replicated)."""
    return place_tree((params, opt_state), mesh,
                      param_specs((params, opt_state), mesh, layout))


def restore_params(model: nnx.Module, checkpoint_dir: str, step: int,
                   config: TrainConfig, *,
                   mesh: jax.sharding.Mesh | None = None,
                   param_layout: str = "replicated") -> nnx.Module:
    """Loads the parameters of checkpoint `step` of a `train` run into
    `model` (in place; for example the step with the best validation
    metric). With `mesh`, the parameters are restored straight into
    `param_layout` on that mesh, whatever mesh saved them. Raises
    FileNotFoundError if that step was not kept."""
    manager = _checkpoint_manager(checkpoint_dir, config)
    try:
        if step not in manager.all_steps():
            raise FileNotFoundError(
                f"no checkpoint {step} in {checkpoint_dir} (kept: "
                f"{sorted(manager.all_steps())})")
        params = nnx.state(model, nnx.Param)
        opt_state = make_optimizer(config).init(params)
        if mesh is not None:
            params, opt_state = place_train_state(params, opt_state, mesh,
                                                  param_layout)
        params, _ = restore_checkpoint(manager, step, params, opt_state)
    finally:
        manager.close()
    nnx.update(model, params)
    return model


def tensorboard_dir(log_path: str) -> str:
    """Where `train` writes the event files of a JSON-lines log:
    the log's path without its extension, plus '_tensorboard'."""
    return os.path.splitext(log_path)[0] + "_tensorboard"


def _scalars(record: dict, prefix: str) -> dict[str, float]:
    """A log record's scalars under TensorBoard tags (not the step)."""
    return {(k if k.startswith("eval/") else f"{prefix}/{k}"): v
            for k, v in record.items() if k != "step"}


def train(model: nnx.Module, data: Mapping[str, np.ndarray], loss_fn: LossFn,
          config: TrainConfig, *, checkpoint_dir: str | None = None,
          resume: bool = False, log_path: str | None = None,
          tensorboard: bool = True,
          progress: bool = True, stop_at: int | None = None,
          eval_fn: Callable[[nnx.Module], dict] | None = None,
          eval_every: int = 0,
          mesh: jax.sharding.Mesh | None = None,
          param_layout: str = "replicated") -> TrainResult:
    """Trains the model's `nnx.Param`s on `data` with `loss_fn`.

    Args:
      model: any NNX module; its parameters are updated in place.
      data: name -> host array [N, ...]; each batch is the dict of rows
        `batch_indices(N, B, seed, step)`.
      loss_fn: `loss_fn(model, batch) -> (scalar loss, dict of scalars)`.
      config: the `TrainConfig`.
      checkpoint_dir: where Orbax checkpoints go (None: no checkpoints).
      resume: start from the latest checkpoint in `checkpoint_dir` if any.
      log_path: JSON-lines metrics file (appended to).
      tensorboard: with `log_path`, also write every logged record to
        TensorBoard event files in `tensorboard_dir(log_path)`.
      progress: show a tqdm progress bar.
      stop_at: stop after this many total updates, as an interruption would
        (checkpoints are only the regular ones); None runs to the end.
      eval_fn: called as `eval_fn(model)` every `eval_every` steps and at the
        end with the current parameters; its dict of floats is logged as a
        record {'step', 'eval/<name>': value}. It must not change the model.
      eval_every: steps between evaluations (0: only at the end).
      mesh: a `parallel.make_mesh` or `parallel.data_mesh`: every batch
        is split over its 'data' axis (batch_size must divide evenly) and
        `jax.jit` partitions the step, inserting the gradient all-reduce
        (or reduce-scatter). The result equals the single-device run up
        to float reduction order. Works across processes
        (`distributed.initialize`): every process runs `train` with the
        same arguments and feeds its own shards.
      param_layout: with `mesh`, where parameters and optimizer state
        live: 'replicated' (every device), 'fsdp' (split over 'data') or
        'tensor' (split over 'model'); see `partitioning`. They keep that
        layout through the run and in the returned model.

    Returns:
      A `TrainResult`.
    """
    sizes = {k: len(v) for k, v in data.items()}
    if len(set(sizes.values())) != 1:
        raise ValueError(f"data arrays differ in length: {sizes}")
    num_examples = next(iter(sizes.values()))
    graphdef, params, rest = nnx.split(model, nnx.Param, ...)
    params = jax.tree.map(jnp.copy, params)  # Never donate the model's own.
    tx = make_optimizer(config)
    opt_state = tx.init(params)
    if mesh is not None:
        # Placed before any restore, so checkpoints load into this layout.
        params, opt_state = place_train_state(params, opt_state, mesh,
                                              param_layout)
    manager = (_checkpoint_manager(checkpoint_dir, config)
               if checkpoint_dir else None)
    start = 0
    if manager is not None and resume and manager.latest_step() is not None:
        start = int(manager.latest_step())
        params, opt_state = restore_checkpoint(manager, start, params,
                                               opt_state)

    def step_fn(params, opt_state, batch):
        def objective(p):
            return loss_fn(nnx.merge(graphdef, p, rest), batch)

        (loss, metrics), grads = jax.value_and_grad(
            objective, has_aux=True)(params)
        updates, opt_state = tx.update(grads, opt_state, params)
        params = optax.apply_updates(params, updates)
        metrics = dict(metrics, loss=loss, grad_norm=optax.tree.norm(grads))
        return params, opt_state, metrics

    if mesh is None:
        step_fn = jax.jit(step_fn, donate_argnums=(0, 1))
    else:  # Outputs keep the layout of the inputs.
        layout = jax.tree.map(lambda x: x.sharding, (params, opt_state))
        replicated = jax.sharding.NamedSharding(
            mesh, jax.sharding.PartitionSpec())
        step_fn = jax.jit(step_fn, donate_argnums=(0, 1),
                          out_shardings=(*layout, replicated))
    schedule = learning_rate_schedule(config)
    end = config.total_steps if stop_at is None else min(stop_at,
                                                         config.total_steps)
    history, pending = [], []
    log_file = open(log_path, "a") if log_path else None
    board = (ScalarLog(tensorboard_dir(log_path))
             if log_path and tensorboard else None)
    bar = tqdm(total=config.total_steps, initial=start, disable=not progress,
               dynamic_ncols=True)
    t0 = last_time = time.perf_counter()
    step = start
    try:
        while step < end:
            idx = batch_indices(num_examples, config.batch_size, config.seed,
                                step)
            if mesh is None:
                batch = {k: jnp.asarray(v[idx]) for k, v in data.items()}
            else:
                batch = shard_rows({k: np.asarray(v[idx])
                                    for k, v in data.items()}, mesh)
            params, opt_state, metrics = step_fn(params, opt_state, batch)
            step += 1
            pending.append(metrics)
            bar.update(1)
            if step % config.log_every == 0 or step == end:
                now = time.perf_counter()
                record = {k: float(np.mean([float(m[k]) for m in pending]))
                          for k in pending[0]}
                record.update(step=step, lr=float(schedule(step - 1)),
                              elapsed_s=round(now - t0, 3),
                              steps_per_s=round(len(pending)
                                                / max(now - last_time, 1e-9),
                                                3))
                pending, last_time = [], now
                history.append(record)
                bar.set_postfix(loss=f"{record['loss']:.4f}")
                if log_file:
                    log_file.write(json.dumps(record) + "\n")
                    log_file.flush()
                if board is not None:
                    board.write(_scalars(record, "train"), step)
            if eval_fn is not None and (
                    (eval_every and step % eval_every == 0) or step == end):
                scores = eval_fn(nnx.merge(graphdef, params, rest))
                record = {"step": step, **{f"eval/{k}": float(v)
                                           for k, v in scores.items()}}
                history.append(record)
                if log_file:
                    log_file.write(json.dumps(record) + "\n")
                    log_file.flush()
                if board is not None:
                    board.write(_scalars(record, "eval"), step)
            if manager is not None and (
                    (config.checkpoint_every
                     and step % config.checkpoint_every == 0)
                    or step == config.total_steps):
                save_checkpoint(manager, step, params, opt_state)
    finally:
        bar.close()
        if log_file:
            log_file.close()
        if board is not None:
            board.close()
        if manager is not None:
            manager.wait_until_finished()
            manager.close()
    nnx.update(model, params)
    return TrainResult(model=model, step=step, history=history,
                       wall_time_s=time.perf_counter() - t0)
