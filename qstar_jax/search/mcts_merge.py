"""State merge: which of R candidate options becomes the new child.

AlphaLLM rejects a newly sampled option whose distance to an existing
sibling is below a threshold and resamples, up to R tries, keeping the
farthest sample if none passes. Sampling the R candidates in one batched
call and taking the first acceptable one is the same rule when the r-th
candidate is what the r-th retry would have drawn.

A candidate's distance to the siblings is its smallest token edit distance
to (a) the parent's existing children and (b) the candidates kept earlier
in the same iteration for the same parent (simulations s' < s), so that S
parallel expansions of one node are merged against each other in order.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp

from qstar_jax.search.edit_distance import edit_distance
from qstar_jax.search.mcts_interfaces import Options
from qstar_jax.search.tree import Tree, node_values

FAR = 1 << 30
"""The distance of a candidate that has no sibling."""


class Choice(NamedTuple):
    """The candidate kept for each of S expansions of B rows.

    Attributes:
      index: [B, S] int32 the kept candidate r (meaningless where not ok).
      ok: [B, S] bool a valid candidate was kept.
      rejected: [B, S] int32 valid candidates rejected by the threshold
        before the kept one (all valid candidates on a fallback).
      fallback: [B, S] bool no candidate was far enough; the farthest kept.
    """

    index: jax.Array
    ok: jax.Array
    rejected: jax.Array
    fallback: jax.Array


def sibling_distances(tree: Tree, parents: jax.Array,
                      options: Options) -> jax.Array:
    """[B, S, R] each candidate's edit distance to its parent's nearest
    existing child (FAR without children)."""
    child = node_values(tree.children_index, parents)             # [B,S,C]
    tokens = node_values(tree.step_tokens, child)                 # [B,S,C,T]
    lengths = node_values(tree.step_lengths, child)
    dist = edit_distance(options.step_tokens[:, :, :, None],
                         options.step_lengths[:, :, :, None],
                         tokens[:, :, None], lengths[:, :, None])  # [B,S,R,C]
    dist = jnp.where((child >= 0)[:, :, None, :], dist, FAR)
    return jnp.min(dist, axis=-1)


def choose_options(tree: Tree, parents: jax.Array, expanding: jax.Array,
                   options: Options, threshold: int) -> Choice:
    """Picks one candidate per expansion ([B, S] parents, [B, S, R]
    candidates).

    Without merge (threshold 0) the first valid candidate is kept. With
    merge, the first valid candidate at distance >= threshold from every
    sibling is kept; if none is, the valid candidate with the largest
    distance (ties to the lowest r) is kept and counted as a fallback.

    Args:
      tree: the trees.
      parents: [B, S] int32 the node each expansion adds a child to.
      expanding: [B, S] bool the expansion takes place.
      options: the R candidates of each expansion.
      threshold: the merge threshold in tokens.
    """
    valid = options.valid.astype(bool) & expanding[..., None]     # [B,S,R]
    b, s, r = valid.shape
    first_valid = jnp.argmax(valid, axis=2).astype(jnp.int32)
    any_valid = jnp.any(valid, axis=2)
    if threshold <= 0:
        zeros = jnp.zeros((b, s), jnp.int32)
        return Choice(index=first_valid, ok=any_valid, rejected=zeros,
                      fallback=zeros > 0)
    to_children = sibling_distances(tree, parents, options)       # [B,S,R]
    # Distances between every pair of candidates of a row: [B,S,R,S,R].
    steps, lengths = options.step_tokens, options.step_lengths
    cross = edit_distance(steps[:, :, :, None, None],
                          lengths[:, :, :, None, None],
                          steps[:, None, None], lengths[:, None, None])
    same_parent = parents[:, :, None] == parents[:, None, :]      # [B,S,S]

    def keep(i, carry):
        index, ok = carry       # Final for the expansions before i.
        dist = _kept_distances(to_children, cross, same_parent, index,
                               ok)[:, i]                          # [B, R]
        far = valid[:, i] & (dist >= threshold)
        farthest = jnp.argmax(jnp.where(valid[:, i], dist, -1), axis=1)
        pick = jnp.where(jnp.any(far, axis=1),
                         jnp.argmax(far, axis=1), farthest)
        return (index.at[:, i].set(pick.astype(jnp.int32)),
                ok.at[:, i].set(any_valid[:, i]))

    index, ok = jax.lax.fori_loop(
        0, s, keep, (jnp.zeros((b, s), jnp.int32), jnp.zeros((b, s), bool)))
    dist = _kept_distances(to_children, cross, same_parent, index, ok)
    far = valid & (dist >= threshold)
    accepted = jnp.any(far, axis=2)
    before = jnp.arange(r)[None, None] < index[..., None]
    rejected = jnp.where(accepted, jnp.sum(valid & before, axis=2),
                         jnp.sum(valid, axis=2))
    return Choice(index=index, ok=ok,
                  rejected=jnp.where(ok, rejected, 0).astype(jnp.int32),
                  fallback=ok & ~accepted)


def _kept_distances(to_children: jax.Array, cross: jax.Array,
                    same_parent: jax.Array, index: jax.Array,
                    ok: jax.Array) -> jax.Array:
    """[B, S, R] distance of every candidate to its siblings, given the
    kept candidates `index` of the earlier expansions."""
    b, s, r = to_children.shape
    kept = jnp.broadcast_to(index[:, None, None, :, None], (b, s, r, s, 1))
    to_kept = jnp.take_along_axis(cross, kept, axis=4)[..., 0]    # [B,S,R,S']
    earlier = (same_parent & ok[:, None, :]
               & (jnp.arange(s)[None, :] < jnp.arange(s)[:, None])[None])
    to_kept = jnp.min(jnp.where(earlier[:, :, None, :], to_kept, FAR),
                      axis=3)
    return jnp.minimum(to_children, to_kept)
