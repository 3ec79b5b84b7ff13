"""Deterministic synthetic environments for MCTS (no language model).

Seeded hash tables, each twice: jittable (`propose_fn`, `evaluate_fn` for
`run_mcts`) and plain Python (`propose`, `evaluate`, the
`reference_mcts.ReferenceEnv` protocol); the two agree bit for bit. Keys
are ignored: the tables are fixed. Scores are multiples of 1/levels
(dyadic), so sums of values agree exactly between float32 and float64 and
between summation orders.

* `ActionTableEnv` ('enumerated' expansion, mctx's setting): A actions per
  state; action a of state s leads to state hash(s, a) (the step is the
  single token holding the child's state id), with a transition reward;
  each state has a value, an outcome score and A prior logits. The same
  table drives `mctx.muzero_policy` through `mctx_root` and
  `mctx_recurrent_fn`.
* `synthetic_options.OptionTableEnv` ('widening', the language-model
  setting) builds on the `HashTable` and the Python records defined here.
"""

from __future__ import annotations

import dataclasses
import math
from typing import NamedTuple

import jax
import jax.numpy as jnp

from qstar_jax.search.mcts_interfaces import Evaluation, Options
from qstar_jax.search.synthetic import mix_jnp, mix_py, prob_threshold
from qstar_jax.search.tree import Tree, init_tree, node_values

M32 = 0xFFFFFFFF
STATE_MASK = 0x7FFFFFFF
(_CHILD, _REWARD, _PRIOR, _VALUE, _OUTCOME, _TERMINAL, _VALID,
 _NAN) = range(8)


class PyCandidate(NamedTuple):
    """One candidate option (the `ReferenceEnv` record).

    Attributes:
      state: the child's state id.
      tokens: the step's tokens.
      prior_logit, valid, terminal, reward: as in `Options`.
    """

    state: int
    tokens: tuple[int, ...]
    prior_logit: float
    valid: bool
    terminal: bool
    reward: float


class PyProposal(NamedTuple):
    """The R candidates of one expansion and the tokens spent on them."""

    candidates: list[PyCandidate]
    generated_tokens: int


class PyEvaluation(NamedTuple):
    """A node's evaluation (the `ReferenceEnv` record)."""

    value: float
    outcome: float
    prior_logits: tuple[float, ...] | None
    generated_tokens: int


@dataclasses.dataclass(frozen=True, kw_only=True)
class HashTable:
    """Seeded 32-bit hashes of (salt, x, y), as Python ints and as uint32
    arrays, and the scores and coin flips drawn from them.

    Attributes:
      seed: selects the table.
      levels: scores are multiples of 1/levels in [-1, 1] (a power of 2).
    """

    seed: int = 0
    levels: int = 8

    def __post_init__(self):
        if self.levels < 1 or self.levels & (self.levels - 1):
            raise ValueError(
                f"levels must be a power of two, got {self.levels}")

    def base(self, salt: int) -> int:
        """The per-(seed, salt) offset."""
        return mix_py((self.seed * 0x9E3779B9 + salt * 0x85EBCA6B + 1) & M32)

    def hash_py(self, salt: int, x: int, y: int) -> int:
        """hash(salt, x, y), Python ints."""
        return mix_py((mix_py(self.base(salt) ^ (x & M32)) + y) & M32)

    def hash_jnp(self, salt: int, x: jax.Array, y) -> jax.Array:
        """`hash_py` on uint32 arrays (broadcasting x and y)."""
        x = jnp.asarray(x).astype(jnp.uint32)
        y = jnp.asarray(y).astype(jnp.uint32)
        return mix_jnp(mix_jnp(jnp.uint32(self.base(salt)) ^ x) + y)

    def score_py(self, salt: int, x: int, y: int) -> float:
        """A multiple of 1/levels in [-1, 1]."""
        lv = self.levels
        return (self.hash_py(salt, x, y) % (2 * lv + 1) - lv) / lv

    def score_jnp(self, salt: int, x, y) -> jax.Array:
        lv = self.levels
        h = self.hash_jnp(salt, x, y) % jnp.uint32(2 * lv + 1)
        return (h.astype(jnp.int32) - lv).astype(jnp.float32) / lv

    def chance_py(self, salt: int, x: int, y: int, prob: float) -> bool:
        """True with probability `prob` (16-bit resolution)."""
        return (self.hash_py(salt, x, y) & 0xFFFF) < prob_threshold(prob)

    def chance_jnp(self, salt: int, x, y, prob: float) -> jax.Array:
        h = self.hash_jnp(salt, x, y) & jnp.uint32(0xFFFF)
        return h < jnp.uint32(prob_threshold(prob))


@dataclasses.dataclass(frozen=True, kw_only=True)
class ActionTableEnv(HashTable):
    """A seeded table of A actions per state (see the module docstring).

    Attributes:
      num_actions: A (the tree's C).
      reward_scale: rewards are reward_scale * (a multiple of 1/levels in
        [-1, 1]); 0: no rewards (a power of two keeps them dyadic).
      terminal_prob: chance that a child state is terminal.
      invalid_prob: chance that an action's prior logit is -inf.
      fail_prob: chance that an expansion's option is invalid.
      nan_prob: chance that a value, an outcome, a reward or a prior logit
        is NaN.
    """

    num_actions: int = 4
    reward_scale: float = 0.0
    terminal_prob: float = 0.0
    invalid_prob: float = 0.0
    fail_prob: float = 0.0
    nan_prob: float = 0.0

    # -- Python side ------------------------------------------------------
    def evaluate(self, state: int, depth: int,
                 terminal: bool) -> PyEvaluation:
        """The value, outcome and priors of a state."""
        del depth, terminal
        nan = self.nan_prob
        value = self.score_py(_VALUE, state, 0)
        outcome = self.score_py(_OUTCOME, state, 0)
        if self.chance_py(_NAN, state, 1 << 20, nan):
            value = math.nan
        if self.chance_py(_NAN, state, 1 << 21, nan):
            outcome = math.nan
        priors = []
        for a in range(self.num_actions):
            logit = 2 * self.score_py(_PRIOR, state, a)
            if self.chance_py(_VALID, state, a, self.invalid_prob):
                logit = -math.inf
            if self.chance_py(_NAN, state, 4 * a + 3, nan):
                logit = math.nan
            priors.append(logit)
        return PyEvaluation(value=value, outcome=outcome,
                            prior_logits=tuple(priors), generated_tokens=0)

    def propose(self, state: int, depth: int, edge: int) -> PyProposal:
        """The single option of action `edge` of `state`."""
        del depth
        child = self.hash_py(_CHILD, state, edge) & STATE_MASK
        reward = self.reward_scale * self.score_py(_REWARD, state, edge)
        if self.chance_py(_NAN, state, 4 * edge, self.nan_prob):
            reward = math.nan
        return PyProposal([PyCandidate(
            state=child, tokens=(child,), prior_logit=0.0,
            valid=not self.chance_py(_VALID, child, 1 << 22, self.fail_prob),
            terminal=self.chance_py(_TERMINAL, child, 0, self.terminal_prob),
            reward=reward)], 1)

    # -- jittable side ----------------------------------------------------
    def table_priors(self, state: jax.Array) -> jax.Array:
        """[..., A] prior logits of states [...]."""
        s = state[..., None]
        a = jnp.arange(self.num_actions, dtype=jnp.uint32)
        logit = 2 * self.score_jnp(_PRIOR, s, a)
        logit = jnp.where(self.chance_jnp(_VALID, s, a, self.invalid_prob),
                          -jnp.inf, logit)
        return jnp.where(self.chance_jnp(_NAN, s, 4 * a + 3, self.nan_prob),
                         jnp.nan, logit)

    def table_value(self, state: jax.Array) -> tuple[jax.Array, jax.Array]:
        """(value, outcome) of states [...]."""
        nan = self.nan_prob
        value = jnp.where(self.chance_jnp(_NAN, state, 1 << 20, nan),
                          jnp.nan, self.score_jnp(_VALUE, state, 0))
        outcome = jnp.where(self.chance_jnp(_NAN, state, 1 << 21, nan),
                            jnp.nan, self.score_jnp(_OUTCOME, state, 0))
        return value, outcome

    def table_step(self, state: jax.Array, action: jax.Array) -> dict:
        """child, reward, valid, terminal of actions [...] of states [...]."""
        child = (self.hash_jnp(_CHILD, state, action)
                 & jnp.uint32(STATE_MASK)).astype(jnp.int32)
        reward = self.reward_scale * self.score_jnp(_REWARD, state, action)
        reward = jnp.where(self.chance_jnp(
            _NAN, state, 4 * action.astype(jnp.uint32), self.nan_prob),
            jnp.nan, reward)
        return dict(
            child=child, reward=reward,
            valid=~self.chance_jnp(_VALID, child, 1 << 22, self.fail_prob),
            terminal=self.chance_jnp(_TERMINAL, child, 0,
                                     self.terminal_prob))

    @staticmethod
    def node_state(tree: Tree, nodes: jax.Array) -> jax.Array:
        """State ids [B, K] of slots (the root's is the prompt's token)."""
        step = node_values(tree.step_tokens[..., 0], nodes)
        return jnp.where(nodes == Tree.ROOT, tree.prompt_tokens[:, :1], step)

    def propose_fn(self, tree: Tree, parents: jax.Array, edges: jax.Array,
                   keys: jax.Array) -> Options:
        """The jittable `ProposeFn` (R = 1)."""
        del keys
        t = self.table_step(self.node_state(tree, parents), edges)
        ones = jnp.ones(parents.shape + (1,), jnp.int32)
        return Options(
            step_tokens=t["child"][..., None, None],
            step_lengths=ones, prior_logits=jnp.zeros(ones.shape),
            valid=t["valid"][..., None], terminal=t["terminal"][..., None],
            reward=t["reward"][..., None],
            generated_tokens=jnp.ones(parents.shape, jnp.int32))

    def evaluate_fn(self, tree: Tree, nodes: jax.Array,
                    keys: jax.Array) -> Evaluation:
        """The jittable `EvaluateFn`."""
        del keys
        state = self.node_state(tree, nodes)
        value, outcome = self.table_value(state)
        return Evaluation(value=value, outcome=outcome,
                          prior_logits=self.table_priors(state),
                          generated_tokens=jnp.zeros(nodes.shape, jnp.int32))

    def init_tree(self, root_states, *, num_nodes: int) -> Tree:
        """Fresh trees whose roots are the given states."""
        roots = jnp.asarray(root_states, jnp.int32).reshape(-1, 1)
        return init_tree(roots, jnp.ones((roots.shape[0],), jnp.int32),
                         num_nodes=num_nodes, max_step_tokens=1,
                         max_children=self.num_actions)

    # -- mctx ---------------------------------------------------------------
    def mctx_root(self, root_states):
        """`mctx.RootFnOutput` of the same table (mctx imported here)."""
        import mctx
        state = jnp.asarray(root_states, jnp.int32)
        value, _ = self.table_value(state)
        return mctx.RootFnOutput(prior_logits=self.table_priors(state),
                                 value=value, embedding=state)

    def mctx_recurrent_fn(self, discount: float = 1.0):
        """An mctx `recurrent_fn` of the same table (states as
        embeddings; mctx imported here)."""
        import mctx

        def recurrent_fn(params, key, action, state):
            del params, key
            t = self.table_step(state, action)
            value, _ = self.table_value(t["child"])
            return mctx.RecurrentFnOutput(
                reward=t["reward"], discount=jnp.full(state.shape, discount),
                prior_logits=self.table_priors(t["child"]),
                value=value), t["child"]
        return recurrent_fn
