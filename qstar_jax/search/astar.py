"""Q*: batched best-first (A*) search over reasoning steps, on device.

Every node has a priority f = g + lambda * h (larger is better):

* g(child) = Agg(g(parent), r(child)), r the process reward of the child's
  step; for a child of the root g = r(child). Agg is 'min', 'max', 'sum',
  'last' (g = r(child)) or 'none' (g = 0, the paper's MATH setting).
* h(child) = Q(parent, a) of the edge ('edge' mode) or the `LookaheadFn`'s
  max over the child's own top-K actions of Q(child, a) ('lookahead' mode).
* The root has g = h = f = 0.

One iteration of `astar_search` serves every unfinished row at once. Each
such row looks at its best OPEN node: the largest f, ties to the LOWEST slot
index (the earliest created, while no slot has been recycled):

* a terminal node is popped (closed) and recorded as a found trajectory;
* otherwise, if the row has expansions left, the node is popped and expanded:
  one batched `expand_fn` call serves all expanding rows, and the valid
  children are inserted as OPEN nodes;
* otherwise the row stops with status BUDGET (the node stays OPEN).

A row finishes SOLVED after `num_trajectories` terminal pops, BUDGET when it
needs an expansion beyond `max_expansions` (terminal pops need none),
EXHAUSTED with no OPEN node, or FULL. When a row's valid children outnumber
its FREE slots, `when_full='stop'` inserts those that fit (in order k) and
finishes the row FULL; 'recycle' first frees the row's lowest-f OPEN nodes
(ties: highest slot index), as many as missing, and the children take the
FREE slots in increasing index order. Row b's expansion number i = 0, 1,
... gets the key `fold_in(keys[b], i)` (lookahead keys: `split(fold_in(that
key, 1), K)`), so a row's search never depends on the other rows.

Non-finite model outputs: a NaN or infinite reward (unless aggregation is
'none', which ignores rewards), q_value or lookahead value is replaced by
WORST = -2**60 and counted per row in `nan_count`; the child gets f = WORST:
it stays OPEN but is ranked after every other node (among equals, the lowest
index first). Its g is Agg(g(parent), WORST), which descendants inherit
through 'min', 'sum' and 'last' but not 'max'. A g at or below -2**59 is
snapped to exactly WORST, so no NaN or inf ever reaches g or f, and float32
and float64 implementations of these rules agree exactly on dyadic scores.

Example:
  >>> config = AStarConfig(num_nodes=256, max_expansions=64, lam=1.0)
  >>> tree = init_tree(prompts, lengths, num_nodes=256, max_step_tokens=32,
  ...                  max_children=6)
  >>> search = jax.jit(functools.partial(astar_search, expand_fn,
  ...                                    config=config))
  >>> result = search(tree, keys)   # keys: [B]; result.best: [B] slots
"""

from __future__ import annotations

import dataclasses
import math
from typing import NamedTuple

import flax.struct
import jax
import jax.numpy as jnp

from qstar_jax.search.astar_tree import (CLOSED, OPEN, AStarNodes,
                                         add_children, astar_nodes,
                                         best_open_node, recycle,
                                         refresh_slots, set_scores)
from qstar_jax.search.contracts import check_keys, function_name
from qstar_jax.search.interfaces import (ExpandFn, Expansion, Lookahead,
                                         LookaheadFn, call_if,
                                         check_expansion, check_lookahead)
from qstar_jax.search.tree import Tree, node_values

AGGREGATIONS = ("min", "max", "sum", "last", "none")
HEURISTICS = ("edge", "lookahead")
WHEN_FULL = ("recycle", "stop")

WORST = -2.0 ** 60
"""The score of a node whose reward or heuristic was not finite."""
POISON_LIMIT = -2.0 ** 59
"""g or f at or below this is snapped to WORST."""

RUNNING, SOLVED, BUDGET, EXHAUSTED, FULL = 0, 1, 2, 3, 4
STATUS_NAMES = ("running", "solved", "budget", "exhausted", "full")
LOOKAHEAD_SALT = 1


@dataclasses.dataclass(frozen=True, kw_only=True)
class AStarConfig:
    """Static settings of the A* search.

    Attributes:
      num_nodes: N, node slots per problem (must match the tree).
      max_expansions: expansions allowed per problem (>= 1).
      num_trajectories: stop after this many terminal nodes are popped (1;
        6 in the paper).
      lam: lambda, the weight of h in f = g + lambda * h.
      aggregation: how g aggregates process rewards: one of AGGREGATIONS.
      heuristic: 'edge' (h = Q(parent, a)) or 'lookahead' (h from the
        `LookaheadFn`, about K times dearer).
      when_full: 'recycle' (free the lowest-f OPEN leaves to make room) or
        'stop' (the row finishes with status FULL).
      shrink_rows: 0 (off) or the smallest batch to shrink to. When at
        most ceil(shrink_ratio x width) of the batch's rows are still
        running, those rows are gathered into a batch that wide (never
        below shrink_rows) and the search goes on there, so rows that have
        finished stop costing model work; every row's final state is
        scattered back to its place. Each row's search is the same
        computation either way (its own key, its own arrays); only float
        differences between batch shapes can tip a tie. Each batch width
        compiles its own loop. A shrinking search ends a row in the
        iteration of its last expansion (its terminal pop or budget stop
        is taken at once, with the same pops), so it leaves sooner.
      shrink_ratio: in (0, 1), the width of each stage over the previous
        one (0.5: B, B/2, B/4, ...; 2/3: 64, 43, 29, 20, ...). Closer to 1
        leaves fewer finished rows in the batch and compiles more loops.
    """

    num_nodes: int = 256
    max_expansions: int = 64
    num_trajectories: int = 1
    lam: float = 1.0
    aggregation: str = "min"
    heuristic: str = "edge"
    when_full: str = "recycle"
    shrink_rows: int = 0
    shrink_ratio: float = 0.5

    def __post_init__(self):
        if self.num_nodes < 2:
            raise ValueError("num_nodes must be >= 2")
        if min(self.max_expansions, self.num_trajectories) < 1:
            raise ValueError("max_expansions, num_trajectories must be >= 1")
        if self.shrink_rows < 0:
            raise ValueError(f"shrink_rows must be >= 0, got "
                             f"{self.shrink_rows}")
        if not 0.0 < self.shrink_ratio < 1.0:
            raise ValueError(f"shrink_ratio must be in (0, 1), got "
                             f"{self.shrink_ratio}")
        for name, value, allowed in (
                ("aggregation", self.aggregation, AGGREGATIONS),
                ("heuristic", self.heuristic, HEURISTICS),
                ("when_full", self.when_full, WHEN_FULL)):
            if value not in allowed:
                raise ValueError(f"{name}={value!r}; use one of {allowed}")

    @property
    def max_pops(self) -> int:
        """The most nodes a row can pop: max_expansions + num_trajectories."""
        return self.max_expansions + self.num_trajectories


@flax.struct.dataclass
class SearchStats:
    """What the search spent and how each row ended.

    Attributes:
      expansions: [B] int32 nodes expanded (expand_fn results used).
      generated_tokens: [B] int32 sum of `generated_tokens` of the row's used
        expansions and lookaheads.
      model_calls: [B] int32 batched model calls the row took part in: one
        per expansion, plus one per lookahead call that scored at least one
        of its children.
      max_depth: [B] int32 deepest node ever created (root: 0).
      nan_count: [B] int32 non-finite rewards plus non-finite heuristic
        values (q_value or lookahead) among the children created.
      dropped: [B] int32 valid children not created for lack of slots.
      recycled: [B] int32 OPEN nodes freed to make room.
      status: [B] int32 SOLVED, BUDGET, EXHAUSTED or FULL.
      truncated: [B] int32 proposed steps cut at the step-token limit
        (`Expansion.truncated`; created or not, see `step_limits`).
      overflow: [B] int32 children not created because their state would
        exceed the state width (`Expansion.overflow`).
    """

    expansions: jax.Array
    generated_tokens: jax.Array
    model_calls: jax.Array
    max_depth: jax.Array
    nan_count: jax.Array
    dropped: jax.Array
    recycled: jax.Array
    status: jax.Array
    truncated: jax.Array
    overflow: jax.Array


@flax.struct.dataclass
class SearchResult:
    """The outcome of `astar_search` for B problems (M = num_trajectories).

    Attributes:
      tree: the final trees ([B, N, ...]).
      trajectories: [B, M] int32 terminal slots in the order found (-1 where
        not found); `trajectory_steps` rebuilds their steps.
      trajectory_f: [B, M] float32 their f (-inf where not found).
      num_found: [B] int32 trajectories found.
      best: [B] int32 the found trajectory with the largest f (ties: the
        first found); -1 if none.
      pop_order: [B, max_expansions + M] int32 popped slots in order (-1
        padded).
      num_pops: [B] int32 nodes popped.
      stats: `SearchStats`.
    """

    tree: Tree
    trajectories: jax.Array
    trajectory_f: jax.Array
    num_found: jax.Array
    best: jax.Array
    pop_order: jax.Array
    num_pops: jax.Array
    stats: SearchStats


class _LoopState(NamedTuple):
    """The while-loop carry (fields as in `SearchResult`)."""
    tree: Tree
    trajectories: jax.Array                             # [B, M]
    trajectory_f: jax.Array                             # [B, M]
    num_found: jax.Array                                # [B]
    pop_order: jax.Array                                # [B, max_pops]
    num_pops: jax.Array                                 # [B]
    stats: SearchStats


def aggregate_reward(aggregation: str, parent_g: jax.Array,
                     from_root: jax.Array,
                     reward: jax.Array) -> tuple[jax.Array, jax.Array]:
    """g of K children: Agg(g(parent), r(child)), NaN-safe.

    Args:
      aggregation: one of AGGREGATIONS.
      parent_g: [B] float32 g of each row's parent.
      from_root: [B] bool the parent is the root (then g = r(child)).
      reward: [B, K] float32 process rewards of the children.

    Returns:
      g [B, K] float32 (WORST where poisoned) and bad [B, K] bool (the
      reward was not finite and is used: always False for 'none').
    """
    bad = ~jnp.isfinite(reward) & (aggregation != "none")
    r = jnp.where(bad, WORST, reward).astype(jnp.float32)
    pg = parent_g[:, None].astype(jnp.float32)
    root = from_root[:, None]
    combine = {"none": lambda: jnp.zeros_like(r), "last": lambda: r,
               "min": lambda: jnp.minimum(pg, r),
               "max": lambda: jnp.maximum(pg, r), "sum": lambda: pg + r}
    if aggregation not in combine:
        raise ValueError(f"unknown aggregation {aggregation!r}")
    g = combine[aggregation]()
    if aggregation in ("min", "max", "sum"):
        g = jnp.where(root, r, g)
    g = jnp.where(jnp.isfinite(g) & (g > POISON_LIMIT), g, WORST)
    return g, bad


def priority(g: jax.Array, h: jax.Array, lam: float,
             reward_bad: jax.Array) -> tuple[jax.Array, jax.Array, jax.Array]:
    """f = g + lam * h, NaN-safe.

    Args:
      g: [B, K] float32 from `aggregate_reward`.
      h: [B, K] float32 raw heuristic values.
      lam: lambda.
      reward_bad: [B, K] bool the child's own reward was not finite (from
        `aggregate_reward`).

    Returns:
      f [B, K] (WORST where the reward or h is not finite, g is WORST or f
      overflows), h [B, K] (non-finite replaced by WORST) and bad [B, K]
      (h not finite).
    """
    bad = ~jnp.isfinite(h)
    h = jnp.where(bad, WORST, h).astype(jnp.float32)
    f = g + jnp.float32(lam) * h
    poisoned = bad | reward_bad | (g <= POISON_LIMIT) | ~jnp.isfinite(f) | (
        f <= POISON_LIMIT)
    return jnp.where(poisoned, WORST, f), h, bad


def _expand(s: _LoopState, node: jax.Array, expanding: jax.Array,
            keys: jax.Array, expand_fn: ExpandFn, config: AStarConfig,
            lookahead_fn: LookaheadFn | None) -> tuple[_LoopState, jax.Array]:
    """Expands `node` in the rows where `expanding`; returns (state, full)."""
    tree, st = s.tree, s.stats
    step_keys = jax.vmap(jax.random.fold_in)(keys, st.expansions)
    expansion: Expansion = call_if(jnp.any(expanding), expand_fn, tree,
                                   node, step_keys)
    k = check_expansion(expansion, f"expand_fn {function_name(expand_fn)}",
                        tree.batch_size, tree.max_children,
                        tree.max_step_tokens)
    g, r_bad = aggregate_reward(
        config.aggregation, node_values(tree.extra.g, node),
        node == Tree.ROOT, expansion.reward.astype(jnp.float32))
    # Orders the read of the parent's g before the in-place writes below.
    tree, g, r_bad = jax.lax.optimization_barrier((tree, g, r_bad))
    valid = expansion.valid.astype(bool) & expanding[:, None]
    num_valid = jnp.sum(valid, axis=1, dtype=jnp.int32)
    full = num_valid > tree.extra.num_free
    recycled = jnp.zeros_like(num_valid)
    if config.when_full == "recycle":
        # A row frees at most its deficit, so add_children below refills
        # (and rewrites) every freed slot: no need to reset their fields.
        tree, recycled = recycle(tree, num_valid, max_victims=k,
                                 reset_fields=False)
    if config.heuristic == "edge":
        f, h, h_bad = priority(g, expansion.q_value.astype(jnp.float32),
                               config.lam, r_bad)
    else:
        f, h, h_bad = g, jnp.zeros_like(g), jnp.zeros_like(r_bad)
    stored = expansion._replace(
        valid=valid, reward=jnp.where(jnp.isfinite(expansion.reward),
                                      expansion.reward, WORST),
        terminal=expansion.terminal.astype(bool))
    tree, child = add_children(tree, node, stored, g, h, f, expanding)
    created = child >= 0
    made_any = jnp.any(created, axis=1)
    generated = jnp.where(expanding, expansion.generated_tokens, 0)
    calls = expanding.astype(jnp.int32)
    if config.heuristic == "lookahead":
        look_keys = jax.vmap(lambda key: jax.random.split(
            jax.random.fold_in(key, LOOKAHEAD_SALT), k))(step_keys)
        look: Lookahead = call_if(jnp.any(created), lookahead_fn, tree,
                                  child, look_keys)
        check_lookahead(look, f"lookahead_fn {function_name(lookahead_fn)}",
                        tree.batch_size, k)
        f, h, h_bad = priority(g, look.value.astype(jnp.float32), config.lam,
                               r_bad)
        tree = set_scores(tree, child, h, f)
        generated = generated + jnp.where(made_any, look.generated_tokens, 0)
        calls = calls + made_any
    depth = jnp.max(jnp.where(created, node_values(tree.depth, child), 0), 1)
    bad = jnp.sum(created & r_bad, 1) + jnp.sum(created & h_bad, 1)

    def count(mask):                 # An optional [B, K] Expansion flag.
        if mask is None:
            return 0
        return jnp.sum(mask.astype(bool) & expanding[:, None], axis=1,
                       dtype=jnp.int32)

    st = st.replace(
        expansions=st.expansions + expanding,
        generated_tokens=st.generated_tokens + generated,
        model_calls=st.model_calls + calls,
        max_depth=jnp.maximum(st.max_depth, depth),
        nan_count=st.nan_count + bad.astype(jnp.int32),
        dropped=st.dropped + num_valid - jnp.sum(created, 1, dtype=jnp.int32),
        recycled=st.recycled + recycled,
        truncated=st.truncated + count(expansion.truncated),
        overflow=st.overflow + count(expansion.overflow))
    return s._replace(tree=tree, stats=st), full


def _pop(s: _LoopState, config: AStarConfig, *, finishing_only: bool
         ) -> tuple[_LoopState, jax.Array, jax.Array]:
    """Pops every unfinished row's best OPEN node and settles the statuses
    that need no expansion; returns (state, node [B], expanding [B]).

    With `finishing_only`, only the rows whose pop ends their search
    without an expansion take part: a terminal node that completes their
    trajectories, no OPEN node, or a non-terminal node past the expansion
    budget (see `_iteration`); the other rows are left as they are.
    """
    tree = s.tree
    nodes: AStarNodes = tree.extra
    b, n = nodes.status.shape
    rows = jnp.arange(b)
    running = s.stats.status == RUNNING
    node = best_open_node(tree)
    has_open = node_values(nodes.status, node) == OPEN
    terminal = node_values(tree.terminal, node)
    budget_left = s.stats.expansions < config.max_expansions
    if finishing_only:
        running = running & (
            ~has_open | (terminal & (s.num_found + 1
                                     >= config.num_trajectories))
            | (~terminal & ~budget_left))
    live = running & has_open
    pop_terminal = live & terminal
    expanding = live & ~terminal & budget_left
    popped = pop_terminal | expanding

    popped_f = node_values(nodes.f, node)
    # The barrier orders every read of the node arrays above before the
    # in-place writes below; without it XLA copies f every iteration.
    tree, popped_f = jax.lax.optimization_barrier((tree, popped_f))
    nodes = tree.extra
    nodes = nodes.replace(status=nodes.status.at[
        rows, jnp.where(popped, node, n)].set(CLOSED, mode="drop"))
    if finishing_only:
        # Nothing is added to these rows: the closed node's block is
        # rescanned here (add_children does it after an expansion).
        nodes = refresh_slots(nodes, jnp.where(popped, node, -1)[:, None])
    tree = tree.replace(extra=nodes)
    pop_slot = jnp.where(popped, s.num_pops, config.max_pops)
    found_slot = jnp.where(pop_terminal, s.num_found,
                           config.num_trajectories)
    num_found = s.num_found + pop_terminal
    status = jnp.where(running & ~has_open, EXHAUSTED, s.stats.status)
    status = jnp.where(live & ~terminal & ~budget_left, BUDGET, status)
    status = jnp.where(pop_terminal & (num_found >= config.num_trajectories),
                       SOLVED, status)
    s = s._replace(
        tree=tree,
        pop_order=s.pop_order.at[rows, pop_slot].set(node, mode="drop"),
        num_pops=s.num_pops + popped,
        trajectories=s.trajectories.at[rows, found_slot].set(
            node, mode="drop"),
        trajectory_f=s.trajectory_f.at[rows, found_slot].set(
            popped_f, mode="drop"),
        num_found=num_found, stats=s.stats.replace(status=status))
    return s, node, expanding


def _iteration(s: _LoopState, keys: jax.Array, expand_fn: ExpandFn,
               config: AStarConfig, lookahead_fn: LookaheadFn | None, *,
               finish_ahead: bool) -> _LoopState:
    """One pop (and possibly one expansion) for every unfinished row; with
    `finish_ahead`, then the pop of every row whose next pop would end it
    without an expansion.

    That second pop finishes such a row in this iteration instead of the
    next (a solved row does not wait an iteration for its terminal pop), so
    a shrinking batch drops it one iteration sooner; every row's pops,
    their order and its statistics are the same either way. It costs a
    second selection per iteration, which only a shrinking batch repays.
    """
    s, node, expanding = _pop(s, config, finishing_only=False)
    s, full = _expand(s, node, expanding, keys, expand_fn, config,
                      lookahead_fn)
    if config.when_full == "stop":
        s = s._replace(stats=s.stats.replace(status=jnp.where(
            expanding & full, FULL, s.stats.status)))
    if finish_ahead:
        s, _, _ = _pop(s, config, finishing_only=True)
    return s


def _without_models(s: _LoopState) -> tuple[_LoopState, object]:
    """Splits off the models an `extra` may carry (`CachedAStarNodes`):
    every other array of the loop state has the batch as its first axis."""
    extra = s.tree.extra
    models = getattr(extra, "models", None)
    if models is None:
        return s, None
    return s._replace(tree=s.tree.replace(extra=extra.replace(
        models=None))), models


def _with_models(s: _LoopState, models) -> _LoopState:
    if models is None:
        return s
    return s._replace(tree=s.tree.replace(extra=s.tree.extra.replace(
        models=models)))


def _take_rows(s: _LoopState, rows: jax.Array) -> _LoopState:
    """The loop state of the given rows [R] (a batch of R rows)."""
    s, models = _without_models(s)
    return _with_models(jax.tree.map(lambda a: a[rows], s), models)


def _put_rows(full: _LoopState, rows: jax.Array,
              part: _LoopState) -> _LoopState:
    """`full` with its rows [R] replaced by the R rows of `part`."""
    full, models = _without_models(full)
    part, _ = _without_models(part)
    return _with_models(jax.tree.map(lambda f, p: f.at[rows].set(p),
                                     full, part), models)


def shrink_widths(batch: int, min_rows: int, ratio: float) -> list[int]:
    """The batch widths of a shrinking search: batch, then each stage
    ceil(ratio x the previous), never below min_rows (at least 1)."""
    widths = [batch]
    while True:
        nxt = max(min_rows, 1, math.ceil(widths[-1] * ratio))
        if nxt >= widths[-1]:
            return widths
        widths.append(nxt)


def shrink_schedule(expansions, widths: list[int]) -> list[int]:
    """The batch width of every iteration of a shrinking search (host
    side, for cost accounting), given each row's expansion count [B].

    With finish-ahead a row runs for exactly its expansions when it never
    pops a terminal node without finishing (num_trajectories = 1); the
    running rows move to the next width as soon as they fit in it.
    """
    counts = [int(e) for e in expansions]
    calls, stage = [], 0
    for t in range(max(counts, default=0)):
        calls.append(widths[stage])
        running = sum(e > t + 1 for e in counts)
        while stage + 1 < len(widths) and running <= widths[stage + 1]:
            stage += 1
    return calls


def _search_shrinking(init: _LoopState, keys: jax.Array, iterate,
                      widths: list[int]) -> _LoopState:
    """Runs `iterate` until every row has finished, moving the running rows
    to the next, narrower batch of `widths` as soon as they fit in it (see
    `AStarConfig.shrink_rows`).

    Stages are unrolled at trace time, each its own `lax.while_loop`; the
    running rows move to the front (stable), so every running row is in the
    next stage. With one width there is one stage: the plain loop over the
    whole batch.
    """
    full, s = None, init
    origin = jnp.arange(init.num_pops.shape[0])
    # Each stage runs until the running rows fit in the next width (the
    # last one until none runs).
    for limit in widths[1:] + [0]:

        def cond(s, limit=limit):
            return jnp.sum(s.stats.status == RUNNING) > limit

        s = jax.lax.while_loop(cond, lambda s, k=keys: iterate(s, k), s)
        # The first stage holds every row in place: nothing to scatter.
        full = s if full is None else _put_rows(full, origin, s)
        if limit:
            order = jnp.argsort(s.stats.status != RUNNING,
                                stable=True)[:limit]
            s, keys, origin = (_take_rows(s, order), keys[order],
                               origin[order])
    return full


def astar_search(expand_fn: ExpandFn, tree: Tree, keys: jax.Array, *,
                 config: AStarConfig,
                 lookahead_fn: LookaheadFn | None = None) -> SearchResult:
    """Runs A* on B problems at once until every row has finished.

    jit-compatible with `expand_fn`, `config` and `lookahead_fn` static; the
    whole search is one `lax.while_loop`.

    Args:
      expand_fn: proposes and scores K children per row (`ExpandFn`).
      tree: the starting trees, usually `init_tree(...)` (N slots per row
        equal to `config.num_nodes`, C >= K edges per node). A tree without
        A* state (`tree.extra` None) must hold only its root, which becomes
        OPEN; a tree with `AStarNodes` (`init_astar_tree`, or an earlier
        search) is searched as it is, its OPEN nodes included.
      keys: [B] PRNG keys, one per problem.
      config: static search settings.
      lookahead_fn: required when `config.heuristic == 'lookahead'`.

    The outputs of `expand_fn` and `lookahead_fn` are checked when traced
    (`interfaces.check_expansion`): a wrong shape or dtype, a step wider
    than the tree's T or more children than its C edges raises a
    ValueError naming the function and the field.

    Returns:
      `SearchResult` with the final trees, the found trajectories, the pop
      order and the statistics.
    """
    if tree.capacity != config.num_nodes:
        raise ValueError(f"the tree has {tree.capacity} slots per row but "
                         f"config.num_nodes is {config.num_nodes}")
    if config.heuristic == "lookahead" and lookahead_fn is None:
        raise ValueError("heuristic='lookahead' needs a lookahead_fn")
    if tree.extra is None:
        tree = tree.replace(extra=astar_nodes(tree))
    elif not isinstance(tree.extra, AStarNodes):
        raise ValueError(
            "astar_search: tree.extra must be None or AStarNodes, got "
            f"{type(tree.extra).__name__}")
    b = tree.batch_size
    check_keys("astar_search", keys, b)
    m = config.num_trajectories
    zeros = jnp.zeros((b,), jnp.int32)
    stats = SearchStats(
        expansions=zeros, generated_tokens=zeros, model_calls=zeros,
        max_depth=jnp.max(tree.depth, axis=1), nan_count=zeros,
        dropped=zeros, recycled=zeros, status=zeros + RUNNING,
        truncated=zeros, overflow=zeros)
    init = _LoopState(
        tree=tree, trajectories=jnp.full((b, m), -1, jnp.int32),
        trajectory_f=jnp.full((b, m), -jnp.inf, jnp.float32),
        num_found=zeros, num_pops=zeros, stats=stats,
        pop_order=jnp.full((b, config.max_pops), -1, jnp.int32))
    # shrink_rows 0: a single stage of all B rows, the plain loop.
    widths = shrink_widths(b, config.shrink_rows or b, config.shrink_ratio)
    s = _search_shrinking(
        init, keys, lambda s, k: _iteration(
            s, k, expand_fn, config, lookahead_fn,
            finish_ahead=len(widths) > 1), widths)

    found = jnp.arange(m) < s.num_found[:, None]
    best_i = jnp.argmax(jnp.where(found, s.trajectory_f, -jnp.inf), axis=1)
    best = jnp.where(s.num_found > 0,
                     jnp.take_along_axis(s.trajectories, best_i[:, None],
                                         axis=1)[:, 0], -1)
    return SearchResult(best=best, **s._asdict())
