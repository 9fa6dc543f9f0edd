"""The loss-record pool: the lowest bilateral losses seen, with their widths.

Kept in-graph as part of the train state (so it is checkpointed and needs no
per-step host sync), bounded and sorted ascending by loss; empty slots hold
+inf. The prior of the search is fitted to it (docs/design.md §3, §5).
"""

from __future__ import annotations

import flax
import jax
import jax.numpy as jnp

from bcnet_jax.run import errors


@flax.struct.dataclass
class LossPool:
  widths: jax.Array  # [size, groups] int32
  losses: jax.Array  # [size] float32, ascending, +inf where empty

  @property
  def size(self) -> int:
    return self.losses.shape[0]


def create(size: int, num_groups: int) -> LossPool:
  if size < 1:
    raise errors.InvalidInput(f'loss pool size must be >= 1, got {size}')
  return LossPool(jnp.zeros((size, num_groups), jnp.int32),
                  jnp.full((size,), jnp.inf, jnp.float32))


def offer(pool: LossPool, widths: jax.Array, losses: jax.Array) -> LossPool:
  """Keeps the `pool.size` lowest of the pool and the K offered records.

  Args:
    pool: the current pool.
    widths: [K, groups] width vectors.
    losses: [K] their losses; non-finite ones are never kept.
  """
  losses = jnp.where(jnp.isfinite(losses), losses.astype(jnp.float32),
                     jnp.inf)
  all_losses = jnp.concatenate([pool.losses, losses])
  all_widths = jnp.concatenate([pool.widths, widths.astype(jnp.int32)])
  order = jnp.argsort(all_losses, stable=True)[:pool.size]
  return LossPool(all_widths[order], all_losses[order])
