"""A deterministic synthetic step environment with no language model.

States are 31-bit integers; a state's K actions lead to child states defined
by a seeded 32-bit integer hash of (state, action). The hash also gives each
child's process reward, Q(parent, a), policy log-probability, whether it is
terminal (always at `max_depth`), whether it is valid, and optionally NaN
rewards or Q-values. A child's step is the single token holding its state id
(T = 1); the root state is the prompt's single token.

Rewards and Q-values are multiples of 1/levels in [-1, 1] with `levels` a
power of two (dyadic rationals), so float32 (JAX) and float64 (Python) sums,
minima and lambda-weighted sums agree exactly when lambda is dyadic too, and
ties are reproduced identically.

The same table exists twice: jittable (`expand_fn`, `lookahead_fn`, uint32
arithmetic on device) and plain Python (`expand`, `lookahead`, int arithmetic,
the `ReferenceEnv` protocol of `reference_astar`); the two agree bit for bit.

`TableEnv` is the hand-written counterpart: explicit [S, K] tables for
scripted examples (a policy whose greedy choice is wrong, a NaN reward).
"""

from __future__ import annotations

import dataclasses
import math
from typing import NamedTuple, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from qstar_jax.search.interfaces import Expansion, Lookahead
from qstar_jax.search.tree import Tree, init_tree, node_values

_M32 = 0xFFFFFFFF
_STATE_MASK = 0x7FFFFFFF
_SALT_CHILD, _SALT_REWARD, _SALT_Q, _SALT_LOGP = 0, 1, 2, 3
_SALT_TERMINAL, _SALT_VALID, _SALT_NAN_R, _SALT_NAN_Q = 4, 5, 6, 7
_PROB_ONE = 1 << 16
NO_ACTION_VALUE = -1.0
"""Lookahead value of a non-terminal state without valid actions."""


def mix_py(x: int) -> int:
    """A 32-bit avalanche mix (lowbias32), Python ints."""
    x ^= x >> 16
    x = (x * 0x7FEB352D) & _M32
    x ^= x >> 15
    x = (x * 0x846CA68B) & _M32
    return x ^ (x >> 16)


def mix_jnp(x: jax.Array) -> jax.Array:
    """The same mix on uint32 arrays (multiplication wraps mod 2**32)."""
    x = x ^ (x >> 16)
    x = x * jnp.uint32(0x7FEB352D)
    x = x ^ (x >> 15)
    x = x * jnp.uint32(0x846CA68B)
    return x ^ (x >> 16)


def prob_threshold(prob: float) -> int:
    """A probability as a 16-bit threshold in [0, 65536]."""
    return min(max(int(round(prob * _PROB_ONE)), 0), _PROB_ONE)


class PyChild(NamedTuple):
    """One child of the Python table (the `ReferenceEnv` child record).

    Attributes:
      state: the child's state id (also its single step token).
      tokens: the step's tokens, (state,).
      log_prob: policy log-probability of the step.
      valid: the child exists.
      terminal: the child's state is a complete solution.
      reward: process reward (may be NaN).
      q_value: Q(parent, a) (may be NaN).
    """

    state: int
    tokens: tuple[int, ...]
    log_prob: float
    valid: bool
    terminal: bool
    reward: float
    q_value: float


class PyExpansion(NamedTuple):
    """K children of a state (the `ReferenceEnv` expansion record).

    Attributes:
      children: the K `PyChild` records, in action order.
      generated_tokens: tokens "generated" to propose them.
    """

    children: list[PyChild]
    generated_tokens: int


@dataclasses.dataclass(frozen=True, kw_only=True)
class SyntheticEnv:
    """A seeded table of states, steps, rewards and Q-values.

    Attributes:
      seed: selects the table.
      branching: K, actions (candidate steps) per state.
      max_depth: every child at this depth is terminal.
      terminal_prob: chance that a shallower child is terminal.
      invalid_prob: chance that a child does not exist (exercises masks).
      nan_prob: chance that a child's reward (and, separately, its Q-value)
        is NaN.
      levels: scores are multiples of 1/levels (a power of two).
    """

    seed: int = 0
    branching: int = 3
    max_depth: int = 4
    terminal_prob: float = 0.2
    invalid_prob: float = 0.2
    nan_prob: float = 0.0
    levels: int = 8

    def __post_init__(self):
        if self.branching < 1 or self.max_depth < 1:
            raise ValueError("branching and max_depth must be >= 1")
        if self.levels < 1 or self.levels & (self.levels - 1):
            raise ValueError("levels must be a power of two")

    # -- the shared hash ---------------------------------------------------
    def _base(self, salt: int) -> int:
        """Per-(seed, salt) hash offset, a Python int."""
        return mix_py((self.seed * 0x9E3779B9 + salt * 0x85EBCA6B + 1)
                       & _M32)

    def _hash_py(self, state: int, action: int, salt: int) -> int:
        x = mix_py(self._base(salt) ^ state)
        return mix_py((x + action) & _M32)

    def _hash_jnp(self, state: jax.Array, action: jax.Array,
                  salt: int) -> jax.Array:
        x = mix_jnp(jnp.uint32(self._base(salt)) ^ state)
        return mix_jnp(x + action)

    # -- Python table (reference side) --------------------------------------
    def _score_py(self, state: int, action: int, salt: int) -> float:
        span = 2 * self.levels + 1
        return (self._hash_py(state, action, salt) % span
                - self.levels) / self.levels

    def child_py(self, state: int, depth: int, action: int) -> PyChild:
        """Action `action` of `state` (at `depth`), plain Python."""
        h = lambda salt: self._hash_py(state, action, salt)  # noqa: E731
        child = h(_SALT_CHILD) & _STATE_MASK
        nan_thr = prob_threshold(self.nan_prob)
        reward = self._score_py(state, action, _SALT_REWARD)
        q_value = self._score_py(state, action, _SALT_Q)
        if (h(_SALT_NAN_R) & 0xFFFF) < nan_thr:
            reward = math.nan
        if (h(_SALT_NAN_Q) & 0xFFFF) < nan_thr:
            q_value = math.nan
        terminal = (depth + 1 >= self.max_depth
                    or (h(_SALT_TERMINAL) & 0xFFFF)
                    < prob_threshold(self.terminal_prob))
        valid = (h(_SALT_VALID) & 0xFFFF) >= prob_threshold(self.invalid_prob)
        log_prob = -(h(_SALT_LOGP) % (2 * self.levels)) / self.levels
        return PyChild(state=child, tokens=(child,), log_prob=log_prob,
                       valid=valid, terminal=terminal, reward=reward,
                       q_value=q_value)

    def expand(self, state: int, depth: int) -> PyExpansion:
        """The K children of `state` at `depth` (`ReferenceEnv.expand`)."""
        return PyExpansion(
            children=[self.child_py(state, depth, a)
                      for a in range(self.branching)],
            generated_tokens=self.branching)

    def lookahead(self, state: int, depth: int,
                  terminal: bool) -> tuple[float, int]:
        """(h, generated tokens) of a state (`ReferenceEnv.lookahead`).

        h = 0 for a terminal state; otherwise the max of Q(state, a) over its
        valid actions (NaN if any of them is NaN; NO_ACTION_VALUE if none is
        valid). Generated tokens: K for a non-terminal state, else 0.
        """
        if terminal:
            return 0.0, 0
        values = [c.q_value for c in self.expand(state, depth).children
                  if c.valid]
        if any(math.isnan(v) for v in values):
            return math.nan, self.branching
        return (max(values) if values else NO_ACTION_VALUE), self.branching

    # -- jittable table (search side) ----------------------------------------
    def table(self, state: jax.Array, depth: jax.Array) -> dict:
        """The K children of states [...] at depths [...], jittable.

        Returns:
          child (state ids), reward, q_value, log_prob, terminal and valid,
          each [..., K]; equal to `child_py` entry by entry.
        """
        k, lv = self.branching, self.levels
        s = state.astype(jnp.uint32)[..., None]
        a = jnp.arange(k, dtype=jnp.uint32)
        h = lambda salt: self._hash_jnp(s, a, salt)  # noqa: E731

        def score(salt):
            v = (h(salt) % jnp.uint32(2 * lv + 1)).astype(jnp.int32) - lv
            return v.astype(jnp.float32) / lv

        nan_thr = jnp.uint32(prob_threshold(self.nan_prob))
        low16 = lambda salt: h(salt) & jnp.uint32(0xFFFF)  # noqa: E731
        reward = jnp.where(low16(_SALT_NAN_R) < nan_thr, jnp.nan,
                           score(_SALT_REWARD))
        q_value = jnp.where(low16(_SALT_NAN_Q) < nan_thr, jnp.nan,
                            score(_SALT_Q))
        terminal = ((depth[..., None] + 1 >= self.max_depth)
                    | (low16(_SALT_TERMINAL)
                       < jnp.uint32(prob_threshold(self.terminal_prob))))
        valid = low16(_SALT_VALID) >= jnp.uint32(
            prob_threshold(self.invalid_prob))
        logp = (h(_SALT_LOGP) % jnp.uint32(2 * lv)).astype(jnp.float32)
        return dict(
            child=(h(_SALT_CHILD) & jnp.uint32(_STATE_MASK)).astype(jnp.int32),
            reward=reward, q_value=q_value, terminal=terminal, valid=valid,
            log_prob=-logp / lv)

    @staticmethod
    def node_state(tree: Tree, node: jax.Array) -> jax.Array:
        """State ids [B] or [B, K] of slots (the root's is the prompt)."""
        step = node_values(tree.step_tokens[..., 0], node)
        root = tree.prompt_tokens[:, 0].reshape(
            (-1,) + (1,) * (node.ndim - 1))
        return jnp.where(node == Tree.ROOT, root, step)

    def expand_fn(self, tree: Tree, node: jax.Array,
                  keys: jax.Array) -> Expansion:
        """The jittable `ExpandFn` (keys are unused: the table is fixed)."""
        del keys
        t = self.table(self.node_state(tree, node),
                        node_values(tree.depth, node))
        b = node.shape[0]
        return Expansion(
            step_tokens=t["child"][..., None],
            step_lengths=jnp.ones((b, self.branching), jnp.int32),
            log_probs=t["log_prob"], valid=t["valid"],
            terminal=t["terminal"], reward=t["reward"],
            q_value=t["q_value"],
            generated_tokens=jnp.full((b,), self.branching, jnp.int32))

    def lookahead_fn(self, tree: Tree, child_nodes: jax.Array,
                     keys: jax.Array) -> Lookahead:
        """The jittable `LookaheadFn`, equal to `lookahead` per child."""
        del keys
        t = self.table(self.node_state(tree, child_nodes),
                        node_values(tree.depth, child_nodes))  # [B, K, K]
        q, valid = t["q_value"], t["valid"]
        best = jnp.max(jnp.where(valid, q, -jnp.inf), axis=-1)
        best = jnp.where(jnp.any(valid & jnp.isnan(q), axis=-1), jnp.nan,
                         best)
        best = jnp.where(jnp.any(valid, axis=-1), best, NO_ACTION_VALUE)
        terminal = node_values(tree.terminal, child_nodes)
        value = jnp.where(terminal, 0.0, best)
        scored = (child_nodes >= 0) & ~terminal
        tokens = self.branching * jnp.sum(scored, axis=1, dtype=jnp.int32)
        return Lookahead(value=value, generated_tokens=tokens)

    def init_tree(self, root_states: Sequence[int] | jax.Array, *,
                  num_nodes: int) -> Tree:
        """Trees whose roots are the given states (prompts of one token)."""
        roots = jnp.asarray(root_states, jnp.int32).reshape(-1, 1)
        return init_tree(roots, jnp.ones((roots.shape[0],), jnp.int32),
                         num_nodes=num_nodes, max_step_tokens=1,
                         max_children=self.branching)


class TableEnv:
    """A scripted environment given by explicit tables; state 0 is the root.

    Both a jittable `ExpandFn` (`expand_fn`; the root state is the prompt's
    first token) and a `ReferenceEnv` (`expand`; no lookahead). A child's
    step is the single token holding its state id.

    Args:
      child: [S, K] int child state of each action (-1: invalid action).
      reward: [S, K] process reward of each action's step.
      q_value: [S, K] Q(state, action).
      log_prob: [S, K] policy log-probability of each action.
      terminal: [S] bool the state is a complete solution.
    """

    def __init__(self, child: np.ndarray, reward: np.ndarray,
                 q_value: np.ndarray, log_prob: np.ndarray,
                 terminal: np.ndarray):
        self.child = np.asarray(child, np.int32)
        self.reward = np.asarray(reward, np.float32)
        self.q_value = np.asarray(q_value, np.float32)
        self.log_prob = np.asarray(log_prob, np.float32)
        self.terminal = np.asarray(terminal, bool)

    def expand_fn(self, tree: Tree, node: jax.Array,
                  keys: jax.Array) -> Expansion:
        """The jittable `ExpandFn` (keys are unused)."""
        del keys
        state = SyntheticEnv.node_state(tree, node)
        child = jnp.asarray(self.child)[state]                  # [B, K]
        return Expansion(
            step_tokens=jnp.maximum(child, 0)[..., None],
            step_lengths=jnp.ones_like(child), valid=child >= 0,
            log_probs=jnp.asarray(self.log_prob)[state],
            terminal=jnp.asarray(self.terminal)[jnp.maximum(child, 0)],
            reward=jnp.asarray(self.reward)[state],
            q_value=jnp.asarray(self.q_value)[state],
            generated_tokens=jnp.full(node.shape, child.shape[1], jnp.int32))

    def expand(self, state: int, depth: int) -> PyExpansion:
        """The K children of `state` (`ReferenceEnv.expand`)."""
        del depth
        children = []
        for a, c in enumerate(self.child[state].tolist()):
            children.append(PyChild(
                state=max(c, 0), tokens=(max(c, 0),),
                log_prob=float(self.log_prob[state, a]), valid=c >= 0,
                terminal=bool(self.terminal[max(c, 0)]),
                reward=float(self.reward[state, a]),
                q_value=float(self.q_value[state, a])))
        return PyExpansion(children=children,
                           generated_tokens=self.child.shape[1])

    def greedy(self, score: np.ndarray) -> int:
        """The terminal state reached by always taking the valid action with
        the largest `score` ([S, K], e.g. `log_prob` or `q_value`)."""
        state = 0
        while not self.terminal[state]:
            options = np.where(self.child[state] >= 0, score[state], -np.inf)
            state = int(self.child[state, np.argmax(options)])
        return state

    def init_tree(self, num_rows: int, *, num_nodes: int) -> Tree:
        """Trees of `num_rows` copies of the root state 0."""
        return init_tree(jnp.zeros((num_rows, 1), jnp.int32),
                         jnp.ones((num_rows,), jnp.int32),
                         num_nodes=num_nodes, max_step_tokens=1,
                         max_children=self.child.shape[1])
