"""Step-level search methods for `solve`: beam search, Q* and eta-MCTS.

Each runs its jitted search on the batch (`beam_search`, `qstar_search`,
`mcts_search`, prompts padded to the state width) and reads each problem's
answer on the host:

* beam: the best beam (finished or not; none when every beam died);
* Q*: the found trajectory with the largest f (none when no terminal node
  was popped: BUDGET, EXHAUSTED or FULL without a solution);
* eta-MCTS: the node chosen by `MCTSSolveConfig.answer`.

What each search counted (status, expansions, cut steps, overflowing
states, ...) goes into the record's details.
"""

from __future__ import annotations

import dataclasses

import jax
import numpy as np

from qstar_jax.search.alphallm import (AlphaLLMConfig, AlphaLLMModels,
                                       mcts_search)
from qstar_jax.search.astar import STATUS_NAMES as ASTAR_STATUS
from qstar_jax.search.beam import BeamConfig, beam_search
from qstar_jax.search.mcts_answers import terminal_leaves, weighted_vote
from qstar_jax.search.mcts_types import STATUS_NAMES as MCTS_STATUS
from qstar_jax.search.mcts_types import MCTSConfig
from qstar_jax.search.qstar import QStarConfig, QStarModels, qstar_search
from qstar_jax.search.tree import trajectory_steps
from qstar_jax.solver.records import Outcome, decode

MCTS_ANSWERS = ("best_outcome", "best_value", "most_visited",
                "weighted_vote")
_BEAM_WORST = -1e29          # Beam scores at or below: an empty beam.


@dataclasses.dataclass(frozen=True, kw_only=True)
class MCTSSolveConfig:
    """eta-MCTS through `solve`: the search and how an answer is chosen.

    Attributes:
      mcts: the search's settings (`AlphaLLMConfig`).
      answer: 'best_outcome' (the terminal node with the best ORM score,
        AlphaLLM's reranking; the node score when there is no ORM),
        'best_value' (the terminal node with the best mean value),
        'most_visited' (the end of the most-visited path; unfinished when
        it is not terminal) or 'weighted_vote' (the answer with the largest
        total mean value over the terminal nodes; the record is its
        terminal node with the best mean value).
    """

    mcts: AlphaLLMConfig = AlphaLLMConfig(search=MCTSConfig())
    answer: str = "best_outcome"

    def __post_init__(self):
        if self.answer not in MCTS_ANSWERS:
            raise ValueError(f"MCTSSolveConfig.answer={self.answer!r}; use "
                             f"one of {MCTS_ANSWERS}")


_beam = jax.jit(beam_search, static_argnames="config")
_qstar = jax.jit(qstar_search, static_argnames="config")
_mcts = jax.jit(mcts_search, static_argnames="config")


def _qstar_models(models) -> QStarModels:
    """Q*'s and beam's model tuple (an unused critic repeats the other)."""
    prm = models.prm if models.prm is not None else models.qvm
    qvm = models.qvm if models.qvm is not None else models.prm
    return QStarModels(policy=models.policy, prm=prm, qvm=qvm)


def _ints(x) -> list[int]:
    return [int(v) for v in np.asarray(x).reshape(-1)]


def run_beam(models, task, tokens, lengths, keys, stop,
             config: BeamConfig) -> list[Outcome]:
    """`solve`'s batch runner of step-level beam search."""
    del task
    out = jax.device_get(_beam(_qstar_models(models), tokens, lengths, keys,
                               stop, config=config))
    outcomes = []
    for b in range(tokens.shape[0]):
        alive = float(out.scores[b, 0]) > _BEAM_WORST
        start, end = int(lengths[b]), int(out.lengths[b, 0])
        outcomes.append(Outcome(
            tokens=_ints(out.tokens[b, 0, start:end]) if alive else [],
            finished=alive and bool(out.finished[b, 0]),
            generated_tokens=int(out.generated_tokens[b]),
            model_calls=int(out.model_calls[b]),
            details={"score": float(out.scores[b, 0]) if alive else None,
                     "steps": int(out.steps[b, 0]),
                     "truncated": int(out.truncated[b]),
                     "overflow": int(out.overflow[b])}))
    return outcomes


def _path_tokens(tree, b: int, node: int) -> list[int]:
    return sum(trajectory_steps(tree, b, node), []) if node > 0 else []


def run_qstar(models, task, tokens, lengths, keys, stop,
              config: QStarConfig) -> list[Outcome]:
    """`solve`'s batch runner of Q*."""
    del task
    out = jax.device_get(_qstar(_qstar_models(models), tokens, lengths, keys,
                                stop, config=config))
    st = out.stats
    outcomes = []
    for b in range(tokens.shape[0]):
        best = int(out.best[b])
        outcomes.append(Outcome(
            tokens=_path_tokens(out.tree, b, best), finished=best >= 0,
            generated_tokens=int(st.generated_tokens[b]),
            model_calls=int(st.model_calls[b]),
            details={"status": ASTAR_STATUS[int(st.status[b])],
                     "expansions": int(st.expansions[b]),
                     "solutions_found": int(out.num_found[b]),
                     "max_depth": int(st.max_depth[b]),
                     "nan_count": int(st.nan_count[b]),
                     "dropped": int(st.dropped[b]),
                     "recycled": int(st.recycled[b]),
                     "truncated": int(st.truncated[b]),
                     "overflow": int(st.overflow[b])}))
    return outcomes


def _mcts_node(result, b: int, rule: str, tokenizer, task) -> int:
    """The node `rule` picks in row b (-1: none)."""
    if rule != "weighted_vote":
        return int(getattr(result, rule)[b])
    leaves = terminal_leaves(result, b)
    answers = [task.extract_answer(decode(
        tokenizer, _path_tokens(result.tree, b, leaf.node)))
        for leaf in leaves]
    winner = weighted_vote(answers, [leaf.mean_value for leaf in leaves])
    if winner is None:
        return int(result.best_value[b])
    voted = [leaf for leaf, a in zip(leaves, answers) if a == winner]
    return max(voted, key=lambda leaf: leaf.mean_value).node


def run_mcts(models, task, tokens, lengths, keys, stop,
             config: MCTSSolveConfig) -> list[Outcome]:
    """`solve`'s batch runner of eta-MCTS."""
    mcts_models = AlphaLLMModels(
        policy=models.policy, fast_policy=models.fast_policy,
        value=models.value, prm=models.prm, orm=models.orm)
    out = jax.device_get(_mcts(mcts_models, tokens, lengths, keys, stop,
                               config=config.mcts))
    st = out.stats
    names = ("simulations", "expansions", "revisits", "collisions",
             "failed", "dropped", "merge_rejected", "merge_fallbacks",
             "nan_count", "max_depth", "truncated", "overflow")
    outcomes = []
    for b in range(tokens.shape[0]):
        node = _mcts_node(out, b, config.answer, models.tokenizer, task)
        details = {"status": MCTS_STATUS[int(st.status[b])], "node": node,
                   **{name: int(getattr(st, name)[b]) for name in names}}
        outcomes.append(Outcome(
            tokens=_path_tokens(out.tree, b, node),
            finished=node >= 0 and bool(out.tree.terminal[b, node]),
            generated_tokens=int(st.generated_tokens[b]),
            model_calls=int(st.model_calls[b]), details=details))
    return outcomes

