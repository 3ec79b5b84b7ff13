"""A plain-Python MCTS with the semantics of `run_mcts`, one problem at a time.

The independent reference the batched search is tested against node for
node: Python lists per slot, one simulation after another, edit distances by
the textbook dynamic programme. It reproduces the slot numbering, the
selection rules with virtual loss (scores in numpy float32, operation for
operation), widening with adaptive branching, state merge, the NaN rule,
the full-tree rule, the mean backup, the answers and every statistic. With
dyadic environment scores (`synthetic_mcts`) every sum is exact, so the two
agree except where float32 transcendental functions of the two libraries
round differently on a near tie.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Protocol, Sequence

import numpy as np

from qstar_jax.search.mcts_select import considered_table
from qstar_jax.search.mcts_types import (COLLISION, DONE, EXPAND, FULL,
                                         REVISIT, RUNNING, MCTSConfig)
from qstar_jax.search.reference_selection import F, ReferenceSelection

FAR = 1 << 30


class ReferenceEnv(Protocol):
    """What the reference calls (see `synthetic_mcts`)."""

    def propose(self, state: int, depth: int, edge: int):
        """A `PyProposal`: R candidates for edge `edge` of `state`."""

    def evaluate(self, state: int, depth: int, terminal: bool):
        """A `PyEvaluation` of a state."""


def levenshtein(a: Sequence[int], b: Sequence[int]) -> int:
    """Edit distance between token sequences (textbook programme)."""
    row = list(range(len(b) + 1))
    for i, x in enumerate(a, 1):
        prev, row = row, [i] + [0] * len(b)
        for j, y in enumerate(b, 1):
            row[j] = min(prev[j] + 1, row[j - 1] + 1, prev[j - 1] + (x != y))
    return row[-1]


@dataclasses.dataclass
class ReferenceMCTSResult:
    """Row-level outcome of `reference_mcts` (lists over the N slots)."""

    parent: list[int]
    action_from_parent: list[int]
    depth: list[int]
    tokens: list[tuple[int, ...]]
    terminal: list[bool]
    visit_count: list[int]
    value_sum: list[float]
    raw_value: list[float]
    outcome: list[float]
    importance: list[float]
    saturated: list[bool]
    children: list[list[int]]
    priors: list[list[float]]
    num_nodes: int
    stats: dict
    root_action: int
    root_visits: list[int]
    most_visited: int
    best_value: int
    best_outcome: int


class _Search(ReferenceSelection):
    """The state of one problem's search."""

    def __init__(self, env, root_state: int, config: MCTSConfig, edges: int,
                 gumbel: Sequence[float]):
        n, self.c, self.config, self.env = config.num_nodes, edges, config, \
            env
        self.gumbel = np.asarray(gumbel, F)
        self.parent, self.action, self.depth = [-1] * n, [-1] * n, [0] * n
        self.state, self.tokens = [0] * n, [()] * n
        self.reward, self.terminal = [F(0)] * n, [False] * n
        self.visits, self.value_sum = [0] * n, [F(0)] * n
        self.raw, self.outcome = [F(0)] * n, [F(0)] * n
        self.importance, self.saturated = [F(0)] * n, [False] * n
        self.children = [[-1] * edges for _ in range(n)]
        self.priors = [[F(0)] * edges for _ in range(n)]
        self.num_nodes = 1
        self.state[0] = root_state
        self.stats = dict(simulations=0, expansions=0, revisits=0,
                          collisions=0, failed=0, dropped=0,
                          merge_rejected=0, merge_fallbacks=0,
                          generated_tokens=0, model_calls=0, nan_count=0,
                          max_depth=0, status=RUNNING,
                          truncated=0, overflow=0)  # Table envs: never.
        self.table = considered_table(config.max_considered,
                                      config.num_simulations)

    # -- scores -----------------------------------------------------------
    def clean(self, x: float) -> tuple[F, int]:
        return (F(self.config.nan_value), 1) if not math.isfinite(x) else \
            (F(x), 0)

    @staticmethod
    def clean_logit(x: float) -> tuple[F, int]:
        return (F(-np.inf), 1) if math.isnan(x) or x == math.inf else \
            (F(x), 0)

    def store(self, slot: int, ev) -> tuple[F, int]:
        value, b1 = self.clean(ev.value)
        outcome, b2 = self.clean(ev.outcome)
        self.raw[slot], self.outcome[slot] = value, outcome
        bad = b1 + b2
        if self.config.expansion == "enumerated":
            for e, logit in enumerate(ev.prior_logits):
                self.priors[slot][e], b = self.clean_logit(logit)
                bad += b
        return value, bad

    # -- one simulation's descent -------------------------------------------
    def descend(self, pending, reserved) -> tuple[int, int, int, list[int]]:
        cfg, x, path = self.config, 0, [0]
        while True:
            mine = [e for k, p, e in reserved if k == EXPAND and p == x]
            blocked = np.zeros(self.c, bool)
            blocked[mine] = True
            leaf = self.terminal[x] or self.depth[x] >= cfg.max_depth
            count = sum(y >= 0 for y in self.children[x])
            widen = False
            if cfg.expansion == "widening":
                leaf = leaf or (self.saturated[x] and count == 0)
                free = [e for e in range(self.c)
                        if self.children[x][e] < 0 and not blocked[e]]
                widen = (not leaf and not self.saturated[x] and bool(free)
                         and count + len(mine) < self.width(x))
            else:
                leaf = leaf or not any(p > -np.inf for p in self.priors[x])
            if leaf:
                return REVISIT, x, 0, path
            if widen:
                return EXPAND, x, free[0], path
            edge, can = self.select(x, pending, blocked)
            if not can:
                return COLLISION, x, edge, path
            child = self.children[x][edge]
            if child < 0:
                return EXPAND, x, edge, path
            x = child
            path.append(x)

    # -- state merge ------------------------------------------------------
    def choose(self, parent: int, cands, kept: list) -> tuple:
        """(index, ok, rejected, fallback); kept: (parent, tokens) of
        earlier expansions of this iteration."""
        valid = [c.valid for c in cands]
        if not any(valid):
            return 0, False, 0, False
        thr = self.config.merge_threshold
        if thr <= 0:
            return valid.index(True), True, 0, False
        siblings = [self.tokens[y] for y in self.children[parent] if y >= 0]
        siblings += [tokens for p, tokens in kept if p == parent]
        dist = [min([levenshtein(c.tokens, t) for t in siblings] + [FAR])
                for c in cands]
        far = [v and d >= thr for v, d in zip(valid, dist)]
        if any(far):
            r = far.index(True)
            return r, True, sum(valid[:r]), False
        r = max(range(len(cands)),
                key=lambda i: (dist[i] if valid[i] else -1, -i))
        return r, True, sum(valid), True

    # -- one iteration ------------------------------------------------------
    def iteration(self) -> None:
        cfg, n = self.config, self.config.num_nodes
        pending = [0] * n
        sims, paths = [], []
        for _ in range(cfg.parallel):
            kind, x, edge, path = self.descend(pending, sims)
            sims.append((kind, x, edge))
            paths.append(path)
            if kind in (EXPAND, REVISIT) and cfg.parallel > 1:
                for y in path:
                    pending[y] += 1
        st = self.stats
        kept, created, leaves = [], [], []
        any_expanding = any_created = False
        rank = 0
        for s, ((kind, x, edge), path) in enumerate(zip(sims, paths)):
            if kind == COLLISION:
                st["collisions"] += 1
            if kind == REVISIT:
                st["revisits"] += 1
                leaves.append((path, self.raw[x]))
            if kind != EXPAND:
                continue
            any_expanding = True
            proposal = self.env.propose(self.state[x], self.depth[x], edge)
            cands = proposal.candidates
            st["generated_tokens"] += proposal.generated_tokens
            r, ok, rejected, fallback = self.choose(x, cands, kept)
            st["merge_rejected"] += rejected
            st["merge_fallbacks"] += fallback
            if not ok:
                st["failed"] += 1
                if cfg.expansion == "widening":
                    self.saturated[x] = True
                else:
                    self.priors[x][edge] = F(-np.inf)
                continue
            kept.append((x, cands[r].tokens))
            slot = self.num_nodes + rank
            rank += 1
            if slot >= n:
                st["dropped"] += 1
                st["status"] = FULL
                continue
            created.append((slot, x, edge, cands[r], path))
        for slot, x, edge, cand, path in created:
            reward, bad = self.clean(cand.reward)
            self.parent[slot], self.action[slot] = x, edge
            self.depth[slot] = self.depth[x] + 1
            self.state[slot], self.tokens[slot] = cand.state, cand.tokens
            self.reward[slot], self.terminal[slot] = reward, cand.terminal
            self.children[x][edge] = slot
            if cfg.expansion == "widening":
                self.priors[x][edge], b = self.clean_logit(cand.prior_logit)
                bad += b
            st["nan_count"] += bad
        self.num_nodes += len(created)
        for slot, x, edge, cand, path in created:
            any_created = True
            ev = self.env.evaluate(self.state[slot], self.depth[slot],
                                   self.terminal[slot])
            value, bad = self.store(slot, ev)
            st["nan_count"] += bad
            st["generated_tokens"] += ev.generated_tokens
            self.importance[x] = max(self.importance[x],
                                     F(abs(value - self.raw[x])))
            leaves.append((path + [slot], value))
            st["expansions"] += 1
            st["max_depth"] = max(st["max_depth"], self.depth[slot])
        st["model_calls"] += any_expanding + any_created
        for path, value in leaves:
            ret = F(value)
            for j in range(len(path) - 1, -1, -1):
                if j < len(path) - 1:
                    ret = F(self.reward[path[j + 1]] + F(cfg.discount) * ret)
                self.visits[path[j]] += 1
                self.value_sum[path[j]] = F(self.value_sum[path[j]] + ret)
            st["simulations"] += 1

    # -- answers ------------------------------------------------------------
    def answers(self) -> dict:
        cfg = self.config
        e = self.edge_stats(0, [0] * cfg.num_nodes)
        visits = [int(v) for v in e["visits"]]
        if cfg.root_rule == "gumbel":
            score = self.halving(e, self.completed(e), np.max(e["visits"]))
        else:
            score = np.where(e["valid"], e["visits"], F(-1))
        x = 0
        for _ in range(cfg.max_depth + 1):
            kids = [(self.visits[y], -k, y)
                    for k, y in enumerate(self.children[x]) if y >= 0]
            if not kids:
                break
            x = max(kids)[2]
        used = range(self.num_nodes)
        terminal = [y for y in used if self.terminal[y]]
        mean = [F(self.value_sum[y]) / F(self.visits[y]) if self.visits[y]
                else F(0) for y in range(cfg.num_nodes)]

        def best(score):
            return max(terminal, key=lambda y: (score[y], -y)) if terminal \
                else -1
        return dict(root_action=int(np.argmax(score)), root_visits=visits,
                    most_visited=x, best_value=best(mean),
                    best_outcome=best(self.outcome))


def reference_mcts(env: ReferenceEnv, root_state: int, config: MCTSConfig,
                   *, edges: int, gumbel: Sequence[float] | None = None
                   ) -> ReferenceMCTSResult:
    """MCTS on one problem with the semantics of `run_mcts`.

    Args:
      env: the environment (`ReferenceEnv`).
      root_state: the root's state id.
      config: the settings.
      edges: C, the edges per node of the matching tree.
      gumbel: the row's root Gumbel noise ([C]; zeros if None).

    Returns:
      `ReferenceMCTSResult`.
    """
    search = _Search(env, root_state, config, edges,
                     gumbel if gumbel is not None else [0.0] * edges)
    ev = env.evaluate(root_state, 0, False)
    value, bad = search.store(0, ev)
    search.visits[0], search.value_sum[0] = 1, value
    st = search.stats
    st["model_calls"], st["nan_count"] = 1, bad
    st["generated_tokens"] = ev.generated_tokens
    for _ in range(config.num_iterations):
        if st["status"] != RUNNING:
            break
        search.iteration()
    if st["status"] == RUNNING:
        st["status"] = DONE
    s = search
    return ReferenceMCTSResult(
        parent=s.parent, action_from_parent=s.action, depth=s.depth,
        tokens=s.tokens, terminal=s.terminal, visit_count=s.visits,
        value_sum=[float(v) for v in s.value_sum],
        raw_value=[float(v) for v in s.raw], outcome=[float(v) for v in
                                                      s.outcome],
        importance=[float(v) for v in s.importance], saturated=s.saturated,
        children=s.children, priors=[[float(p) for p in row]
                                     for row in s.priors],
        num_nodes=s.num_nodes, stats=dict(st), **s.answers())

