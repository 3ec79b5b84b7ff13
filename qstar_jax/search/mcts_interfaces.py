"""The model side of MCTS, plugged in as two functions.

The MCTS engine (`mcts.py`) never calls a language model itself. Per
iteration it calls

* a `ProposeFn` for the leaves being expanded: R candidate options (steps)
  of each (parent, edge) pair; the engine keeps one (state merge picks the
  first far enough from the parent's other children), and
* an `EvaluateFn` on the new nodes once they are in the tree: each node's
  score (the value backed up), its outcome score (what answer reranking
  reads; the ORM in the language-model version) and, in the 'enumerated'
  expansion mode, the prior logits of its C edges.

The root is evaluated once, before the first simulation. Both functions
receive the whole `Tree` (so they can rebuild a node's token state with
`tree.state_tokens`); they must treat the rows of the batch independently.
Their outputs are shape-checked at trace time (`check_options`,
`check_evaluation`): a wrong shape or dtype raises a ValueError naming the
function, the field, the expected and the actual shape.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Callable, NamedTuple

import jax

from qstar_jax.search.contracts import check_array

if TYPE_CHECKING:
    from qstar_jax.search.tree import Tree


class Options(NamedTuple):
    """R candidate options for each of K (parent, edge) pairs of B problems.

    Attributes:
      step_tokens: [B, K, R, T] int32 the candidate steps, padded with 0.
      step_lengths: [B, K, R] int32 real tokens of each candidate.
      prior_logits: [B, K, R] float32 the candidate's prior logit (the
        policy's log-probability of the step, or a length-normalised form).
      valid: [B, K, R] bool the candidate exists.
      terminal: [B, K, R] bool the candidate ends the solution.
      reward: [B, K, R] float32 reward of the step (0 in the language-model
        version; mctx's transition reward in the toy environments).
      generated_tokens: [B, K] int32 tokens generated for each pair.
      truncated: [B, K, R] bool or None: the candidate was cut at the
        step-token limit (counted in `MCTSStats.truncated`).
      overflow: [B, K, R] bool or None: the candidate is invalid because
        its state would exceed the state width (`MCTSStats.overflow`).
    """

    step_tokens: jax.Array
    step_lengths: jax.Array
    prior_logits: jax.Array
    valid: jax.Array
    terminal: jax.Array
    reward: jax.Array
    generated_tokens: jax.Array
    truncated: jax.Array | None = None
    overflow: jax.Array | None = None


class Evaluation(NamedTuple):
    """Scores of K nodes for each of B problems.

    Attributes:
      value: [B, K] float32 the node's score, backed up along its path.
      outcome: [B, K] float32 the node's score as a finished solution
        (ORM), used by answer reranking; meaningful for terminal nodes.
      prior_logits: [B, K, C] float32 prior logits of the node's C edges
        ('enumerated' expansion; -inf: invalid action), or None.
      generated_tokens: [B, K] int32 tokens generated to score each node
        (fast rollouts).
    """

    value: jax.Array
    outcome: jax.Array
    prior_logits: jax.Array | None
    generated_tokens: jax.Array


ProposeFn = Callable[["Tree", jax.Array, jax.Array, jax.Array], Options]
"""propose_fn(tree, parents [B, K], edges [B, K], keys [B, K]) -> Options.

Candidate options for the new child at edge `edges[b, k]` of node
`parents[b, k]` ([B, K, R, ...]). In 'widening' mode the edge is the next
free edge of the parent (a language model ignores it); in 'enumerated' mode
it is the action being expanded (R = 1: the action's deterministic
outcome). Entries the search does not use are still passed (with valid
slots); their outputs are ignored.
"""

EvaluateFn = Callable[["Tree", jax.Array, jax.Array], Evaluation]
"""evaluate_fn(tree, nodes [B, K], keys [B, K]) -> Evaluation ([B, K]).

Scores nodes already inserted into `tree` (their steps and terminal flags
are set). Unused entries point at some valid slot; outputs are ignored.
"""


def check_options(options: Options, fn_name: str, batch: int, pairs: int,
                  max_step_tokens: int) -> int:
    """Checks a `ProposeFn` output at trace time; returns R.

    Args:
      options: the output.
      fn_name: the function's name, for the error message.
      batch, pairs, max_step_tokens: the expected B, K and T.
    """
    if not isinstance(options, Options):
        raise ValueError(f"{fn_name} must return Options, got "
                         f"{type(options).__name__}")
    tokens = options.step_tokens
    if getattr(tokens, "ndim", 0) != 4:
        raise ValueError(
            f"{fn_name} returned Options.step_tokens with shape "
            f"{getattr(tokens, 'shape', ())}; expected (B, K, R, T) with "
            f"B = {batch}, K = {pairs}, T = {max_step_tokens}")
    r = tokens.shape[2]
    bkr = (batch, pairs, r)
    check_array(fn_name, "Options", "step_tokens", tokens,
                bkr + (max_step_tokens,), "(B, K, R, T)", "int")
    for field, kind in (("step_lengths", "int"), ("prior_logits", "float"),
                        ("valid", "mask"), ("terminal", "mask"),
                        ("reward", "float"), ("truncated", "mask"),
                        ("overflow", "mask")):
        x = getattr(options, field)
        if x is not None or field not in ("truncated", "overflow"):
            check_array(fn_name, "Options", field, x, bkr, "(B, K, R)", kind)
    check_array(fn_name, "Options", "generated_tokens",
                options.generated_tokens, (batch, pairs), "(B, K)", "int")
    return r


def check_evaluation(evaluation: Evaluation, fn_name: str, batch: int,
                     nodes: int, edges: int, need_priors: bool) -> None:
    """Checks an `EvaluateFn` output at trace time.

    Args:
      evaluation: the output.
      fn_name: the function's name, for the error message.
      batch, nodes, edges: the expected B, K and C.
      need_priors: prior_logits are required ('enumerated' expansion).
    """
    if not isinstance(evaluation, Evaluation):
        raise ValueError(f"{fn_name} must return Evaluation, got "
                         f"{type(evaluation).__name__}")
    for field, kind in (("value", "float"), ("outcome", "float"),
                        ("generated_tokens", "int")):
        check_array(fn_name, "Evaluation", field,
                    getattr(evaluation, field), (batch, nodes), "(B, K)",
                    kind)
    if evaluation.prior_logits is None:
        if need_priors:
            raise ValueError(
                f"{fn_name} returned Evaluation.prior_logits = None; "
                "expansion='enumerated' needs the [B, K, C] prior logits "
                "of each node's edges")
    else:
        check_array(fn_name, "Evaluation", "prior_logits",
                    evaluation.prior_logits, (batch, nodes, edges),
                    "(B, K, C)", "float")
