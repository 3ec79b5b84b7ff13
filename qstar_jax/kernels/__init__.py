"""Pallas kernels, each beside the pure-jnp reference it must match.

The library's kernels live here (inside the package, so library code can
import them). Every code path in `qstar_jax` also runs without them, in pure
jnp on CPU, GPU and TPU; a kernel is chosen where the backend compiles it.

* `tree_decode`: decode attention over a search node's [prompt KV] + [path
  KV gathered by node] + [own suffix], merged by log-sum-exp. Its reference
  is `tree_decode_reference` (and `models.tree_attention`, the decoder's
  pure-jnp path); `search.qstar_cached` uses the kernel on GPU and TPU
  (`attention='auto'`).
"""
