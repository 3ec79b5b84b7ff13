"""The model side of A*, plugged in as functions (MCTS's: mcts_interfaces).

The search engine (`astar.py`) never calls a language model itself. It calls
an `ExpandFn` to propose and score the children of one node per problem, and,
in the 'lookahead' heuristic mode, a `LookaheadFn` to estimate the value of
newly created children. The same A* runs on the synthetic table environment
(`synthetic.py`) and on the language model (policy + PRM + QVM).

Both functions receive the whole `Tree`, so they can rebuild any node's token
state with `tree.state_tokens`. `call_if` skips a model call that no row
of the batch needs. They must treat the rows of the batch
independently: a row's outputs may depend only on that row's tree and key.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Callable, NamedTuple

import jax
import jax.numpy as jnp

if TYPE_CHECKING:
    from qstar_jax.search.tree import Tree


class Expansion(NamedTuple):
    """K proposed children of one node for each of B problems.

    Attributes:
      step_tokens: [B, K, T] int32 the step of each child, padded with 0.
      step_lengths: [B, K] int32 real tokens of each step.
      log_probs: [B, K] float32 policy log-probability of each step.
      valid: [B, K] bool the child exists (False: fewer than K distinct steps
        were found; such children are not inserted).
      terminal: [B, K] bool the child's state is a complete solution.
      reward: [B, K] float32 process reward R_P of each child's step.
      q_value: [B, K] float32 QVM estimate Q(parent, a_k) of each step.
      generated_tokens: [B] int32 tokens the model generated for the row
        (the compute spent, discarded samples included).
    """

    step_tokens: jax.Array
    step_lengths: jax.Array
    log_probs: jax.Array
    valid: jax.Array
    terminal: jax.Array
    reward: jax.Array
    q_value: jax.Array
    generated_tokens: jax.Array


class Lookahead(NamedTuple):
    """Heuristic values of K new children for each of B problems.

    Attributes:
      value: [B, K] float32 h(child) = max over the child's own top-K actions
        of Q(child, a) (entries of children that were not created are
        ignored).
      generated_tokens: [B] int32 tokens generated for the row's lookahead.
    """

    value: jax.Array
    generated_tokens: jax.Array


ExpandFn = Callable[["Tree", jax.Array, jax.Array], Expansion]
"""expand_fn(tree, node [B] int32, keys [B]) -> Expansion ([B, K, ...]).

Proposes K children of each row's `node` and scores them (in the language
model version: policy top-K steps, PRM reward, QVM Q(node, a)). Rows that the
search does not expand are still passed (with some valid node); their outputs
are ignored. `keys[b]` is `fold_in(search_key[b], i)` for row b's i-th
expansion.
"""

LookaheadFn = Callable[["Tree", jax.Array, jax.Array], Lookahead]
"""lookahead_fn(tree, child_nodes [B, K] int32, keys [B, K]) -> Lookahead.

Called after the children are inserted into `tree`; `child_nodes` holds
their slots (-1 where no child was created). Used by the 'lookahead'
heuristic mode; it costs about K times an expansion.
"""


def call_if(pred: jax.Array, fn, *args):
    """fn(*args) when the scalar `pred` holds, else zeros of the same
    structure (the call is skipped at run time; fn is traced either way, so
    its output checks still run)."""
    shapes = jax.eval_shape(fn, *args)
    return jax.lax.cond(
        pred, lambda: fn(*args),
        lambda: jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype), shapes))
