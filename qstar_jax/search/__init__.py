"""Search over reasoning steps: shared tree arrays, A* (Q*), baselines, beam
search."""

from qstar_jax.search.astar import (AStarConfig, SearchResult, SearchStats,
                                    astar_search)
from qstar_jax.search.baselines import (best_of_n, majority_vote,
                                        sample_solutions, solution_scores)
from qstar_jax.search.beam import BeamConfig, BeamResult, beam_search
from qstar_jax.search.interfaces import (ExpandFn, Expansion, Lookahead,
                                         LookaheadFn)
from qstar_jax.search.qstar import (QStarConfig, QStarModels, expand_nodes,
                                    expand_states, lookahead_values,
                                    qstar_search)
from qstar_jax.search.tree import (Tree, init_tree, state_tokens,
                                   trajectory_steps)

__all__ = [
    "AStarConfig", "BeamConfig", "BeamResult", "ExpandFn", "Expansion",
    "Lookahead", "LookaheadFn", "QStarConfig", "QStarModels", "SearchResult",
    "SearchStats", "Tree", "astar_search", "beam_search", "best_of_n",
    "expand_nodes", "expand_states", "init_tree", "lookahead_values",
    "majority_vote", "qstar_search", "sample_solutions", "solution_scores",
    "state_tokens", "trajectory_steps",
]
