"""Step-level beam search, scored by the PRM (aggregated) or the QVM.

Every iteration proposes K distinct next steps for each of the W beams of
every problem (one batched policy call on B*W states), scores the B*W*K
children in one critic pass, and keeps the W best of the children and the
already finished beams. Finished beams compete with new children on the same
score, so the search ends when the W best candidates are all finished or
after `max_steps` iterations.

Scores: with the PRM, a beam's score is the aggregation (min / max / sum /
last) of its steps' PRM scores, as g in Q*; with the QVM it is Q(s, a) of its
last step.

Limits (`search.step_limits`, as in Q*): a child is finished when its step
holds an end or final-answer token and was not cut; a step cut at the
step-token limit is dropped, continued or finished as `truncated_steps`
says, and a child whose state would exceed `state_width` is dropped; both
are counted per problem (`BeamResult.truncated`, `overflow`).
"""

from __future__ import annotations

import dataclasses
from typing import NamedTuple

import jax
import jax.numpy as jnp

from qstar_jax.models.critic import last_token_scores
from qstar_jax.sampling.decode import StopRule
from qstar_jax.sampling.proposer import ProposerConfig, propose_steps
from qstar_jax.sampling.states import append_tokens
from qstar_jax.search.contracts import check_prompts
from qstar_jax.search.qstar import QStarModels
from qstar_jax.search.step_limits import check_truncated_steps, classify_steps

_WORST = -1e30


@dataclasses.dataclass(frozen=True, kw_only=True)
class BeamConfig:
    """Static settings of step-level beam search.

    Attributes:
      width: W beams per problem.
      max_steps: iterations (reasoning steps) at most.
      proposer: K, M, step-token limit and sampling.
      state_width: P, tokens of the longest state.
      score: 'prm' or 'qvm'.
      aggregation: for 'prm': 'min', 'max', 'sum' or 'last'.
      truncated_steps: what a step cut at `proposer.max_step_tokens`
        becomes: 'drop', 'continue' or 'finish' (`search.step_limits`).
    """

    width: int = 4
    max_steps: int = 8
    proposer: ProposerConfig = ProposerConfig()
    state_width: int = 256
    score: str = "prm"
    aggregation: str = "min"
    truncated_steps: str = "drop"

    def __post_init__(self):
        check_truncated_steps("BeamConfig", self.truncated_steps)
        if self.score not in ("prm", "qvm"):
            raise ValueError(f"score={self.score!r}; use 'prm' or 'qvm'")
        if self.aggregation not in ("min", "max", "sum", "last"):
            raise ValueError(f"aggregation={self.aggregation!r}")
        if self.width < 1 or self.max_steps < 1:
            raise ValueError("width and max_steps must be >= 1")


class BeamResult(NamedTuple):
    """Final beams, best first.

    Attributes:
      tokens: [B, W, P] states (prompt plus steps).
      lengths: [B, W].
      scores: [B, W] beam scores (-1e30 for empty beams).
      finished: [B, W] the beam's solution is finished (its last step
        holds an end or final-answer token and was not cut, or was cut
        with `truncated_steps='finish'`).
      steps: [B, W] reasoning steps in the beam.
      generated_tokens: [B] tokens sampled for the problem.
      model_calls: [B] int32 iterations in which the problem had a live
        beam (each one batched policy call and one critic call).
      truncated: [B] int32 proposed steps of live beams cut at the
        step-token limit.
      overflow: [B] int32 children dropped because their state would
        exceed `state_width`.
    """

    tokens: jax.Array
    lengths: jax.Array
    scores: jax.Array
    finished: jax.Array
    steps: jax.Array
    generated_tokens: jax.Array
    model_calls: jax.Array
    truncated: jax.Array
    overflow: jax.Array


def _combine(how: str, parent: jax.Array, reward: jax.Array,
             first: jax.Array) -> jax.Array:
    if how == "min":
        combined = jnp.minimum(parent, reward)
    elif how == "max":
        combined = jnp.maximum(parent, reward)
    elif how == "sum":
        combined = parent + reward
    else:
        combined = reward
    return jnp.where(first, reward, combined)


def beam_search(models: QStarModels, prompt_tokens: jax.Array,
                prompt_lengths: jax.Array, keys: jax.Array, stop: StopRule,
                *, config: BeamConfig) -> BeamResult:
    """Beam search over reasoning steps for B problems (jit, config static).

    Args:
      models: policy, PRM and QVM (only the critic named by `config.score`
        is used).
      prompt_tokens: [B, P0] (P0 <= P); prompt_lengths: [B].
      keys: [B] one PRNG key per problem.
      stop: delimiter / end / final token masks.
      config: static settings.
    """
    check_prompts("beam_search", prompt_tokens, prompt_lengths, keys,
                  config.state_width)
    b, p0 = prompt_tokens.shape
    w, p = config.width, config.state_width
    k, t = config.proposer.num_steps, config.proposer.max_step_tokens
    tokens = jnp.zeros((b, w, p), jnp.int32).at[:, :, :p0].set(
        prompt_tokens[:, None])
    init = BeamResult(
        tokens=tokens, lengths=jnp.broadcast_to(prompt_lengths[:, None],
                                                (b, w)),
        # Only beam 0 is live at first, so the W beams do not start equal.
        scores=jnp.full((b, w), _WORST).at[:, 0].set(0.0),
        finished=jnp.zeros((b, w), bool), steps=jnp.zeros((b, w), jnp.int32),
        generated_tokens=jnp.zeros((b,), jnp.int32),
        model_calls=jnp.zeros((b,), jnp.int32),
        truncated=jnp.zeros((b,), jnp.int32),
        overflow=jnp.zeros((b,), jnp.int32))
    critic = models.prm if config.score == "prm" else models.qvm

    def step(i, beams: BeamResult) -> BeamResult:
        live = (beams.scores > _WORST) & ~beams.finished          # [B, W]
        step_keys = jax.vmap(lambda key: jax.random.split(
            jax.random.fold_in(key, i), w))(keys).reshape(b * w)
        props = propose_steps(
            models.policy, beams.tokens.reshape(b * w, p),
            beams.lengths.reshape(b * w), step_keys, stop,
            config=config.proposer)
        child, child_len = append_tokens(
            jnp.broadcast_to(beams.tokens.reshape(b * w, 1, p),
                             (b * w, k, p)),
            jnp.broadcast_to(beams.lengths.reshape(b * w, 1), (b * w, k)),
            props.tokens, props.lengths)                         # [BW,K,P+T]
        score = last_token_scores(
            critic, child.reshape(b * w * k, p + t),
            child_len.reshape(-1)).reshape(b, w, k)
        if config.score == "prm":
            score = _combine(config.aggregation, beams.scores[..., None],
                             score, (beams.steps == 0)[..., None])
        outcome = jax.tree.map(lambda x: x.reshape(b, w, k), classify_steps(
            valid=props.valid, finished=props.finished,
            truncated=props.truncated, state_lengths=child_len,
            state_width=p, mode=config.truncated_steps))
        ok = outcome.valid & live[..., None]
        score = jnp.where(ok & jnp.isfinite(score), score, _WORST)

        def count(mask):
            return jnp.sum(mask & live[..., None], axis=(1, 2),
                           dtype=jnp.int32)

        # Candidates: W*K children, then the W beams themselves when done.
        cand_scores = jnp.concatenate([
            score.reshape(b, w * k),
            jnp.where(beams.finished, beams.scores, _WORST)], axis=1)
        cand_tokens = jnp.concatenate(
            [child[..., :p].reshape(b, w * k, p), beams.tokens], axis=1)
        cand_lengths = jnp.concatenate(
            [jnp.minimum(child_len, p).reshape(b, w * k), beams.lengths], 1)
        cand_finished = jnp.concatenate(
            [outcome.terminal.reshape(b, w * k), beams.finished], axis=1)
        cand_steps = jnp.concatenate(
            [jnp.repeat(beams.steps + 1, k, axis=1), beams.steps], axis=1)
        top_scores, idx = jax.lax.top_k(cand_scores, w)

        def take(x):
            return jnp.take_along_axis(
                x, idx.reshape(idx.shape + (1,) * (x.ndim - 2)), axis=1)

        spent = jnp.where(live, props.generated_tokens.reshape(b, w), 0)
        return BeamResult(
            tokens=take(cand_tokens), lengths=take(cand_lengths),
            scores=top_scores, finished=take(cand_finished),
            steps=take(cand_steps),
            generated_tokens=beams.generated_tokens + spent.sum(1),
            model_calls=beams.model_calls + jnp.any(live, axis=1),
            truncated=beams.truncated + count(outcome.truncated),
            overflow=beams.overflow + count(outcome.overflow))

    def running(state):
        i, beams = state
        live = (beams.scores > _WORST) & ~beams.finished
        return (i < config.max_steps) & jnp.any(live)

    _, beams = jax.lax.while_loop(
        running, lambda s: (s[0] + 1, step(s[0], s[1])), (jnp.int32(0), init))
    return beams
