"""One call from a task to graded answers, for every method of the library.

Example:
  >>> models = SolverModels(policy=policy, tokenizer=tokenizer, prm=prm,
  ...                       qvm=qvm, add_bos=True)
  >>> report = solve(task, task.problems("test")[:64], method="qstar",
  ...                models=models, config=qstar_config, key=0)
  >>> report.summary["accuracy"], report.records[0].text
"""

from qstar_jax.solver.records import (Outcome, ProblemRecord, SolveReport,
                                      grade_outcome, summarize)
from qstar_jax.solver.sampled import (BestOfNConfig, GreedyConfig,
                                      MajorityVoteConfig, solution_end)
from qstar_jax.solver.searched import MCTS_ANSWERS, MCTSSolveConfig
from qstar_jax.solver.solve import (METHODS, Method, SolverModels,
                                    problem_keys, solve)

__all__ = [
    "BestOfNConfig", "GreedyConfig", "MCTSSolveConfig", "MCTS_ANSWERS",
    "METHODS", "MajorityVoteConfig", "Method", "Outcome", "ProblemRecord",
    "SolveReport", "SolverModels", "grade_outcome", "problem_keys",
    "solution_end", "solve", "summarize",
]
