"""Settings, per-node state, statistics and results of the MCTS engine."""

from __future__ import annotations

import dataclasses

import flax.struct
import jax
import jax.numpy as jnp

from qstar_jax.search.tree import Tree

EXPANSIONS = ("widening", "enumerated")
SELECTIONS = ("ucb", "puct", "gumbel")
Q_TRANSFORMS = ("raw", "min_max")

RUNNING, DONE, FULL = 0, 1, 2
STATUS_NAMES = ("running", "done", "full")

# What a simulation's descent ended with: nothing (the row is not
# running), an expansion, a revisit of an existing leaf, or a collision.
NONE, EXPAND, REVISIT, COLLISION = 0, 1, 2, 3


@dataclasses.dataclass(frozen=True, kw_only=True)
class MCTSConfig:
    """Static settings of the MCTS engine (defaults: AlphaLLM's Table 5,
    GSM8K with the small rollout budget).

    Attributes:
      num_nodes: N, node slots per problem (must match the tree).
      num_simulations: simulations per problem (a multiple of `parallel`).
      parallel: S, simulations per iteration, selected one after another
        under virtual loss and then expanded and evaluated together (every
        model call carries B x S leaves).
      max_depth: D, a node at depth D is a leaf (never expanded).
      expansion: 'widening' (a node gets children one at a time, while it
        has fewer than its allowed width n(s); the language-model setting)
        or 'enumerated' (every node has C actions with priors from its
        evaluation, all selectable, an unvisited action is expanded when
        selected: mctx's setting).
      selection: 'ucb' (w + c_ucb * sqrt(2 ln N / n), unvisited first),
        'puct' (Q + (pb_c_init + ln((N + pb_c_base + 1) / pb_c_base)) * p *
        sqrt(N) / (1 + n)) or 'gumbel' (Gumbel MuZero's deterministic
        interior rule; sequential halving with Gumbel noise at the root).
      root_selection: the rule at the root (None: as `selection`, with
        'gumbel' meaning sequential halving there).
      c_ucb: C of UCB (Table 5: 1.0, or 1.5 for GSM8K with many rollouts).
      pb_c_init, pb_c_base: the PUCT constants (mctx's defaults; TS-LLM
        uses pb_c_init 3 or 10).
      q_transform: the Q values the rules read: 'raw' (mean backed-up
        values; an unvisited action reads its parent's mean value) or
        'min_max' (mctx's normalisation by the parent's value and its
        visited children's Q to [0, 1], unvisited read the minimum).
      discount: gamma; Q(s, a) = reward(a) + gamma * mean value(child).
      gumbel_scale: scale of the root's Gumbel noise (0: none).
      max_considered: root actions sampled without replacement by
        sequential halving.
      gumbel_value_scale, gumbel_maxvisit_init: the completed-Q scale of
        Gumbel MuZero ((maxvisit_init + max n) * value_scale * q).
      alpha: importance weight of adaptive branching ('widening'): a node
        at depth t may have n(s) = max(c_min(t), min(floor(alpha * I(s)) +
        1, c_max(t))) children, I(s) = max_i |v(child_i) - v(s)| over its
        children's evaluations. alpha = 0 gives the fixed width c_min(t).
      c_min, c_max: c(t) per depth t = 0, 1, ...; the last entry holds for
        every deeper level. Table 5: c_min(0) = 10 (40 for many rollouts),
        c_min(t > 0) = 2; c_max(0) = 60, c_max(t > 0) = 10.
      merge_threshold: state merge ('widening'): a candidate whose token
        edit distance to a sibling (an existing child of the parent, or one
        accepted earlier in the same iteration) is below this is rejected;
        the first of the R candidates that is not is kept, else the
        farthest (largest distance to its nearest sibling). 0: no merge
        (candidate 0 is kept).
      virtual_loss: visits added to every node on the path of a simulation
        selected earlier in the same iteration (S > 1).
      virtual_value: the value each virtual visit counts with.
      nan_value: the score that replaces a non-finite value, outcome or
        reward (the replacement is counted in `nan_count`).
    """

    num_nodes: int = 256
    num_simulations: int = 64
    parallel: int = 1
    max_depth: int = 16
    expansion: str = "widening"
    selection: str = "ucb"
    root_selection: str | None = None
    c_ucb: float = 1.0
    pb_c_init: float = 1.25
    pb_c_base: float = 19652.0
    q_transform: str = "raw"
    discount: float = 1.0
    gumbel_scale: float = 1.0
    max_considered: int = 16
    gumbel_value_scale: float = 0.1
    gumbel_maxvisit_init: float = 50.0
    alpha: float = 1.0
    c_min: tuple[int, ...] = (10, 2)
    c_max: tuple[int, ...] = (60, 10)
    merge_threshold: int = 0
    virtual_loss: int = 1
    virtual_value: float = 0.0
    nan_value: float = 0.0

    def __post_init__(self):
        for name, value, allowed in (
                ("expansion", self.expansion, EXPANSIONS),
                ("selection", self.selection, SELECTIONS),
                ("root_selection", self.root_selection,
                 SELECTIONS + (None,)),
                ("q_transform", self.q_transform, Q_TRANSFORMS)):
            if value not in allowed:
                raise ValueError(
                    f"MCTSConfig.{name}={value!r}; use one of {allowed}")
        for name in ("num_nodes", "num_simulations", "parallel",
                     "max_considered"):
            if getattr(self, name) < 1:
                raise ValueError(f"MCTSConfig.{name} must be >= 1, got "
                                 f"{getattr(self, name)}")
        if self.num_nodes < 2:
            raise ValueError("MCTSConfig.num_nodes must be >= 2")
        if self.num_simulations % self.parallel:
            raise ValueError(
                f"MCTSConfig.num_simulations ({self.num_simulations}) must "
                f"be a multiple of parallel ({self.parallel})")
        if self.expansion == "enumerated" and self.merge_threshold:
            raise ValueError("MCTSConfig: state merge (merge_threshold > 0) "
                             "needs expansion='widening'")
        if self.max_depth < 1 or self.merge_threshold < 0 or \
                self.virtual_loss < 0 or self.alpha < 0:
            raise ValueError("MCTSConfig: max_depth must be >= 1 and "
                             "merge_threshold, virtual_loss, alpha >= 0")
        for name in ("c_min", "c_max"):
            widths = getattr(self, name)
            if not widths or min(widths) < 1:
                raise ValueError(f"MCTSConfig.{name}={widths}; give one or "
                                 "more widths >= 1 (per depth)")

    @property
    def num_iterations(self) -> int:
        """Iterations of the search loop: num_simulations / parallel."""
        return self.num_simulations // self.parallel

    @property
    def root_rule(self) -> str:
        """The selection rule at the root."""
        return self.root_selection or self.selection

    @property
    def max_width(self) -> int:
        """The most children any node may get in 'widening' mode."""
        return max(max(self.c_min), max(self.c_max))


@flax.struct.dataclass
class MCTSNodes:
    """MCTS's own per-node arrays (`tree.extra` of an MCTS tree).

    Attributes:
      raw_value: [B, N] float32 the node's own evaluation (after the NaN
        rule), the value its creation backed up.
      outcome: [B, N] float32 the node's outcome score (ORM) from its
        evaluation.
      importance: [B, N] float32 I(s) = max over its children of
        |raw_value(child) - raw_value(s)| (0 without children).
      saturated: [B, N] bool a widening of the node found no valid
        candidate: it gets no more children (without children it is a
        leaf, like a terminal node).
    """

    raw_value: jax.Array
    outcome: jax.Array
    importance: jax.Array
    saturated: jax.Array


def mcts_nodes(tree: Tree) -> MCTSNodes:
    """Empty MCTS state for a tree."""
    zeros = jnp.zeros(tree.parent.shape, jnp.float32)
    return MCTSNodes(raw_value=zeros, outcome=zeros, importance=zeros,
                     saturated=jnp.zeros(tree.parent.shape, bool))


@flax.struct.dataclass
class MCTSStats:
    """What the search spent and how each row ended (all [B] int32).

    Attributes:
      simulations: simulations backed up (expansions + revisits).
      expansions: nodes created (the root not counted).
      revisits: simulations that ended at an existing leaf (terminal, at
        max_depth, or saturated without children) and backed up its value
        again.
      collisions: simulations (S > 1) that found every edge of a node
        reserved by earlier simulations of the same iteration; dropped.
      failed: expansions whose candidates were all invalid (no node; in
        'widening' mode the parent is marked saturated, in 'enumerated' mode
        the action becomes invalid).
      dropped: expansions that found the tree full (no node created).
      merge_rejected: candidates rejected by state merge before the kept
        one (fallbacks included).
      merge_fallbacks: expansions where no candidate was far enough from
        its siblings and the farthest was kept.
      generated_tokens: tokens the model generated for the row (proposals
        and evaluations).
      model_calls: batched model calls the row took part in (the root
        evaluation, then per iteration one proposal and one evaluation call
        when the row expands a node).
      nan_count: non-finite values, outcomes, rewards and prior logits
        replaced.
      max_depth: the deepest node created (root: 0).
      status: RUNNING (never at the end), DONE (all simulations run) or
        FULL (an expansion found no free slot; the row stopped then).
      truncated: candidate options of the row's expansions cut at the
        step-token limit (`Options.truncated`; kept or not).
      overflow: candidate options made invalid because their state would
        exceed the state width (`Options.overflow`).
    """

    simulations: jax.Array
    expansions: jax.Array
    revisits: jax.Array
    collisions: jax.Array
    failed: jax.Array
    dropped: jax.Array
    merge_rejected: jax.Array
    merge_fallbacks: jax.Array
    generated_tokens: jax.Array
    model_calls: jax.Array
    nan_count: jax.Array
    max_depth: jax.Array
    status: jax.Array
    truncated: jax.Array
    overflow: jax.Array


def zero_stats(batch: int) -> MCTSStats:
    """All-zero statistics for B rows (status RUNNING)."""
    zeros = jnp.zeros((batch,), jnp.int32)
    return MCTSStats(**{f.name: zeros for f in dataclasses.fields(MCTSStats)})


@flax.struct.dataclass
class MCTSResult:
    """The outcome of `run_mcts` for B problems.

    Attributes:
      tree: the final trees ([B, N, ...]; `tree.extra` is `MCTSNodes`).
      root_action: [B] int32 the root edge chosen: the most visited (ties
        to the lowest edge), or with Gumbel root selection the considered
        edge with the largest g + logit + completed Q.
      root_visits: [B, C] int32 visit counts of the root's edges.
      most_visited: [B] int32 the node reached from the root by always
        taking the most visited child (ties to the lowest edge).
      best_value: [B] int32 the terminal node with the largest mean value
        (ties to the lowest slot; -1 if none).
      best_outcome: [B] int32 the terminal node with the largest outcome
        score (ORM reranking; -1 if none).
      stats: `MCTSStats`.
    """

    tree: Tree
    root_action: jax.Array
    root_visits: jax.Array
    most_visited: jax.Array
    best_value: jax.Array
    best_outcome: jax.Array
    stats: MCTSStats
