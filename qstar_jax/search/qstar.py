"""Q*: A* over reasoning steps with a language-model policy and critics.

The language-model side of `astar_search`: expanding a node rebuilds its
token state from the tree, asks the policy for its K most likely distinct
next steps (`propose_steps`, one prefill per state and M samples from the
shared cache), and scores the K children with each critic in one pass that
encodes the state once and its K steps on top of it (`score_branches`):

* reward r(child) = PRM score at the last token of the child's step,
* q_value = Q(parent, a) = QVM score at the last token of the step,

so g aggregates PRM scores along the path and h is the QVM's estimate. In
'lookahead' mode, h(child) = max over the child's own top-K steps of
Q(child, a'): the policy and QVM run once more on all B*K children.

Example:
  >>> models = QStarModels(policy=policy, prm=prm, qvm=qvm)
  >>> result = jax.jit(qstar_search, static_argnames="config")(
  ...     models, prompt_tokens, prompt_lengths, keys, stop, config=config)
  >>> result.best  # [B] node of the best trajectory (-1 if none)
"""

from __future__ import annotations

import dataclasses
from typing import NamedTuple

import jax
import jax.numpy as jnp

from qstar_jax.models.critic import Critic, score_branches
from qstar_jax.models.decoder import Decoder
from qstar_jax.sampling.decode import StopRule
from qstar_jax.sampling.proposer import ProposerConfig, propose_steps
from qstar_jax.search.astar import AStarConfig, SearchResult, astar_search
from qstar_jax.search.contracts import check_prompts
from qstar_jax.search.interfaces import Expansion, Lookahead
from qstar_jax.search.step_limits import check_truncated_steps, classify_steps
from qstar_jax.search.tool_check import StepCheck, checked_steps
from qstar_jax.search.tree import Tree, init_tree, state_tokens


class QStarModels(NamedTuple):
    """The networks of Q* (a pytree: pass it to `jax.jit` as an argument).

    Attributes:
      policy: proposes steps.
      prm: process reward model (step correctness).
      qvm: Q-value model.
    """

    policy: Decoder
    prm: Critic
    qvm: Critic


@dataclasses.dataclass(frozen=True, kw_only=True)
class QStarConfig:
    """Static settings of Q*.

    Attributes:
      search: the A* settings (nodes, budget, lambda, aggregation, mode).
      proposer: K, M, step-token limit and sampling of the policy.
      state_width: P, tokens of the longest state (prompt plus steps);
        prompts wider than P are an error, and a child whose state would
        exceed P is not created (counted in `stats.overflow`).
      truncated_steps: what a step cut at `proposer.max_step_tokens`
        becomes: 'drop' (not created), 'continue' (a non-terminal child)
        or 'finish' (a finished solution); counted in `stats.truncated`
        either way (`search.step_limits`).
      tool_check: a host `StepCheck` on each proposed step (for example
        `calculator_step_check(tokenizer)`: the safe calculator's check of
        the step's written arithmetic), or None.
      tool_weight: subtracted from a refuted step's PRM reward and Q value
        (every Q of a lookahead too); 0 leaves the scores alone.
      kv_cache: False re-encodes each expanded node's whole state for the
        policy and each critic (any heuristic); True runs
        `qstar_cached.qstar_cached_search`: per-node key/value pools (the
        prompt encoded once, each node's step once), so an expansion's
        cost does not grow with depth; 'edge' heuristic only, the same
        pops and results, pools of `kv_pool.pool_bytes_per_node` bytes per
        node and model, checked against a budget.
    """

    search: AStarConfig
    proposer: ProposerConfig
    state_width: int
    truncated_steps: str = "drop"
    tool_check: StepCheck | None = None
    tool_weight: float = 0.0
    kv_cache: bool = False

    def __post_init__(self):
        check_truncated_steps("QStarConfig", self.truncated_steps)
        if self.kv_cache and self.search.heuristic != "edge":
            raise ValueError(
                "QStarConfig: kv_cache=True supports heuristic='edge' only, "
                f"got {self.search.heuristic!r} (use kv_cache=False)")
        if self.tool_weight and self.tool_check is None:
            raise ValueError("QStarConfig: tool_weight needs a tool_check")
        if self.state_width < 1:
            raise ValueError(f"QStarConfig.state_width must be >= 1, got "
                             f"{self.state_width}")


def _score(critic: Critic, tokens, lengths, proposals) -> jax.Array:
    """[B, K] critic scores at the end of each proposed step (an evidence
    critic also reads each step's policy log-probability)."""
    return score_branches(critic, tokens, lengths, proposals.tokens,
                          proposals.lengths,
                          branch_log_probs=proposals.log_probs)


def _tool_penalty(config: QStarConfig, proposals) -> jax.Array | float:
    """[B, K] `tool_weight` where the tool refutes a proposed step, else 0
    (a plain 0.0 without a tool)."""
    if config.tool_check is None or not config.tool_weight:
        return 0.0
    ok = checked_steps(config.tool_check, proposals.tokens,
                       proposals.lengths)
    return config.tool_weight * (~ok).astype(jnp.float32)


def expand_states(models: QStarModels, stop: StopRule, config: QStarConfig,
                  tokens: jax.Array, lengths: jax.Array,
                  keys: jax.Array) -> Expansion:
    """Top-K steps of B token states, with PRM rewards and QVM values.

    Args:
      models: policy, PRM, QVM; stop: token masks; config: static settings.
      tokens: [B, P] right-padded states; lengths: [B]; keys: [B].

    Returns:
      The `Expansion` ([B, K, T] steps). A child is terminal when its step
      ends the solution (an end or final-answer token in a step that was
      not cut); a step cut at the step-token limit is dropped, continued
      or finished as `config.truncated_steps` says, and a child whose
      state would exceed `config.state_width` is not created
      (`search.step_limits`; both flagged in the Expansion).
    """
    proposals = propose_steps(models.policy, tokens, lengths, keys, stop,
                              config=config.proposer)
    outcome = classify_steps(
        valid=proposals.valid, finished=proposals.finished,
        truncated=proposals.truncated,
        state_lengths=lengths[:, None] + proposals.lengths,
        state_width=config.state_width, mode=config.truncated_steps)
    penalty = _tool_penalty(config, proposals)
    return Expansion(
        step_tokens=proposals.tokens, step_lengths=proposals.lengths,
        log_probs=proposals.log_probs, valid=outcome.valid,
        terminal=outcome.terminal,
        reward=_score(models.prm, tokens, lengths, proposals) - penalty,
        q_value=_score(models.qvm, tokens, lengths, proposals) - penalty,
        generated_tokens=proposals.generated_tokens,
        truncated=outcome.truncated, overflow=outcome.overflow)


def expand_nodes(models: QStarModels, stop: StopRule, config: QStarConfig,
                 tree: Tree, node: jax.Array, keys: jax.Array) -> Expansion:
    """`ExpandFn` of Q*: `expand_states` on each row's node state.

    Args:
      models, stop, config: bound inside the jitted function, so the models
        stay traced arguments rather than constants.
      tree: the trees; node: [B]; keys: [B].
    """
    state = state_tokens(tree, node, config.state_width)
    return expand_states(models, stop, config, state.tokens, state.lengths,
                         keys)


def lookahead_values(models: QStarModels, stop: StopRule,
                     config: QStarConfig, tree: Tree, child: jax.Array,
                     keys: jax.Array) -> Lookahead:
    """`LookaheadFn` of Q*: h(child) = max_a' Q(child, a') over its top-K.

    A terminal child has no next step; its h is its edge value Q(parent, a),
    the QVM score at the end of its own step (so all h share one scale).

    Args:
      models, stop, config: bound inside the jitted function.
      tree: the trees (children already inserted); child: [B, K] slots (-1:
        none); keys: [B, K].
    """
    b, k = child.shape
    rows = jax.tree.map(lambda x: jnp.repeat(x, k, axis=0), tree)
    state = state_tokens(rows, jnp.maximum(child.reshape(b * k), 0),
                         config.state_width)
    proposals = propose_steps(models.policy, state.tokens, state.lengths,
                              keys.reshape(-1), stop, config=config.proposer)
    # One QVM pass: the K grandchildren's steps plus an empty branch, whose
    # score is the child's own last-token score (its edge value).
    steps = jnp.pad(proposals.tokens, ((0, 0), (0, 1), (0, 0)))
    step_len = jnp.pad(proposals.lengths, ((0, 0), (0, 1)))
    step_logp = jnp.pad(proposals.log_probs, ((0, 0), (0, 1)))
    scores = score_branches(models.qvm, state.tokens, state.lengths, steps,
                            step_len, branch_log_probs=step_logp)  # [B*K, K+1]
    q, edge = scores[:, :-1] - _tool_penalty(config, proposals), scores[:, -1]
    best = jnp.max(jnp.where(proposals.valid, q, -jnp.inf), axis=1)
    terminal = jnp.take_along_axis(tree.terminal, jnp.maximum(child, 0), 1)
    value = jnp.where(terminal.reshape(-1) | ~jnp.isfinite(best), edge, best)
    spent = jnp.where(child >= 0, proposals.generated_tokens.reshape(b, k), 0)
    return Lookahead(value=value.reshape(b, k),
                     generated_tokens=jnp.sum(spent, axis=1))


def qstar_search(models: QStarModels, prompt_tokens: jax.Array,
                 prompt_lengths: jax.Array, keys: jax.Array, stop: StopRule,
                 *, config: QStarConfig) -> SearchResult:
    """Q* on B problems at once (jit with `config` static).

    Args:
      models: policy, PRM and QVM.
      prompt_tokens: [B, P0] right-padded prompts; prompt_lengths: [B].
      keys: [B] one PRNG key per problem (a problem's search does not depend
        on the rest of the batch).
      stop: delimiter / end / final-answer token masks.
      config: static settings.

    Returns:
      The `SearchResult` (trees, trajectories, best, statistics).

    Raises:
      ValueError: prompts wider than `config.state_width`, or prompt
        lengths or keys that do not give one entry per problem.
      kv_pool.PoolTooLargeError: `config.kv_cache` and the pools exceed
        `qstar_cached.DEFAULT_POOL_BUDGET`.
    """
    if config.kv_cache:
        from qstar_jax.search.qstar_cached import qstar_cached_search
        return qstar_cached_search(models, prompt_tokens, prompt_lengths,
                                   keys, stop, config=config)
    check_prompts("qstar_search", prompt_tokens, prompt_lengths, keys,
                  config.state_width)
    tree = init_tree(prompt_tokens, prompt_lengths,
                     num_nodes=config.search.num_nodes,
                     max_step_tokens=config.proposer.max_step_tokens,
                     max_children=config.proposer.num_steps)

    def expand(t, node, k):
        return expand_nodes(models, stop, config, t, node, k)

    def lookahead(t, child, k):
        return lookahead_values(models, stop, config, t, child, k)

    return astar_search(expand, tree, keys, config=config.search,
                        lookahead_fn=lookahead)
