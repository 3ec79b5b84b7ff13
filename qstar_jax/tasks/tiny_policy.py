"""The tiny ArithChain policy shipped with the package: loading and evaluation.

`experiments/train_tiny_policy.py` trains the `tiny` decoder preset from
scratch on ArithChain gold solutions and writes `qstar_jax/assets/tiny_policy/`
(and, for a 2-layer 128-wide decoder, the fast rollout policy of eta-MCTS in
`qstar_jax/assets/tiny_fast_policy/`, `load_tiny_fast_policy()`):

* `params.safetensors`: the final parameters, one tensor per leaf of
  `nnx.to_pure_dict(nnx.state(model, nnx.Param))` named by its '/'-joined
  path (`layers/0/attn/q_proj/kernel`), stored as float16 to keep the file
  small. The shipped policy *is* these float16 values (widened to float32 on
  load); every number in `training_log.json` was measured on them.
* `config.json`: decoder, task and train configs, tokenizer, seeds.
* `tokenizer.json`: the `ArithTokenizer`.
* `training_log.json`: loss curve summary, wall time, held-out results.

Prompt format: `<bos>` + `task.format_prompt(problem)`; the policy writes the
solution and ends it with `<eos>` (the stop rule: newline ends a step, eos
ends the solution, a '####' token marks the answer step).
"""

from __future__ import annotations

import json
import os
from functools import partial
from typing import Sequence

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from qstar_jax.models.config import DecoderConfig
from qstar_jax.models.decoder import Decoder, init_decoder
from qstar_jax.sampling.decode import StopRule
from qstar_jax.sampling.logits import GREEDY
from qstar_jax.sampling import states
from qstar_jax.sampling.proposer import rollout
from qstar_jax.tasks.arith_tokenizer import ArithTokenizer
from qstar_jax.tasks.arithchain import ArithChain, ArithChainConfig
from qstar_jax.tasks.base import Problem

ASSET_DIR = os.path.join(os.path.dirname(os.path.dirname(__file__)), "assets",
                         "tiny_policy")
FAST_ASSET_DIR = os.path.join(os.path.dirname(ASSET_DIR), "tiny_fast_policy")
"""The fast rollout policy of eta-MCTS: a 2-layer, 128-wide decoder
(468k parameters) trained like the tiny policy; same tokenizer and task."""
PARAMS_FILE = "params.safetensors"


def stop_rule(tokenizer: ArithTokenizer) -> StopRule:
    """ArithChain's stop rule (`states.task_stop_rule`): newline ends a
    step, eos ends the solution, its final marker '####' marks the answer."""
    return states.task_stop_rule(tokenizer, ArithChain())


def save_params(model: nnx.Module, path: str, dtype=np.float16) -> None:
    """Writes the model's parameters as safetensors with '/'-joined names."""
    from safetensors.numpy import save_file
    flat = {}

    def walk(tree, prefix):
        for key, value in tree.items():
            name = f"{prefix}/{key}" if prefix else str(key)
            if isinstance(value, dict):
                walk(value, name)
            else:
                flat[name] = np.asarray(value).astype(dtype)

    walk(nnx.to_pure_dict(nnx.state(model, nnx.Param)), "")
    save_file(flat, path)


def load_params_into(module: nnx.Module, path: str) -> nnx.Module:
    """Fills any module's parameters from a `save_params` file (float32).

    Raises:
      ValueError: a tensor is missing, unexpected or mis-shaped.
    """
    from safetensors.numpy import load_file
    flat = load_file(path)
    state = nnx.state(module, nnx.Param)
    pure = nnx.to_pure_dict(state)
    seen = set()

    def fill(tree, prefix):
        for key, value in tree.items():
            name = f"{prefix}/{key}" if prefix else str(key)
            if isinstance(value, dict):
                fill(value, name)
                continue
            if name not in flat or flat[name].shape != value.shape:
                raise ValueError(f"{path}: tensor {name} missing or shaped "
                                 f"{getattr(flat.get(name), 'shape', None)}"
                                 f", expected {value.shape}")
            tree[key] = jnp.asarray(flat[name].astype(np.float32))
            seen.add(name)

    fill(pure, "")
    if set(flat) - seen:
        raise ValueError(f"{path}: unexpected tensors "
                         f"{sorted(set(flat) - seen)[:5]}")
    nnx.replace_by_pure_dict(state, pure)
    nnx.update(module, state)
    return module


def load_params(config: DecoderConfig, path: str) -> Decoder:
    """Builds a decoder from a `save_params` file (float32 parameters)."""
    return load_params_into(init_decoder(config, 0), path)


def load_tiny_policy(
        path: str = ASSET_DIR) -> tuple[Decoder, ArithTokenizer,
                                        ArithChainConfig]:
    """The shipped policy: (model, tokenizer, ArithChain task config)."""
    with open(os.path.join(path, "config.json")) as f:
        config = json.load(f)
    decoder_config = DecoderConfig(**config["decoder"])
    task_config = ArithChainConfig(
        **{**config["task"], "operations": tuple(config["task"]["operations"])})
    tokenizer = ArithTokenizer.load(os.path.join(path, "tokenizer.json"))
    model = load_params(decoder_config, os.path.join(path, PARAMS_FILE))
    return model, tokenizer, task_config


def load_tiny_fast_policy() -> tuple[Decoder, ArithTokenizer,
                                     ArithChainConfig]:
    """The shipped fast rollout policy: (model, tokenizer, task config)."""
    return load_tiny_policy(FAST_ASSET_DIR)


def encode_prompts(tokenizer: ArithTokenizer, task: ArithChain,
                   problems: Sequence[Problem],
                   width: int) -> tuple[np.ndarray, np.ndarray]:
    """Right-padded prompt ids.

    Returns:
      tokens [B, width] int32 (bos + prompt, pad after), lengths [B] int32.
    """
    tokens = np.full((len(problems), width), tokenizer.pad_id, np.int32)
    lengths = np.zeros(len(problems), np.int32)
    for i, p in enumerate(problems):
        ids = tokenizer.encode(task.format_prompt(p), add_bos=True)
        if len(ids) > width:
            raise ValueError(f"prompt of {p.uid} has {len(ids)} tokens > "
                             f"{width}")
        tokens[i, :len(ids)] = ids
        lengths[i] = len(ids)
    return tokens, lengths


@partial(jax.jit, static_argnames=("max_tokens",))
def _greedy(model, tokens, lengths, stop, max_tokens):
    keys = jax.random.split(jax.random.key(0), tokens.shape[0])  # Unused.
    out = rollout(model, tokens, lengths, keys, stop, max_tokens=max_tokens,
                  sampling=GREEDY)
    return out.tokens[:, 0], out.lengths[:, 0]


def greedy_solutions(model: Decoder, tokenizer: ArithTokenizer,
                     task: ArithChain, problems: Sequence[Problem], *,
                     batch_size: int = 100, prompt_width: int = 96,
                     max_tokens: int | None = None) -> list[str]:
    """Greedy solution texts, decoded in fixed-shape jitted batches.

    Args:
      model: the policy.
      tokenizer: its tokenizer.
      task: the task (prompt format, difficulty).
      problems: N problems.
      batch_size: B rows per rollout call (the last batch is padded).
      prompt_width: P, prompt slots per row.
      max_tokens: T solution tokens (default 14 per step + 8).

    Returns:
      N solution texts (special tokens removed).
    """
    max_tokens = max_tokens or 14 * task.config.num_steps_max + 8
    stop = stop_rule(tokenizer)
    texts = []
    for start in range(0, len(problems), batch_size):
        chunk = list(problems[start:start + batch_size])
        tokens, lengths = encode_prompts(tokenizer, task, chunk, prompt_width)
        tokens = states.pad_batch(tokens, batch_size)
        lengths = states.pad_batch(lengths, batch_size)
        out, out_len = jax.device_get(_greedy(model, tokens, lengths, stop,
                                              max_tokens))
        texts += [tokenizer.decode(out[i, :out_len[i]])
                  for i in range(len(chunk))]
    return texts


def evaluate_policy(model: Decoder, tokenizer: ArithTokenizer,
                    task: ArithChain, problems: Sequence[Problem],
                    **kwargs) -> dict:
    """Greedy final-answer accuracy and step-level correctness.

    Returns:
      A dict: n; accuracy (the '####' answer graded correct); all_steps_correct
      (answer correct and every step correct by `task.step_correctness`);
      step_accuracy (share of written steps that are correct);
      first_step_accuracy; and per-problem `correct` flags.
    """
    texts = greedy_solutions(model, tokenizer, task, problems, **kwargs)
    correct, all_ok, steps_ok, steps_total, first_ok = [], [], 0, 0, 0
    for p, text in zip(problems, texts):
        ok = task.reward(p, text) == 1.0
        flags = task.step_correctness(p, text)
        correct.append(ok)
        all_ok.append(ok and bool(flags) and all(flags)
                      and len(flags) == len(p.solution_steps))
        steps_ok += sum(flags)
        steps_total += len(flags)
        first_ok += bool(flags and flags[0])
    n = len(problems)
    return {"n": n, "accuracy": float(np.mean(correct)),
            "all_steps_correct": float(np.mean(all_ok)),
            "step_accuracy": steps_ok / max(steps_total, 1),
            "first_step_accuracy": first_ok / n,
            "correct": correct, "texts": texts}
