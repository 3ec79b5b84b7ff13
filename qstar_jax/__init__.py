"""qstar_jax: learned deliberation over LLM reasoning steps in JAX.

Subpackages: `models` (decoder, checkpoints, tokenizers), `sampling` (KV cache,
decoding, step proposer), `tasks` (problems, grading, calculator), `search`
(A*/Q*, eta-MCTS, baselines), `solver` (`qstar_jax.solve`: a task's problems
to graded answers in one call, any method).
"""

__version__ = "0.1.0"

_SOLVER_NAMES = ("solve", "SolverModels", "GreedyConfig", "BestOfNConfig",
                 "MajorityVoteConfig", "MCTSSolveConfig", "METHODS")


def __getattr__(name):
    # The solver imports the whole library; load it on first use only, so
    # `import qstar_jax.models` stays light.
    if name in _SOLVER_NAMES:
        from qstar_jax import solver
        return getattr(solver, name)
    raise AttributeError(f"module 'qstar_jax' has no attribute {name!r}")
