"""Sibling contrast: scoring, labelling and ranking the K candidate steps of a
state, the choice a search makes at every node.

Pooled metrics (AUC over every step of every problem) reward telling an early
step of an easy problem from a late step of a hard one; a search instead
picks among the candidate next steps of one state. This module serves that
choice:

* `candidate_labels`: each stored candidate a' of a state s_{t+1} labelled by
  a grader of the text [s_{t+1}; a'] (default: the stronger solver that
  trusts the written values, exact on ArithChain).
* `contrast_sibling_arrays`: synthetic rows with no model call, the gold
  states of a task's problems with each gold step and its wrong versions
  (`task.contrast_steps`) as siblings (a supplement to the policy's own).
* `candidate_tool_checks`: the candidates a tool refutes from their text
  (the safe calculator by default), a search-time signal to add to scores.
* `sibling_arrays`: the trainer's data, one row per rollout, its labelled
  candidates packed into C slots with targets, a mask and the state each
  follows (`unpack_candidates` maps per-slot values back to [R, S, K];
  `compact_candidates` keeps a chosen subset of the slots).
* `candidate_scores`: a critic's score of every packed candidate, the
  rollout encoded once and its candidate steps run on top of the matching
  prefix (`score_branches` with per-branch prefix lengths).
* Losses over siblings: `pairwise_ranking_loss` (Bradley-Terry: the better of
  two siblings should score higher), `listwise_ranking_loss` (a softmax over
  the siblings of a state, the target distribution proportional to the
  labels), combined with a pointwise BCE or MSE by `sibling_loss`.
* `pairwise_accuracy`: P(score of a right candidate > score of a wrong
  sibling), ties 1/2, the metric of the critics issue.

Shapes: R rollouts, S steps, K candidates per state, T tokens per candidate,
C packed candidate slots per rollout. The ranking losses compare siblings:
slots of one group (one state), or the last axis when no groups are given.
"""

from __future__ import annotations

from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np
from tqdm.auto import tqdm

from qstar_jax.learning.completions import stronger_solver_reward
from qstar_jax.learning.rollout_data import RolloutDataset
from qstar_jax.models.critic import Critic, score_branches
from qstar_jax.sampling.states import pad_batch
from qstar_jax.training.losses import bce_loss, mse_loss

POINTWISE_LOSSES = ("bce", "mse")
RANKING_LOSSES = ("pairwise", "listwise")

LabelFn = Callable[[object, object, str], float]
"""label_fn(task, problem, solution_text) -> float in [0, 1]."""


def candidate_labels(task, tokenizer, ds: RolloutDataset, *,
                     label_fn: LabelFn = stronger_solver_reward,
                     progress: bool = False) -> np.ndarray:
    """Labels of every valid candidate step, graded on the host.

    Candidate k after step t of rollout r is graded as the solution text of
    the rollout's steps 0..t followed by the candidate (decoded).

    Args:
      task: grades the texts (problems of `ds.split`).
      tokenizer: the dataset's tokenizer.
      ds: rollouts with candidates.
      label_fn: the grader (default `stronger_solver_reward`: ArithChain's
        gold solver continues the written values and the answer is graded).
      progress: show a progress bar.

    Returns:
      [R, S, K] float32 labels, NaN where the candidate is not valid.
    """
    if not ds.has_candidates:
        raise ValueError("the dataset has no candidate steps")
    problems = task.problems(ds.split)
    labels = np.full(ds.cand_valid.shape, np.nan, np.float32)
    cells = list(zip(*np.nonzero(ds.cand_valid)))
    for r, t, k in tqdm(cells, desc="labels", disable=not progress):
        step = ds.cand_tokens[r, t, k, :ds.cand_lengths[r, t, k]]
        text = tokenizer.decode(
            [int(i) for i in np.concatenate([ds.solution_ids(r, t), step])])
        labels[r, t, k] = label_fn(task, problems[int(ds.problem_index[r])],
                                   text)
    return labels


def candidate_tool_checks(tokenizer, ds: RolloutDataset,
                          check: Callable[[str], bool] | None = None
                          ) -> np.ndarray:
    """Which valid candidate steps a tool refutes, from their text alone.

    The search-time signal of a tool (no gold answer, no solver): the
    default check is the safe calculator's claim check of the step's
    written arithmetic (`tasks.claims.check_step(text).ok`).

    Args:
      tokenizer: the dataset's tokenizer.
      ds: rollouts with candidates.
      check: text -> True when the step passes.

    Returns:
      [R, S, K] bool, True where a valid candidate fails the check.
    """
    if check is None:
        from qstar_jax.tasks.claims import check_step

        def check(text: str) -> bool:
            return check_step(text).ok
    refuted = np.zeros(ds.cand_valid.shape, bool)
    for r, t, k in zip(*np.nonzero(ds.cand_valid)):
        step = ds.cand_tokens[r, t, k, :ds.cand_lengths[r, t, k]]
        refuted[r, t, k] = not check(tokenizer.decode(
            [int(i) for i in step]))
    return refuted


EMPTY_SLOT = {"cand_prefix": 1, "cand_group": -1, "cand_index": -1}
"""What an empty candidate slot holds where it is not 0."""


def sibling_arrays(ds: RolloutDataset,
                   labels: np.ndarray) -> dict[str, np.ndarray]:
    """The trainer's data dict for sibling-contrast critic training.

    Most states hold only one or two distinct candidates, so the labelled
    candidates of each rollout are packed into C slots (C = the most any
    rollout has) instead of S*K: each slot records the state it follows
    (`cand_group`, the step t) and the prefix it runs on.

    Args:
      ds: rollouts with candidates ([R, S, K, T]).
      labels: [R, S, K] float, NaN where there is no label.

    Returns:
      Rows of the rollouts holding at least one labelled candidate:
      'tokens' [R', L'] int32 (trimmed to the longest row), 'lengths' [R'],
      'cand_tokens' [R', C, T'] int32 (trimmed to the longest candidate),
      'cand_lengths' [R', C] int32 (0 in empty slots), 'cand_prefix'
      [R', C] int32 (tokens of the state each candidate follows; 1 in
      empty slots), 'cand_group' [R', C] int32 (its step t, -1 in empty
      slots), 'cand_index' [R', C] int32 (t * K + k, -1 in empty slots),
      'cand_log_probs' [R', C] float32 (the policy's, 0 in empty slots),
      'targets' [R', C] float32 and 'mask' [R', C] float32; plus 'row'
      [R'] int32, the rollout each row came from.
    """
    if labels.shape != ds.cand_valid.shape:
        raise ValueError(f"labels {labels.shape} != candidates "
                         f"{ds.cand_valid.shape}")
    valid = ds.cand_valid & np.isfinite(labels)
    rows = np.nonzero(valid.any(axis=(1, 2)))[0]
    _, s, k, _ = ds.cand_tokens.shape
    counts = valid[rows].sum(axis=(1, 2))
    c = int(counts.max())
    t_width = max(int(ds.cand_lengths[valid].max()), 1)
    n = len(rows)
    out = {
        "tokens": ds.tokens[rows, :int(ds.lengths[rows].max())].astype(
            np.int32),
        "lengths": ds.lengths[rows].astype(np.int32),
        "cand_tokens": np.zeros((n, c, t_width), np.int32),
        "cand_lengths": np.zeros((n, c), np.int32),
        **{k: np.full((n, c), v, np.int32) for k, v in EMPTY_SLOT.items()},
        "cand_log_probs": np.zeros((n, c), np.float32),
        "targets": np.zeros((n, c), np.float32),
        "mask": np.zeros((n, c), np.float32),
        "row": rows.astype(np.int32)}
    # Slot j of row i holds the j-th labelled candidate in (t, k) order.
    i, flat = np.nonzero(valid[rows].reshape(n, s * k))
    j = np.arange(len(i)) - np.repeat(np.cumsum(counts) - counts, counts)
    t, kk = np.divmod(flat, k)
    r = rows[i]
    out["cand_tokens"][i, j] = ds.cand_tokens[r, t, kk, :t_width]
    out["cand_lengths"][i, j] = ds.cand_lengths[r, t, kk]
    out["cand_prefix"][i, j] = ds.step_ends[r, t] + 1
    out["cand_group"][i, j] = t
    out["cand_index"][i, j] = flat
    out["cand_log_probs"][i, j] = ds.cand_log_probs[r, t, kk]
    out["targets"][i, j] = labels[r, t, kk]
    out["mask"][i, j] = 1.0
    return out


def contrast_sibling_arrays(task, tokenizer, problems, *, width: int,
                            label_fn: LabelFn = stronger_solver_reward
                            ) -> dict[str, np.ndarray]:
    """Synthetic sibling rows: gold states, each gold step with its wrong
    versions (`task.contrast_steps`) as siblings, no model call.

    Row i is problem i's gold solution (bos + prompt + solution + eos, as
    the policy writes it); the state before gold step t (the prompt, then
    after each step) holds the gold step t and its contrasts, each labelled
    by `label_fn` on the text (so a contrast that happens to be right is
    labelled right). Same keys as `sibling_arrays` (without 'row' and
    'cand_index'); 'cand_log_probs' are 0 (no policy evidence).

    Args:
      task: a task with `contrast_steps` (ArithChain).
      tokenizer: the policy's tokenizer.
      problems: N problems.
      width: L, token slots per row (a longer row raises ValueError).
      label_fn: labels the candidate texts.
    """
    delim = task.step_delimiter
    rows = []
    for p in problems:
        prompt = tokenizer.encode(task.format_prompt(p), add_bos=True)
        steps = list(p.solution_steps)
        tokens, cands = list(prompt), []
        text = ""
        for t, step in enumerate(steps):
            for k, cand in enumerate([step] + task.contrast_steps(p, t)):
                ids = tokenizer.encode(cand + (delim if t + 1 < len(steps)
                                               else ""))
                label = label_fn(task, p, text + cand)
                cands.append((len(tokens), t, ids, label))
            last = t + 1 == len(steps)
            tokens += tokenizer.encode(step + ("" if last else delim),
                                       add_eos=last)
            text += step + delim
        if len(tokens) > width:
            raise ValueError(f"{p.uid}: {len(tokens)} tokens > width "
                             f"{width}")
        rows.append((tokens, cands))
    c = max(len(cands) for _, cands in rows)
    t_width = max(len(ids) for _, cands in rows for _, _, ids, _ in cands)
    n = len(rows)
    out = {"tokens": np.zeros((n, width), np.int32),
           "lengths": np.zeros(n, np.int32),
           "cand_tokens": np.zeros((n, c, t_width), np.int32),
           "cand_lengths": np.zeros((n, c), np.int32),
           "cand_prefix": np.full((n, c), EMPTY_SLOT["cand_prefix"], np.int32),
           "cand_group": np.full((n, c), EMPTY_SLOT["cand_group"], np.int32),
           "cand_log_probs": np.zeros((n, c), np.float32),
           "targets": np.zeros((n, c), np.float32),
           "mask": np.zeros((n, c), np.float32)}
    for i, (tokens, cands) in enumerate(rows):
        out["tokens"][i, :len(tokens)] = tokens
        out["lengths"][i] = len(tokens)
        for j, (prefix_len, t, ids, label) in enumerate(cands):
            out["cand_tokens"][i, j, :len(ids)] = ids
            out["cand_lengths"][i, j] = len(ids)
            out["cand_prefix"][i, j] = prefix_len
            out["cand_group"][i, j] = t
            out["targets"][i, j] = label
            out["mask"][i, j] = 1.0
    return out


def compact_candidates(data: dict[str, np.ndarray],
                       keep: np.ndarray) -> dict[str, np.ndarray]:
    """Sibling rows with only the candidate slots of `keep`.

    Kept slots move to the front of each row's candidate axis (in order),
    which shrinks to C' = the most slots any row keeps; the rest become
    empty slots (mask 0, `EMPTY_SLOT` fillers). Rows are kept even when
    empty.

    Args:
      data: `sibling_arrays` or `contrast_sibling_arrays` rows: the
        candidate fields ('cand_*' [R, C, ...], 'targets' and 'mask'
        [R, C]) and row fields (left as they are).
      keep: [R, C] bool, the slots to keep (only masked-in ones count).

    Returns:
      The same keys, candidate fields [R, C', ...] with C' >= 1.
    """
    keep = np.asarray(keep, bool) & (data["mask"] > 0)
    order = np.argsort(~keep, axis=1, kind="stable")[:, :max(
        1, int(keep.sum(1).max()))]
    kept = np.take_along_axis(keep, order, 1)
    out = dict(data)
    for key, value in data.items():
        if not (key.startswith("cand_") or key in ("targets", "mask")):
            continue
        trailing = (1,) * (value.ndim - 2)
        moved = np.take_along_axis(
            value, order.reshape(order.shape + trailing), 1)
        out[key] = np.where(kept.reshape(kept.shape + trailing), moved,
                            np.asarray(EMPTY_SLOT.get(key, 0), value.dtype))
    return out


def unpack_candidates(data: dict[str, np.ndarray], values: np.ndarray,
                      shape: tuple[int, int, int]) -> np.ndarray:
    """Scatters per-slot values of `sibling_arrays` rows back to [R, S, K].

    Args:
      data: `sibling_arrays` output; values: [R', C] per-slot values.
      shape: (R, S, K) of the source dataset.

    Returns:
      [R, S, K] float64, NaN where no slot maps.
    """
    r, s, k = shape
    out = np.full((r, s * k), np.nan)
    i, j = np.nonzero(data["mask"] > 0)
    out[data["row"][i], data["cand_index"][i, j]] = values[i, j]
    return out.reshape(r, s, k)


def candidate_scores(critic: Critic, batch: dict) -> jax.Array:
    """Critic scores of the packed candidates of `sibling_arrays` rows.

    Each row's rollout is encoded once and its C candidate steps run on top
    of their own prefixes (`score_branches` with per-branch prefix
    lengths); an evidence critic also reads 'cand_log_probs'.

    Args:
      critic: the critic.
      batch: 'tokens' [R, L], 'lengths' [R], 'cand_tokens' [R, C, T],
        'cand_lengths' [R, C], 'cand_prefix' [R, C], 'cand_log_probs'
        [R, C].

    Returns:
      [R, C] float32 (meaningless in empty slots).
    """
    return score_branches(critic, batch["tokens"], batch["lengths"],
                          batch["cand_tokens"], batch["cand_lengths"],
                          batch["cand_prefix"],
                          branch_log_probs=batch["cand_log_probs"])


_SCORE_FIELDS = ("tokens", "lengths", "cand_tokens", "cand_lengths",
                 "cand_prefix", "cand_log_probs")


@jax.jit
def _candidate_scores(critic, batch):
    return candidate_scores(critic, batch)


def score_siblings(critic: Critic, data: dict[str, np.ndarray], *,
                   batch_size: int = 64,
                   progress: bool = False) -> np.ndarray:
    """`candidate_scores` of every `sibling_arrays` row, in fixed-shape
    jitted batches (the last one padded).

    Returns:
      [R', C] float32 host array.
    """
    n = len(data["tokens"])
    out = []
    for lo in tqdm(range(0, n, batch_size), desc="scoring siblings",
                   disable=not progress, leave=False):
        batch = {k: pad_batch(data[k][lo:lo + batch_size], batch_size)
                 for k in _SCORE_FIELDS}
        out.append(np.asarray(_candidate_scores(critic, batch))[
            :min(batch_size, n - lo)])
    return np.concatenate(out)


def same_group(mask: jax.Array, groups: jax.Array | None) -> jax.Array:
    """[..., C, C] float: slots i and j are siblings (both masked in, same
    group; without `groups` the whole last axis is one group)."""
    both = mask[..., :, None] * mask[..., None, :]
    if groups is None:
        return both
    return both * (groups[..., :, None] == groups[..., None, :])


def pairwise_ranking_loss(scores: jax.Array, targets: jax.Array,
                          mask: jax.Array,
                          groups: jax.Array | None = None) -> jax.Array:
    """Bradley-Terry loss over the siblings of each group.

    Every ordered pair (i, j) of siblings with targets_i > targets_j adds
    softplus(s_j - s_i) = -log sigmoid(s_i - s_j), weighted by
    targets_i - targets_j; the mean is over the total weight.

    Args:
      scores, targets, mask: [..., C] float (mask 1 where the slot counts).
      groups: [..., C] int the state of each slot (None: the last axis is
        one group, as in [R, S, K] layouts).

    Returns:
      Scalar float32 (0 when no group holds a pair).
    """
    s = scores.astype(jnp.float32)
    gap = targets[..., :, None] - targets[..., None, :]          # [..., C, C]
    weight = jnp.where(gap > 0, gap, 0.0) * same_group(mask, groups)
    loss = jax.nn.softplus(s[..., None, :] - s[..., :, None])
    return (loss * weight).sum() / jnp.maximum(weight.sum(), 1e-9)


def listwise_ranking_loss(scores: jax.Array, targets: jax.Array,
                          mask: jax.Array,
                          groups: jax.Array | None = None) -> jax.Array:
    """Softmax cross-entropy over the siblings of each group.

    The target distribution of a group is its targets normalised to sum 1;
    only informative groups count (at least two siblings, not all targets
    equal, some target > 0).

    Args:
      scores, targets, mask: [..., C] float; groups: as in
        `pairwise_ranking_loss`.

    Returns:
      Scalar float32, the mean over informative groups (0 if none).
    """
    same = same_group(mask, groups)                              # [..., C, C]
    s = scores.astype(jnp.float32)
    # log sum over i's siblings of exp(s_j); a large finite filler keeps
    # empty rows NaN-free (gradients included).
    lse = jax.nn.logsumexp(jnp.where(same > 0, s[..., None, :], -1e9),
                           axis=-1)
    size = same.sum(-1)                                          # [..., C]
    total = (same * targets[..., None, :]).sum(-1)
    big = jnp.where(same > 0, targets[..., None, :], -jnp.inf).max(-1)
    small = jnp.where(same > 0, targets[..., None, :], jnp.inf).min(-1)
    informative = (mask > 0) & (size >= 2) & (big > small) & (total > 0)
    p = targets / jnp.maximum(total, 1e-9)
    nll = jnp.where(informative, -p * (s - lse), 0.0)
    num_groups = jnp.where(informative, 1.0 / jnp.maximum(size, 1), 0.0)
    return nll.sum() / jnp.maximum(num_groups.sum(), 1.0)


def batch_pairwise_accuracy(scores: jax.Array, targets: jax.Array,
                            mask: jax.Array,
                            groups: jax.Array | None = None) -> jax.Array:
    """P(s_i > s_j) over sibling pairs with targets_i > targets_j, ties 1/2
    (a jittable training metric; 0 without pairs)."""
    gap = targets[..., :, None] - targets[..., None, :]
    pairs = (gap > 0) * same_group(mask, groups)
    margin = scores[..., :, None] - scores[..., None, :]
    wins = (margin > 0) + 0.5 * (margin == 0)
    return (wins * pairs).sum() / jnp.maximum(pairs.sum(), 1.0)


def sibling_loss(pointwise: str | None = "bce", ranking: str | None =
                 "listwise", *, ranking_weight: float = 1.0
                 ) -> Callable[[Critic, dict], tuple]:
    """`loss_fn(critic, batch)` for the trainer over `sibling_arrays` rows.

    loss = pointwise(scores, targets) + ranking_weight * ranking(scores,
    targets), each over the masked-in candidates; either part may be None.
    'bce' reads the score as a logit (a PRM or a probability-valued QVM),
    'mse' as a value.

    Returns:
      The loss function; its metrics are the two parts and the batch's
      sibling pairwise accuracy.
    """
    if pointwise is None and ranking is None:
        raise ValueError("give a pointwise loss, a ranking loss or both")
    if pointwise not in POINTWISE_LOSSES + (None,):
        raise ValueError(f"pointwise={pointwise!r}; use one of "
                         f"{POINTWISE_LOSSES} or None")
    if ranking not in RANKING_LOSSES + (None,):
        raise ValueError(f"ranking={ranking!r}; use one of {RANKING_LOSSES} "
                         "or None")
    rank_fn = {"pairwise": pairwise_ranking_loss,
               "listwise": listwise_ranking_loss}.get(ranking)

    def loss_fn(critic: Critic, batch: dict):
        scores = candidate_scores(critic, batch)
        targets, mask, groups = (batch["targets"], batch["mask"],
                                 batch["cand_group"])
        metrics = {"pairwise_accuracy": batch_pairwise_accuracy(
            scores, targets, mask, groups)}
        loss = jnp.float32(0.0)
        if pointwise is not None:
            part = (bce_loss if pointwise == "bce" else mse_loss)(
                scores, targets, mask)
            metrics[f"{pointwise}_loss"] = part
            loss = loss + part
        if rank_fn is not None:
            part = rank_fn(scores, targets, mask, groups)
            metrics[f"{ranking}_loss"] = part
            loss = loss + ranking_weight * part
        return loss, metrics

    return loss_fn


def pairwise_accuracy(scores: np.ndarray, labels: np.ndarray
                      ) -> tuple[float, int]:
    """(P(score of a right candidate > score of a wrong sibling), pairs).

    Over every state holding both a right (label 1) and a wrong (label 0)
    candidate; ties count 1/2, so 0.5 is chance. Host-side, float64.

    Args:
      scores: [..., K] float (any value where the label is NaN).
      labels: [..., K] float: 1 right, 0 wrong, NaN not a candidate.

    Returns:
      (accuracy, number of pairs); accuracy is NaN without pairs.
    """
    scores = np.asarray(scores, np.float64)
    right, wrong = labels == 1.0, labels == 0.0
    pairs = right[..., :, None] & wrong[..., None, :]
    with np.errstate(invalid="ignore"):   # -inf - -inf off the pairs.
        diff = scores[..., :, None] - scores[..., None, :]
    count = int(pairs.sum())
    if count == 0:
        return float("nan"), 0
    wins = np.where(pairs, (diff > 0) + 0.5 * (diff == 0), 0.0).sum()
    return float(wins / count), count
