"""qstar_jax: learned deliberation over LLM reasoning steps in JAX.

Subpackages: `models` (decoder, checkpoints, tokenizers), `sampling` (KV cache,
decoding, step proposer), `tasks` (problems, grading, calculator).
"""

__version__ = "0.1.0"
