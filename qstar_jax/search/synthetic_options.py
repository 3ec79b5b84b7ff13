"""A synthetic 'widening' environment: multi-token options per edge.

`OptionTableEnv` is the language-model setting without a language model:
the R candidate options of edge e of state s are token strings over a small
alphabet (so near-duplicates, the case state merge is for, are common), and
a node's state is a hash of its parent's state and its step's tokens, so
equal steps under one parent give equal states. Jittable (`propose_fn`,
`evaluate_fn`) and plain Python (`propose`, `evaluate`, the
`reference_mcts.ReferenceEnv` protocol), equal bit for bit; values and
outcomes are multiples of 1/levels, prior logits multiples of -1/levels.
"""

from __future__ import annotations

import dataclasses
import math

import jax
import jax.numpy as jnp

from qstar_jax.search.mcts_interfaces import Evaluation, Options
from qstar_jax.search.synthetic import mix_jnp, mix_py
from qstar_jax.search.synthetic_mcts import (M32, STATE_MASK, HashTable,
                                             PyCandidate, PyEvaluation,
                                             PyProposal)
from qstar_jax.search.tree import Tree, init_tree, node_values, path_nodes

(_CHILD, _PRIOR, _VALUE, _OUTCOME, _TERMINAL, _VALID, _NAN, _LENGTH,
 _TOKEN, _STEP) = range(10)


@dataclasses.dataclass(frozen=True, kw_only=True)
class OptionTableEnv(HashTable):
    """Seeded multi-token options for 'widening' MCTS (module docstring).

    Attributes:
      num_candidates: R candidates per expansion.
      max_step_tokens: T; a candidate has 1..T tokens.
      vocab: tokens are 1..vocab.
      terminal_depth: a child at this depth is terminal.
      terminal_prob: chance that a shallower child is terminal.
      invalid_prob: chance that a candidate is invalid.
      nan_prob: chance that a value or an outcome is NaN.
    """

    num_candidates: int = 3
    max_step_tokens: int = 4
    vocab: int = 3
    terminal_depth: int = 5
    terminal_prob: float = 0.1
    invalid_prob: float = 0.1
    nan_prob: float = 0.0

    def chain_py(self, state: int, tokens) -> int:
        """The state reached from `state` by a step of `tokens`."""
        x = mix_py(self.base(_STEP) ^ state)
        for tok in tokens:
            x = mix_py((x + tok) & M32)
        return mix_py((x + len(tokens)) & M32) & STATE_MASK

    # -- Python side ------------------------------------------------------
    def propose(self, state: int, depth: int, edge: int) -> PyProposal:
        """The R candidates of edge `edge` of `state` (at `depth`)."""
        out, lv = [], self.levels
        for r in range(self.num_candidates):
            h = self.hash_py(_CHILD, state, edge * 256 + r)
            length = 1 + self.hash_py(_LENGTH, h, 0) % self.max_step_tokens
            tokens = tuple(1 + self.hash_py(_TOKEN, h, j) % self.vocab
                           for j in range(length))
            out.append(PyCandidate(
                state=self.chain_py(state, tokens), tokens=tokens,
                prior_logit=-(self.hash_py(_PRIOR, h, 0) % (2 * lv)) / lv,
                valid=not self.chance_py(_VALID, h, 0, self.invalid_prob),
                terminal=(depth + 1 >= self.terminal_depth
                          or self.chance_py(_TERMINAL, h, 0,
                                            self.terminal_prob)),
                reward=0.0))
        return PyProposal(out, sum(len(c.tokens) for c in out))

    def evaluate(self, state: int, depth: int,
                 terminal: bool) -> PyEvaluation:
        """The value and outcome of a state."""
        del depth, terminal
        value = self.score_py(_VALUE, state, 0)
        outcome = self.score_py(_OUTCOME, state, 0)
        if self.chance_py(_NAN, state, 0, self.nan_prob):
            value = math.nan
        if self.chance_py(_NAN, state, 1, self.nan_prob):
            outcome = math.nan
        return PyEvaluation(value=value, outcome=outcome, prior_logits=None,
                            generated_tokens=state % 3)

    # -- jittable side ----------------------------------------------------
    def node_state(self, tree: Tree, nodes: jax.Array) -> jax.Array:
        """State ids [B, K] of slots: the hash chain along each path (no
        node is deeper than terminal_depth)."""
        depth = self.terminal_depth
        paths = jax.vmap(lambda x: path_nodes(tree, x, depth),
                         in_axes=1, out_axes=1)(nodes)         # [B, K, D+1]
        tokens = node_values(tree.step_tokens, paths)          # [B,K,D+1,T]
        lengths = jnp.where(paths >= 0, node_values(tree.step_lengths,
                                                    paths), 0)
        state = jnp.broadcast_to(tree.prompt_tokens[:, :1],
                                 nodes.shape).astype(jnp.uint32)
        for d in range(1, depth + 1):
            x = mix_jnp(jnp.uint32(self.base(_STEP)) ^ state)
            for j in range(tree.max_step_tokens):
                tok = tokens[..., d, j].astype(jnp.uint32)
                x = jnp.where(j < lengths[..., d], mix_jnp(x + tok), x)
            x = mix_jnp(x + lengths[..., d].astype(jnp.uint32))
            state = jnp.where(paths[..., d] >= 0,
                              x & jnp.uint32(STATE_MASK), state)
        return state.astype(jnp.int32)

    def propose_fn(self, tree: Tree, parents: jax.Array, edges: jax.Array,
                   keys: jax.Array) -> Options:
        """The jittable `ProposeFn`."""
        del keys
        t, lv = self.max_step_tokens, self.levels
        state = self.node_state(tree, parents)[..., None]
        r = jnp.arange(self.num_candidates, dtype=jnp.uint32)
        h = self.hash_jnp(_CHILD, state, edges[..., None].astype(jnp.uint32)
                          * 256 + r)                            # [B, K, R]
        length = (1 + self.hash_jnp(_LENGTH, h, 0) % jnp.uint32(t)).astype(
            jnp.int32)
        tokens = 1 + self.hash_jnp(_TOKEN, h[..., None], jnp.arange(
            t, dtype=jnp.uint32)) % jnp.uint32(self.vocab)
        tokens = jnp.where(jnp.arange(t) < length[..., None],
                           tokens.astype(jnp.int32), 0)
        depth = node_values(tree.depth, parents)[..., None]
        prior = -(self.hash_jnp(_PRIOR, h, 0) % jnp.uint32(2 * lv)).astype(
            jnp.float32) / lv
        return Options(
            step_tokens=tokens, step_lengths=length, prior_logits=prior,
            valid=~self.chance_jnp(_VALID, h, 0, self.invalid_prob),
            terminal=(depth + 1 >= self.terminal_depth) | self.chance_jnp(
                _TERMINAL, h, 0, self.terminal_prob),
            reward=jnp.zeros(h.shape, jnp.float32),
            generated_tokens=jnp.sum(length, axis=2))

    def evaluate_fn(self, tree: Tree, nodes: jax.Array,
                    keys: jax.Array) -> Evaluation:
        """The jittable `EvaluateFn`."""
        del keys
        state = self.node_state(tree, nodes)
        nan = self.nan_prob
        value = jnp.where(self.chance_jnp(_NAN, state, 0, nan), jnp.nan,
                          self.score_jnp(_VALUE, state, 0))
        outcome = jnp.where(self.chance_jnp(_NAN, state, 1, nan), jnp.nan,
                            self.score_jnp(_OUTCOME, state, 0))
        return Evaluation(value=value, outcome=outcome, prior_logits=None,
                          generated_tokens=state % 3)

    def init_tree(self, root_states, *, num_nodes: int,
                  max_children: int) -> Tree:
        """Fresh trees whose roots are the given states."""
        roots = jnp.asarray(root_states, jnp.int32).reshape(-1, 1)
        return init_tree(roots, jnp.ones((roots.shape[0],), jnp.int32),
                         num_nodes=num_nodes,
                         max_step_tokens=self.max_step_tokens,
                         max_children=max_children)
