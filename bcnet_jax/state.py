"""The train state: everything a supernet step reads and writes."""

from __future__ import annotations

from typing import Any

import flax
import jax
import jax.numpy as jnp
import optax

from bcnet_jax import loss_pool
from bcnet_jax import paths
from bcnet_jax.models import layers


@flax.struct.dataclass
class TrainState:
  step: jax.Array
  params: Any
  batch_stats: Any
  opt_state: optax.OptState
  pool: loss_pool.LossPool | None  # None for a compact model


def create_train_state(model: layers.WidthModel,
                       tx: optax.GradientTransformation, rng: jax.Array, *,
                       pool_size: int = 100) -> TrainState:
  """Initial state of a supernet (widths=None) or a compact model.

  Jit it with `out_shardings` to create it directly where it will live.
  """
  compact = model.widths is not None
  ids = () if compact else (paths.pair(model.space,
                                       jnp.asarray(model.space.full())),)
  variables = model.init(rng, model.dummy_input(1), *ids, train=False)
  params = variables['params']
  pool = (None if compact
          else loss_pool.create(pool_size, model.space.num_groups))
  return TrainState(step=jnp.zeros((), jnp.int32), params=params,
                    batch_stats=variables['batch_stats'],
                    opt_state=tx.init(params), pool=pool)
