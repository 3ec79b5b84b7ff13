"""AlphaLLM's eta-MCTS over options with a language-model policy and critics.

The language-model side of `run_mcts` ('widening' expansion):

* Options: a candidate option is one policy sample from the node's state
  (the prompt plus the steps on its path), ended by the `StopRule`'s
  delimiter tokens (the termination beta; newline by default, see
  `sampling.states.stop_rule`), an end token or T tokens. One prefill per
  parent and R samples from the shared cache (`sample_continuations`), in
  sampling order, so state merge taking the first acceptable candidate is
  the paper's resampling loop. A candidate is terminal when it ends the
  solution (an end or final-answer token in an option that was not cut); a
  candidate cut at T tokens is invalid, continued or finished as
  `truncated_steps` says, and one whose state would exceed `state_width`
  is invalid (`search.step_limits`; both counted in the statistics). Its
  prior logit is its summed policy log-probability, or per token ('mean',
  TS-LLM's choice).
* Evaluation of a node s (the paper's node score):
    value(s) = b_v * V(s) + b_prm * PRM(s) + b_orm * mean_j ORM(rollout_j)
               - b_tool * [the step into s makes a wrong calculation]
  V and PRM are read at the state's last token; the n fast rollouts
  continue s to the end with the fast policy (`fast_policy`, or the policy
  when absent) and the ORM is read at each rollout's last token. A terminal
  node is scored by the ORM on itself instead of rollouts. An absent critic
  (None) or a weight of 0 drops its term. outcome(s) = ORM(s) (the value
  when there is no ORM) is what answer reranking reads.
* Tool check (optional, `tool_check`): a host function called through
  `jax.pure_callback` on the new nodes' step tokens, for example
  `calculator_step_check(tokenizer)` (the safe calculator's
  `claims.check_step`); the search stays one jitted loop, the check runs on
  the host for the B x S new steps of each iteration.

Example:
  >>> models = AlphaLLMModels(policy=policy, fast_policy=None, value=value,
  ...                         prm=prm, orm=orm)
  >>> result = jax.jit(mcts_search, static_argnames="config")(
  ...     models, prompt_tokens, prompt_lengths, keys, stop, config=config)
  >>> result.best_outcome  # [B] terminal node with the best ORM score
"""

from __future__ import annotations

import dataclasses
from typing import NamedTuple

import jax
import jax.numpy as jnp

from qstar_jax.models.critic import Critic, last_token_scores
from qstar_jax.models.decoder import Decoder
from qstar_jax.sampling.decode import StopRule, prefill, sample_continuations
from qstar_jax.sampling.logits import SamplingConfig
from qstar_jax.sampling.proposer import rollout
from qstar_jax.sampling.states import append_tokens
from qstar_jax.search.contracts import check_prompts
from qstar_jax.search.mcts import run_mcts
from qstar_jax.search.mcts_interfaces import Evaluation, Options
from qstar_jax.search.mcts_types import MCTSConfig, MCTSResult
from qstar_jax.search.step_limits import check_truncated_steps, classify_steps
from qstar_jax.search.tool_check import (StepCheck, calculator_step_check,
                                         checked_steps)
from qstar_jax.search.tree import (Tree, init_tree, node_values, repeat_rows,
                                   state_tokens)

PRIORS = ("sum", "mean")



class AlphaLLMModels(NamedTuple):
    """The networks of eta-MCTS (a pytree: pass it to `jax.jit` as an
    argument). Critics may be None (their term is dropped).

    Attributes:
      policy: proposes options.
      fast_policy: the fast rollout policy (None: the policy).
      value: value critic V(s), read at a state's last token.
      prm: process reward model, read at the last token of a step.
      orm: outcome reward model, read at a solution's last token.
    """

    policy: Decoder
    fast_policy: Decoder | None = None
    value: Critic | None = None
    prm: Critic | None = None
    orm: Critic | None = None


@dataclasses.dataclass(frozen=True, kw_only=True)
class AlphaLLMConfig:
    """Static settings of eta-MCTS on a language model.

    Attributes:
      search: the engine's settings (`MCTSConfig`; expansion 'widening').
      num_candidates: R options sampled per expansion (state merge keeps
        one; the paper's code resamples up to 5 times).
      max_step_tokens: T, the longest option in tokens.
      sampling: how the policy samples options (the paper's code:
        temperature 0.8).
      prior: 'sum' (the option's log-probability) or 'mean' (per token).
      state_width: P, tokens of the longest state (prompt plus options);
        prompts wider than P are an error, and a candidate whose state
        would exceed P is invalid (counted in `stats.overflow`).
      truncated_steps: what a candidate cut at `max_step_tokens` becomes:
        'drop' (invalid), 'continue' (a non-terminal option) or 'finish'
        (a finished solution); counted in `stats.truncated` either way
        (`search.step_limits`).
      value_weight, prm_weight, orm_weight: b_v, b_prm, b_orm (1.0 each in
        the paper).
      num_rollouts: n fast rollouts per node (4 in the paper).
      rollout_tokens: the longest fast rollout in tokens.
      rollout_sampling: how the fast policy samples (temperature 1.0 in
        the paper's code).
      tool_weight: b_tool, the penalty of a step whose calculation is
        wrong (needs `tool_check`).
      tool_check: the host-side step checker (`StepCheck`), or None.
      pad_id: filler after steps and states.
    """

    search: MCTSConfig
    num_candidates: int = 4
    max_step_tokens: int = 48
    sampling: SamplingConfig = SamplingConfig(temperature=0.8)
    prior: str = "sum"
    state_width: int = 512
    value_weight: float = 1.0
    prm_weight: float = 1.0
    orm_weight: float = 1.0
    num_rollouts: int = 4
    rollout_tokens: int = 128
    rollout_sampling: SamplingConfig = SamplingConfig(temperature=1.0)
    tool_weight: float = 0.0
    tool_check: StepCheck | None = None
    pad_id: int = 0
    truncated_steps: str = "drop"

    def __post_init__(self):
        check_truncated_steps("AlphaLLMConfig", self.truncated_steps)
        if self.search.expansion != "widening":
            raise ValueError("AlphaLLMConfig: the language-model search "
                             "samples options; use expansion='widening'")
        if self.prior not in PRIORS:
            raise ValueError(f"AlphaLLMConfig.prior={self.prior!r}; use one "
                             f"of {PRIORS}")
        if min(self.num_candidates, self.max_step_tokens, self.num_rollouts,
               self.rollout_tokens) < 1:
            raise ValueError("AlphaLLMConfig: num_candidates, "
                             "max_step_tokens, num_rollouts and "
                             "rollout_tokens must be >= 1")
        if self.tool_weight and self.tool_check is None:
            raise ValueError("AlphaLLMConfig: tool_weight needs a tool_check")


def _states(tree: Tree, nodes: jax.Array, width: int, pad_id: int):
    """Token states [B * K, P] of [B, K] nodes."""
    b, k = nodes.shape
    return state_tokens(repeat_rows(tree, k), nodes.reshape(b * k), width,
                        pad_id=pad_id)


def propose_options(models: AlphaLLMModels, stop: StopRule,
                    config: AlphaLLMConfig, tree: Tree, parents: jax.Array,
                    edges: jax.Array, keys: jax.Array) -> Options:
    """`ProposeFn` of eta-MCTS: R sampled options of each parent's state.

    Args:
      models, stop, config: bound inside the jitted search.
      tree: the trees; parents, edges, keys: [B, K] (edges unused).
    """
    del edges
    b, k = parents.shape
    r, t = config.num_candidates, config.max_step_tokens
    state = _states(tree, parents, config.state_width, config.pad_id)
    cache, logits = prefill(models.policy, state.tokens, state.lengths)
    conts = sample_continuations(
        models.policy, cache, logits, keys.reshape(b * k), num_samples=r,
        max_tokens=t, stop=stop, sampling=config.sampling,
        pad_id=config.pad_id)
    lengths = conts.lengths
    prior = conts.log_probs
    if config.prior == "mean":
        prior = prior / jnp.maximum(lengths, 1).astype(jnp.float32)
    outcome = classify_steps(
        valid=lengths > 0, finished=conts.ended_by_end | conts.contains_final,
        truncated=conts.truncated,
        state_lengths=state.lengths[:, None] + lengths,
        state_width=config.state_width, mode=config.truncated_steps)

    def shape(x):
        return x.reshape((b, k) + x.shape[1:])

    return Options(
        step_tokens=shape(conts.tokens), step_lengths=shape(lengths),
        prior_logits=shape(prior), valid=shape(outcome.valid),
        terminal=shape(outcome.terminal),
        reward=jnp.zeros((b, k, r), jnp.float32),
        generated_tokens=shape(jnp.sum(lengths, axis=1)),
        truncated=shape(outcome.truncated),
        overflow=shape(outcome.overflow))


def _score(critic: Critic | None, weight: float, tokens, lengths):
    """weight * critic score at the last token, or None when unused."""
    if critic is None or not weight:
        return None
    return weight * last_token_scores(critic, tokens, lengths)


def _tool_ok(config: AlphaLLMConfig, tree: Tree,
             nodes: jax.Array) -> jax.Array:
    """[B * K] bool the step into each node passes `config.tool_check`."""
    tokens = node_values(tree.step_tokens, nodes).reshape(
        -1, tree.max_step_tokens)
    lengths = node_values(tree.step_lengths, nodes).reshape(-1)
    return checked_steps(config.tool_check, tokens, lengths)


def evaluate_nodes(models: AlphaLLMModels, stop: StopRule,
                   config: AlphaLLMConfig, tree: Tree, nodes: jax.Array,
                   keys: jax.Array) -> Evaluation:
    """`EvaluateFn` of eta-MCTS: the node score of each node (module
    docstring), its outcome score and the rollout tokens spent.

    Args:
      models, stop, config: bound inside the jitted search.
      tree: the trees (nodes already inserted); nodes, keys: [B, K].
    """
    b, k = nodes.shape
    n = config.num_rollouts
    state = _states(tree, nodes, config.state_width, config.pad_id)
    tokens, lengths = state.tokens, state.lengths
    terminal = node_values(tree.terminal, nodes).reshape(-1)
    total = jnp.zeros((b * k,), jnp.float32)
    for term in (_score(models.value, config.value_weight, tokens, lengths),
                 _score(models.prm, config.prm_weight, tokens, lengths)):
        if term is not None:
            total = total + term
    spent = jnp.zeros((b * k,), jnp.int32)
    outcome = None
    if models.orm is not None:
        own = last_token_scores(models.orm, tokens, lengths)
        outcome = own
        if config.orm_weight:
            fast = models.fast_policy if models.fast_policy is not None \
                else models.policy
            conts = rollout(fast, tokens, lengths, keys.reshape(b * k), stop,
                            max_tokens=config.rollout_tokens, num_samples=n,
                            sampling=config.rollout_sampling,
                            pad_id=config.pad_id)
            full, full_len = append_tokens(
                jnp.broadcast_to(tokens[:, None], (b * k, n, tokens.shape[1])),
                jnp.broadcast_to(lengths[:, None], (b * k, n)), conts.tokens,
                conts.lengths, config.pad_id)
            scores = last_token_scores(
                models.orm, full.reshape(b * k * n, -1),
                full_len.reshape(-1)).reshape(b * k, n)
            orm = jnp.where(terminal, own, jnp.mean(scores, axis=1))
            total = total + config.orm_weight * orm
            spent = jnp.where(terminal, 0, jnp.sum(conts.lengths, axis=1))
    if config.tool_check is not None and config.tool_weight:
        ok = _tool_ok(config, tree, nodes)
        total = total - config.tool_weight * (~ok).astype(jnp.float32)
    if outcome is None:
        outcome = total
    return Evaluation(value=total.reshape(b, k),
                      outcome=outcome.reshape(b, k), prior_logits=None,
                      generated_tokens=spent.reshape(b, k))


def init_search_tree(prompt_tokens: jax.Array, prompt_lengths: jax.Array,
                     config: AlphaLLMConfig) -> Tree:
    """A fresh tree for `mcts_search`'s settings."""
    return init_tree(prompt_tokens, prompt_lengths,
                     num_nodes=config.search.num_nodes,
                     max_step_tokens=config.max_step_tokens,
                     max_children=config.search.max_width)


def mcts_search(models: AlphaLLMModels, prompt_tokens: jax.Array,
                prompt_lengths: jax.Array, keys: jax.Array, stop: StopRule,
                *, config: AlphaLLMConfig) -> MCTSResult:
    """eta-MCTS on B problems at once (jit with `config` static).

    Args:
      models: policy, fast policy and critics (`AlphaLLMModels`).
      prompt_tokens: [B, P0] right-padded prompts (P0 <= state_width);
        prompt_lengths: [B].
      keys: [B] one PRNG key per problem (a problem's search does not
        depend on the rest of the batch).
      stop: delimiter (option termination) / end / final token masks.
      config: static settings.

    Returns:
      The `MCTSResult` (trees, answers, statistics); `trajectory_steps`
      rebuilds a node's options.
    """
    check_prompts("mcts_search", prompt_tokens, prompt_lengths, keys,
                  config.state_width)
    tree = init_search_tree(prompt_tokens, prompt_lengths, config)

    def propose(t, parents, edges, k):
        return propose_options(models, stop, config, t, parents, edges, k)

    def evaluate(t, nodes, k):
        return evaluate_nodes(models, stop, config, t, nodes, k)

    return run_mcts(propose, evaluate, tree, keys, config=config.search)
