"""A plain-Python heapq A* with the same semantics as `astar_search`.

One problem at a time, Python objects and a binary heap: the independent
reference the batched JAX search is tested against, and the baseline of the
search benchmark. It reproduces, for any environment with the
`ReferenceEnv` interface (for example `SyntheticEnv`):

* slot numbering: children take the FREE slots in increasing index order,
  in proposal order (freed slots, all below the high-water mark, first);
* the pop rule: largest f, ties to the lowest slot index (heap key
  (-f, slot)); stale heap entries of recycled slots are skipped;
* g/h/f, aggregation, lambda, the NaN rule and the WORST score;
* the stopping rules (SOLVED, BUDGET, EXHAUSTED, FULL) and recycling (the
  lowest-f OPEN nodes, ties to the highest index);
* every statistic of `SearchStats`.

Scores are Python floats (float64); with dyadic rewards, Q-values and
lambda they equal the float32 scores of the JAX search exactly.
"""

from __future__ import annotations

import dataclasses
import heapq
import math
from typing import Protocol, Sequence

from qstar_jax.search.astar import (BUDGET, EXHAUSTED, FULL, POISON_LIMIT,
                                    RUNNING, SOLVED, WORST, AStarConfig)
from qstar_jax.search.astar_tree import CLOSED, FREE, OPEN


class ReferenceChild(Protocol):
    """What the reference reads of a proposed child."""

    state: int
    tokens: Sequence[int]
    log_prob: float
    valid: bool
    terminal: bool
    reward: float
    q_value: float


class ReferenceExpansionLike(Protocol):
    """The K children of a state and the tokens spent proposing them."""

    children: Sequence[ReferenceChild]
    generated_tokens: int


class ReferenceEnv(Protocol):
    """A step environment addressed by integer states."""

    def expand(self, state: int, depth: int) -> ReferenceExpansionLike:
        """The K children of `state` (at `depth`)."""

    def lookahead(self, state: int, depth: int,
                  terminal: bool) -> tuple[float, int]:
        """(h, generated tokens) of a newly created state."""


@dataclasses.dataclass
class ReferenceResult:
    """The outcome of `reference_astar` for one problem.

    Attributes:
      pop_order: popped slots in order.
      trajectories: terminal slots in the order found.
      trajectory_f: their f.
      best: the found slot with the largest f (first found on ties), or -1.
      status: SOLVED, BUDGET, EXHAUSTED or FULL.
      expansions, generated_tokens, model_calls, max_depth, nan_count,
        dropped, recycled: as in `SearchStats`.
      parent, action_from_parent, depth, tokens, g, h, f, node_status,
        terminal: the final tree, one list entry per slot ([N]);
        action_from_parent is the child's proposal index k (-1: none).
      num_nodes: slots ever used.
    """

    pop_order: list[int]
    trajectories: list[int]
    trajectory_f: list[float]
    best: int
    status: int
    expansions: int
    generated_tokens: int
    model_calls: int
    max_depth: int
    nan_count: int
    dropped: int
    recycled: int
    parent: list[int]
    action_from_parent: list[int]
    depth: list[int]
    tokens: list[tuple[int, ...]]
    g: list[float]
    h: list[float]
    f: list[float]
    node_status: list[int]
    terminal: list[bool]
    num_nodes: int

    def steps(self, node: int) -> list[list[int]]:
        """The step token lists along the path to `node`, root's child
        first."""
        steps = []
        while node > 0:
            steps.append(list(self.tokens[node]))
            node = self.parent[node]
        return steps[::-1]


def aggregate_reward_py(aggregation: str, parent_g: float, from_root: bool,
                        reward: float) -> tuple[float, bool]:
    """(g, reward was not finite): the Python twin of `aggregate_reward`."""
    bad = not math.isfinite(reward) and aggregation != "none"
    r = WORST if not math.isfinite(reward) else reward
    if aggregation == "none":
        g = 0.0
    elif aggregation == "last" or from_root:
        g = r
    elif aggregation == "min":
        g = min(parent_g, r)
    elif aggregation == "max":
        g = max(parent_g, r)
    elif aggregation == "sum":
        g = parent_g + r
    else:
        raise ValueError(f"unknown aggregation {aggregation!r}")
    if not (math.isfinite(g) and g > POISON_LIMIT):
        g = WORST
    return g, bad


def priority_py(g: float, h: float, lam: float,
                reward_bad: bool) -> tuple[float, float, bool]:
    """(f, h, h was not finite): the Python twin of `priority`."""
    bad = not math.isfinite(h)
    h = WORST if bad else h
    f = g + lam * h
    if (bad or reward_bad or g <= POISON_LIMIT or not math.isfinite(f)
            or f <= POISON_LIMIT):
        f = WORST
    return f, h, bad


def reference_astar(env: ReferenceEnv, root_state: int,
                    config: AStarConfig) -> ReferenceResult:
    """A* on one problem, with the semantics of `astar_search`.

    Args:
      env: the environment (`ReferenceEnv`).
      root_state: the root's state id.
      config: the search settings (N = config.num_nodes slots).

    Returns:
      `ReferenceResult`.
    """
    n = config.num_nodes
    lookahead = config.heuristic == "lookahead"
    parent, depth, action = [-1] * n, [0] * n, [-1] * n
    state, tokens = [0] * n, [()] * n
    g, h, f = [0.0] * n, [0.0] * n, [0.0] * n
    status, terminal, gen = [FREE] * n, [False] * n, [0] * n
    reward_bad = [False] * n
    status[0], state[0] = OPEN, root_state
    num_nodes = 1
    freed: list[int] = []                      # heap of freed slots
    heap: list[tuple[float, int, int]] = [(-0.0, 0, 0)]
    pop_order, found, found_f = [], [], []
    stat = dict(expansions=0, generated_tokens=0, model_calls=0, max_depth=0,
                nan_count=0, dropped=0, recycled=0)
    result = RUNNING

    def free(slot: int) -> None:
        parent[slot], depth[slot], state[slot], tokens[slot] = -1, 0, 0, ()
        action[slot] = -1
        g[slot] = h[slot] = f[slot] = 0.0
        status[slot], terminal[slot] = FREE, False
        gen[slot] += 1
        heapq.heappush(freed, slot)

    while result == RUNNING:
        while heap and (status[heap[0][1]] != OPEN
                        or gen[heap[0][1]] != heap[0][2]):
            heapq.heappop(heap)                # stale entry
        if not heap:
            result = EXHAUSTED
            break
        node = heap[0][1]
        if terminal[node]:
            heapq.heappop(heap)
            status[node] = CLOSED
            pop_order.append(node)
            found.append(node)
            found_f.append(f[node])
            if len(found) >= config.num_trajectories:
                result = SOLVED
            continue
        if stat["expansions"] >= config.max_expansions:
            result = BUDGET
            break
        heapq.heappop(heap)
        status[node] = CLOSED
        pop_order.append(node)
        expansion = env.expand(state[node], depth[node])
        stat["expansions"] += 1
        stat["model_calls"] += 1
        stat["generated_tokens"] += expansion.generated_tokens
        children = [(k, c) for k, c in enumerate(expansion.children)
                    if c.valid]
        num_free = len(freed) + n - num_nodes
        full = len(children) > num_free
        if full and config.when_full == "recycle":
            deficit = len(children) - num_free
            victims = sorted((f[i], -i) for i in range(n)
                             if status[i] == OPEN)[:deficit]
            for _, neg in victims:
                free(-neg)
            stat["recycled"] += len(victims)
        created = []
        for k, child in children:
            if freed:
                slot = heapq.heappop(freed)
            elif num_nodes < n:
                slot, num_nodes = num_nodes, num_nodes + 1
            else:
                stat["dropped"] += 1
                continue
            gc, r_bad = aggregate_reward_py(config.aggregation, g[node],
                                            node == 0, child.reward)
            parent[slot], depth[slot] = node, depth[node] + 1
            action[slot] = k
            state[slot], tokens[slot] = child.state, tuple(child.tokens)
            status[slot], terminal[slot] = OPEN, bool(child.terminal)
            g[slot], reward_bad[slot] = gc, r_bad
            if not lookahead:
                f[slot], h[slot], h_bad = priority_py(gc, child.q_value,
                                                      config.lam, r_bad)
            else:
                f[slot], h[slot], h_bad = gc, 0.0, False
            stat["nan_count"] += r_bad + h_bad
            stat["max_depth"] = max(stat["max_depth"], depth[slot])
            created.append(slot)
        if lookahead and created:
            stat["model_calls"] += 1
            for slot in created:
                value, spent = env.lookahead(state[slot], depth[slot],
                                             terminal[slot])
                stat["generated_tokens"] += spent
                f[slot], h[slot], h_bad = priority_py(
                    g[slot], value, config.lam, reward_bad[slot])
                stat["nan_count"] += h_bad
        for slot in created:
            heapq.heappush(heap, (-f[slot], slot, gen[slot]))
        if full and config.when_full == "stop":
            result = FULL

    best = -1
    if found:
        best = found[max(range(len(found)), key=lambda i: (found_f[i], -i))]
    return ReferenceResult(
        pop_order=pop_order, trajectories=found, trajectory_f=found_f,
        best=best, status=result, **stat, parent=parent,
        action_from_parent=action, depth=depth,
        tokens=tokens, g=g, h=h, f=f, node_status=status, terminal=terminal,
        num_nodes=num_nodes)
