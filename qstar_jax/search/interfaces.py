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
Their outputs are shape- and dtype-checked at trace time
(`check_expansion`, `check_lookahead`): a wrong shape, a step wider than the
tree's T or more children than its C edges raises a ValueError naming the
function, the field, the expected and the actual shape.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Callable, NamedTuple

import jax
import jax.numpy as jnp

from qstar_jax.search.contracts import check_array

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
      truncated: [B, K] bool or None: the proposed step was cut at the
        step-token limit (counted in `SearchStats.truncated`, whether or not
        the child was created).
      overflow: [B, K] bool or None: the child was not created because its
        state would not fit the state width (counted in
        `SearchStats.overflow`).
    """

    step_tokens: jax.Array
    step_lengths: jax.Array
    log_probs: jax.Array
    valid: jax.Array
    terminal: jax.Array
    reward: jax.Array
    q_value: jax.Array
    generated_tokens: jax.Array
    truncated: jax.Array | None = None
    overflow: jax.Array | None = None


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


def check_expansion(expansion: Expansion, fn_name: str, batch: int,
                    max_children: int, max_step_tokens: int) -> int:
    """Checks an `ExpandFn` output at trace time; returns K.

    Args:
      expansion: the output.
      fn_name: the function's name, for the error message.
      batch, max_children, max_step_tokens: the tree's B, C (K <= C) and T.
    """
    if not isinstance(expansion, Expansion):
        raise ValueError(f"{fn_name} must return Expansion, got "
                         f"{type(expansion).__name__}")
    tokens = expansion.step_tokens
    shape = tuple(getattr(tokens, "shape", ()))
    if len(shape) != 3:
        raise ValueError(
            f"{fn_name} returned Expansion.step_tokens with shape {shape}; "
            f"expected (B, K, T) with B = {batch}, T = {max_step_tokens}")
    k = shape[1]
    if k > max_children:
        raise ValueError(
            f"{fn_name} returned K = {k} children per node (Expansion."
            f"step_tokens shape {shape}) but the tree has C = "
            f"{max_children} edges per node; build it with max_children "
            f">= {k}")
    check_array(fn_name, "Expansion", "step_tokens", tokens,
                (batch, k, max_step_tokens), "(B, K, T)", "int")
    for field, kind in (("step_lengths", "int"), ("log_probs", "float"),
                        ("valid", "mask"), ("terminal", "mask"),
                        ("reward", "float"), ("q_value", "float"),
                        ("truncated", "mask"), ("overflow", "mask")):
        x = getattr(expansion, field)
        if x is not None or field not in ("truncated", "overflow"):
            check_array(fn_name, "Expansion", field, x, (batch, k),
                        "(B, K)", kind)
    check_array(fn_name, "Expansion", "generated_tokens",
                expansion.generated_tokens, (batch,), "(B,)", "int")
    return k


def check_lookahead(lookahead: Lookahead, fn_name: str, batch: int,
                    k: int) -> None:
    """Checks a `LookaheadFn` output at trace time (B rows, K children)."""
    if not isinstance(lookahead, Lookahead):
        raise ValueError(f"{fn_name} must return Lookahead, got "
                         f"{type(lookahead).__name__}")
    check_array(fn_name, "Lookahead", "value", lookahead.value, (batch, k),
                "(B, K)", "float")
    check_array(fn_name, "Lookahead", "generated_tokens",
                lookahead.generated_tokens, (batch,), "(B,)", "int")
