"""Path-id vectors: width vectors turned into traced per-channel data.

A supernet-mode model takes, for every dim, an int8 vector of length C'
(-1 = channel off, 0 = path 0, 1 = path 1; docs/design.md §3). These
helpers build them in-graph from a width vector, so one compiled program
serves every width and all three helpers:

  left(space, c)   path 0 = L(c), the first e[c] channels
  right(space, c)  path 0 = R(c), the last e[c] channels
  pair(space, c)   path 0 = L(c), path 1 = R(c̄): every channel is on
  materialized(ids)  the same ids, computed once into buffers (XLA:CPU)

Synopsis:

  ids = paths.pair(space, jnp.asarray(c))
  logits, aux = model.apply(variables, x, ids, train=True, mutable=[...])
  # logits: [2, batch, classes], logits[k] = path k's sub-network
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from bcnet_jax.space import SearchSpace

PathIds = dict[str, jax.Array]
NUM_PATHS = 2


def _edges(space: SearchSpace, widths: jax.Array) -> list[jax.Array]:
  widths = jnp.asarray(widths, jnp.int32)
  table = jnp.asarray(space.edge_table(), jnp.int32)
  return [table[i, widths[d.group]] for i, d in enumerate(space.dims)]


def left(space: SearchSpace, widths: jax.Array) -> PathIds:
  """One path: L(c) = channels [0, e[c]) of every dim."""
  return {
      d.name: jnp.where(jnp.arange(d.supernet_channels) < e, 0, -1
                        ).astype(jnp.int8)
      for d, e in zip(space.dims, _edges(space, widths))
  }


def right(space: SearchSpace, widths: jax.Array) -> PathIds:
  """One path: R(c) = channels [C' - e[c], C') of every dim."""
  return {
      d.name: jnp.where(
          jnp.arange(d.supernet_channels) >= d.supernet_channels - e, 0, -1
      ).astype(jnp.int8)
      for d, e in zip(space.dims, _edges(space, widths))
  }


def pair(space: SearchSpace, widths: jax.Array) -> PathIds:
  """Two disjoint paths covering every channel: L(c) (0) and R(c̄) (1).

  R(c̄) starts at C' - e[B' - c] = e[c], the end of L(c). `pair(c̄)` carries
  L(c̄) and R(c), the other half of a complementary step.
  """
  return {
      d.name: jnp.where(jnp.arange(d.supernet_channels) < e, 0, 1
                        ).astype(jnp.int8)
      for d, e in zip(space.dims, _edges(space, widths))
  }


def materialized(ids: PathIds) -> PathIds:
  """`ids`, computed once into buffers rather than fused into their users.

  XLA fuses cheap producers into every consumer: on XLA:CPU the whole chain
  from a width vector to its ids (edge lookup, iota, compare, select) was
  recomputed for every element of every activation a mask touched, which
  made a masked pass of CBM MobileNet 1.4x a plain one (1.0x with this). A
  conditional's outputs cannot be fused into its consumers; its predicate
  (ids are never below -1) is traced data, so it cannot be folded away.
  """
  first = jax.tree.leaves(ids)[0]
  return jax.lax.cond(jnp.all(first >= -1), lambda: ids,
                      lambda: jax.tree.map(jnp.zeros_like, ids))
