"""Paths: width vectors turned into traced per-channel data, typed by kind.

A supernet-mode model takes, for every dim, an int8 vector of length C'
(-1 = channel off, 0 = path 0, 1 = path 1; docs/design.md §3), wrapped in
`Paths` with a static `kind`. The ids are built in-graph from a width vector,
so one compiled program serves every width; the kind is part of the program:

  left(space, c)   one path, L(c): the first e[c] channels
  right(space, c)  one path, R(c): the last e[c] channels
  pair(space, c)   two paths, L(c) (0) and R(c̄) (1): every channel is on

The layers derive from the kind what they may do: a single path masks no
kernel and runs in the N-channel window that holds it (left: the first N
channels, right: the last N); a pair masks kernels to its two blocks. Only
these helpers make ids, so a kind never disagrees with its ids.

Synopsis:

  logits, aux = model.apply(variables, x, paths.pair(space, c), train=True,
                            mutable=['batch_stats'])
  # logits: [2, batch, classes], logits[k] = path k's sub-network
"""

from __future__ import annotations

import flax
import jax
import jax.numpy as jnp

from bcnet_jax.space import SearchSpace

NUM_PATHS = 2
KINDS = ('left', 'right', 'pair')


@flax.struct.dataclass
class Paths:
  """Path ids per dim ({dim: [C'] int8}, traced) and their kind (static).

  Under `jax.vmap` the ids gain a leading axis; the kind, being static,
  is shared by every mapped element.
  """
  ids: dict[str, jax.Array]
  kind: str = flax.struct.field(pytree_node=False)

  def __post_init__(self):
    if self.kind not in KINDS:
      raise ValueError(f'paths kind must be one of {KINDS}, got '
                       f'{self.kind!r}')

  @property
  def single(self) -> bool:
    """One path (left or right): no kernel masks, a window per dim."""
    return self.kind != 'pair'


def _edges(space: SearchSpace, widths: jax.Array) -> list[jax.Array]:
  widths = jnp.asarray(widths, jnp.int32)
  table = jnp.asarray(space.edge_table(), jnp.int32)
  return [table[i, widths[d.group]] for i, d in enumerate(space.dims)]


def _ids(space: SearchSpace, widths: jax.Array, on, off: int
         ) -> dict[str, jax.Array]:
  return {d.name: jnp.where(on(jnp.arange(d.supernet_channels), e,
                               d.supernet_channels), 0, off).astype(jnp.int8)
          for d, e in zip(space.dims, _edges(space, widths))}


def left(space: SearchSpace, widths: jax.Array) -> Paths:
  """One path: L(c) = channels [0, e[c]) of every dim."""
  return Paths(_ids(space, widths, lambda i, e, c: i < e, -1), 'left')


def right(space: SearchSpace, widths: jax.Array) -> Paths:
  """One path: R(c) = channels [C' - e[c], C') of every dim."""
  return Paths(_ids(space, widths, lambda i, e, c: i >= c - e, -1), 'right')


def pair(space: SearchSpace, widths: jax.Array) -> Paths:
  """Two disjoint paths covering every channel: L(c) (0) and R(c̄) (1).

  R(c̄) starts at C' - e[B' - c] = e[c], the end of L(c). `pair(c̄)` carries
  L(c̄) and R(c), the other half of a complementary step.
  """
  return Paths(_ids(space, widths, lambda i, e, c: i < e, 1), 'pair')


SIDES = {'left': left, 'right': right}
