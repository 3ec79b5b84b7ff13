"""Search over reasoning steps: the shared tree, A* (Q*), eta-MCTS
(AlphaLLM), baselines, beam search."""

from qstar_jax.search.alphallm import (AlphaLLMConfig, AlphaLLMModels,
                                       calculator_step_check, evaluate_nodes,
                                       mcts_search, propose_options)
from qstar_jax.search.astar import (AStarConfig, SearchResult, SearchStats,
                                    astar_search, shrink_schedule,
                                    shrink_widths)
from qstar_jax.search.astar_tree import AStarNodes, init_astar_tree
from qstar_jax.search.baselines import (best_of_n, majority_vote,
                                        sample_solutions, solution_scores)
from qstar_jax.search.beam import BeamConfig, BeamResult, beam_search
from qstar_jax.search.interfaces import (ExpandFn, Expansion, Lookahead,
                                         LookaheadFn)
from qstar_jax.search.mcts import run_mcts
from qstar_jax.search.mcts_answers import terminal_leaves, weighted_vote
from qstar_jax.search.mcts_interfaces import (EvaluateFn, Evaluation,
                                              Options, ProposeFn)
from qstar_jax.search.mcts_types import (MCTSConfig, MCTSNodes, MCTSResult,
                                         MCTSStats)
from qstar_jax.search.qstar import (QStarConfig, QStarModels, expand_nodes,
                                    expand_states, lookahead_values,
                                    qstar_search)
from qstar_jax.search.tree import (Tree, init_tree, state_tokens,
                                   trajectory_steps)

__all__ = [
    "AStarConfig", "AStarNodes", "AlphaLLMConfig", "AlphaLLMModels",
    "BeamConfig", "BeamResult", "EvaluateFn", "Evaluation", "ExpandFn",
    "Expansion", "Lookahead", "LookaheadFn", "MCTSConfig", "MCTSNodes",
    "MCTSResult", "MCTSStats", "Options", "ProposeFn", "QStarConfig",
    "QStarModels", "SearchResult", "SearchStats", "Tree", "astar_search",
    "beam_search", "best_of_n", "calculator_step_check", "evaluate_nodes",
    "expand_nodes", "expand_states", "init_astar_tree", "init_tree",
    "lookahead_values", "majority_vote", "mcts_search", "propose_options",
    "qstar_search", "run_mcts", "sample_solutions", "shrink_schedule",
    "shrink_widths", "solution_scores", "state_tokens", "terminal_leaves",
    "trajectory_steps", "weighted_vote",
]
