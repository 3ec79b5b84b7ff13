"""Selection rules of the plain-Python reference MCTS, in numpy float32.

`ReferenceSelection` scores one node's C edges the way `mcts_select` does,
operation for operation in float32 (so the two agree except where the two
libraries' transcendental functions round a near tie differently). The
reference's search state (`reference_mcts._Search`) provides the per-slot
lists it reads: `children`, `priors`, `visits`, `value_sum`, `reward`,
`raw`, `depth`, `importance`, and `config`, `gumbel`, `table`, `c`.
"""

from __future__ import annotations

import numpy as np

F = np.float32


class ReferenceSelection:
    """Edge statistics, Q transforms, the three rules and the width."""

    def edge_stats(self, x: int, pending: list[int]) -> dict:
        cfg = self.config
        vl = F(cfg.virtual_loss)
        child = np.asarray(self.children[x])
        exists = child >= 0
        extra = np.asarray([F(pending[y]) * vl if y >= 0 else F(0)
                            for y in child], F)
        visits = np.asarray([F(self.visits[y]) if y >= 0 else F(0)
                             for y in child], F) + extra
        total = np.asarray([self.value_sum[y] if y >= 0 else F(0)
                            for y in child], F) + extra * F(cfg.virtual_value)
        reward = np.asarray([self.reward[y] for y in np.maximum(child, 0)],
                            F)
        q = np.where(visits > 0, reward + F(cfg.discount) * (
            total / np.maximum(visits, F(1))), F(0)).astype(F)
        logits = np.asarray(self.priors[x], F)
        valid = exists if cfg.expansion == "widening" else logits > -np.inf
        logits = np.where(valid, logits, F(-np.inf)).astype(F)
        extra_x = F(pending[x]) * vl
        node_visits = F(self.visits[x]) + extra_x
        node_value = (self.value_sum[x] + extra_x * F(cfg.virtual_value)) / \
            max(node_visits, F(1))
        return dict(child=child, visits=visits, q=q, logits=logits,
                    valid=valid, n=F(node_visits), v=F(node_value),
                    raw=self.raw[x])

    @staticmethod
    def probs(e: dict) -> np.ndarray:
        top = np.max(np.where(e["valid"], e["logits"], F(-np.inf)))
        top = top if np.isfinite(top) else F(0)
        w = np.where(e["valid"], np.exp(e["logits"] - top), F(0)).astype(F)
        return (w / max(np.sum(w, dtype=F), F(1e-30))).astype(F)

    def transformed(self, e: dict) -> np.ndarray:
        visited = e["visits"] > 0
        if self.config.q_transform == "raw":
            return np.where(visited, e["q"], e["v"]).astype(F)
        safe = np.where(visited, e["q"], e["v"])
        low = min(e["v"], np.min(safe))
        high = max(e["v"], np.max(safe))
        done = np.where(visited, e["q"], low).astype(F)
        return ((done - low) / max(F(high - low), F(1e-8))).astype(F)

    def completed(self, e: dict) -> np.ndarray:
        cfg = self.config
        visited = e["visits"] > 0
        p = np.maximum(self.probs(e), np.finfo(F).tiny)
        sum_n = np.sum(e["visits"], dtype=F)
        sum_p = np.sum(np.where(visited, p, F(0)), dtype=F)
        weighted = np.sum(np.where(visited, p * e["q"] / (
            sum_p if sum_p != 0 else F(1)), F(0)), dtype=F)
        mixed = (e["raw"] + sum_n * weighted) / (sum_n + F(1))
        q = np.where(visited, e["q"], F(mixed)).astype(F)
        low = np.min(np.where(e["valid"], q, F(np.inf)))
        high = np.max(np.where(e["valid"], q, F(-np.inf)))
        low = low if np.isfinite(low) else F(0)
        high = high if np.isfinite(high) else F(0)
        q = (q - low) / max(F(high - low), F(1e-8))
        scale = F(cfg.gumbel_maxvisit_init) + np.max(e["visits"])
        return (scale * F(cfg.gumbel_value_scale) * q).astype(F)

    def halving(self, e: dict, q: np.ndarray, wanted: F) -> np.ndarray:
        top = np.max(e["logits"])
        logits = e["logits"] - (top if np.isfinite(top) else F(0))
        score = np.maximum(F(-1e9), self.gumbel + logits + q)
        keep = (e["visits"] == wanted) & e["valid"]
        return np.where(keep, score, F(-np.inf)).astype(F)

    def scores(self, rule: str, e: dict, at_root: bool) -> np.ndarray:
        cfg = self.config
        if rule == "ucb":
            explore = np.sqrt(F(2) * np.log(e["n"]) / np.maximum(
                e["visits"], F(1)))
            s = self.transformed(e) + F(cfg.c_ucb) * explore
            return np.where(e["visits"] > 0, s, F(np.inf)).astype(F)
        if rule == "puct":
            pb_c = F(cfg.pb_c_init) + np.log(
                (e["n"] + F(cfg.pb_c_base) + F(1)) / F(cfg.pb_c_base))
            policy = np.sqrt(e["n"]) * pb_c * self.probs(e) / (
                e["visits"] + F(1))
            return (self.transformed(e) + policy).astype(F)
        if at_root:
            m = min(cfg.max_considered, int(np.sum(e["valid"])))
            sim = min(int(np.sum(e["visits"], dtype=F)),
                      cfg.num_simulations - 1)
            return self.halving(e, self.completed(e),
                                F(self.table[m, sim]))
        logits = np.where(e["valid"], e["logits"] + self.completed(e),
                          F(-np.inf))
        top = np.max(logits)
        w = np.where(e["valid"], np.exp(logits - (
            top if np.isfinite(top) else F(0))), F(0)).astype(F)
        p = w / max(np.sum(w, dtype=F), F(1e-30))
        return (p - e["visits"] / (F(1) + np.sum(e["visits"], dtype=F))
                ).astype(F)

    def select(self, x: int, pending, blocked) -> tuple[int, bool]:
        cfg = self.config
        e = self.edge_stats(x, pending)
        allowed = e["valid"] & ~blocked
        rule = cfg.root_rule if x == 0 else cfg.selection
        score = np.where(allowed, self.scores(rule, e, x == 0), F(-np.inf))
        best = np.max(score)
        pick = allowed & ((score == best) | (best == -np.inf))
        return int(np.argmax(pick)), bool(np.any(allowed))

    def width(self, x: int) -> int:
        cfg, t = self.config, self.depth[x]
        c_min = cfg.c_min[min(t, len(cfg.c_min) - 1)]
        c_max = cfg.c_max[min(t, len(cfg.c_max) - 1)]
        wanted = int(np.floor(F(cfg.alpha) * self.importance[x])) + 1
        return max(c_min, min(wanted, c_max))
