"""Paths: width vectors turned into traced per-channel data, typed by kind.

A supernet-mode model takes `Paths`: a width vector (traced) and a kind
(static) from which it builds, in the graph, for every dim an int8 vector of
length C' (-1 = channel off, 0 = path 0, 1 = path 1; docs/design.md §3). One
compiled program serves every width; the kind is part of the program:

  left(space, c)   one path, L(c): the first e[c] channels
  right(space, c)  one path, R(c): the last e[c] channels
  pair(space, c)   two paths, L(c) (0) and R(c̄) (1): every channel is on

The layers derive from the kind what they may do: a single path masks no
kernel and runs in the N-channel window that holds it (left: the first N
channels, right: the last N); a pair masks kernels to its two blocks. A
`Paths` holds the width vector, not ids: its ids are computed from its kind,
so the two never disagree.

Synopsis:

  logits, aux = model.apply(variables, x, paths.pair(space, c), train=True,
                            mutable=['batch_stats'])
  # logits: [2, batch, classes], logits[k] = path k's sub-network
"""

from __future__ import annotations

import flax
import jax
import jax.numpy as jnp

from bcnet_jax.space.search_space import SearchSpace

NUM_PATHS = 2
KINDS = ('left', 'right', 'pair')


@flax.struct.dataclass
class Paths:
  """A width vector (traced) and the kind of paths it makes (static).

  The ids follow from the two (`ids()`), so they cannot disagree with the
  kind. Under `jax.vmap` the widths gain a leading axis; the kind and the
  space, being static, are shared by every mapped element.
  """
  widths: jax.Array  # [G] int32 bins
  space: SearchSpace = flax.struct.field(pytree_node=False)
  kind: str = flax.struct.field(pytree_node=False)

  def __post_init__(self):
    if self.kind not in KINDS:
      raise ValueError(f'paths kind must be one of {KINDS}, got '
                       f'{self.kind!r}')

  @property
  def single(self) -> bool:
    """One path (left or right): no kernel masks, a window per dim."""
    return self.kind != 'pair'

  def ids(self) -> dict[str, jax.Array]:
    """{dim: [C'] int8}: -1 off, 0 path 0, 1 path 1."""
    out = {}
    for d, e in zip(self.space.dims, _edges(self.space, self.widths)):
      i, c = jnp.arange(d.supernet_channels), d.supernet_channels
      on = i >= c - e if self.kind == 'right' else i < e
      out[d.name] = jnp.where(on, 0, 1 if self.kind == 'pair' else -1
                              ).astype(jnp.int8)
    return out


def _edges(space: SearchSpace, widths: jax.Array) -> list[jax.Array]:
  widths = jnp.asarray(widths, jnp.int32)
  table = jnp.asarray(space.edge_table(), jnp.int32)
  return [table[i, widths[d.group]] for i, d in enumerate(space.dims)]


def left(space: SearchSpace, widths: jax.Array) -> Paths:
  """One path: L(c) = channels [0, e[c]) of every dim."""
  return Paths(jnp.asarray(widths, jnp.int32), space, 'left')


def right(space: SearchSpace, widths: jax.Array) -> Paths:
  """One path: R(c) = channels [C' - e[c], C') of every dim."""
  return Paths(jnp.asarray(widths, jnp.int32), space, 'right')


def pair(space: SearchSpace, widths: jax.Array) -> Paths:
  """Two disjoint paths covering every channel: L(c) (0) and R(c̄) (1).

  R(c̄) starts at C' - e[B' - c] = e[c], the end of L(c). `pair(c̄)` carries
  L(c̄) and R(c), the other half of a complementary step.
  """
  return Paths(jnp.asarray(widths, jnp.int32), space, 'pair')


SIDES = {'left': left, 'right': right}
