"""The train state: everything a supernet or compact step reads and writes."""

from __future__ import annotations

from typing import Any

import flax
import jax
import jax.numpy as jnp
import optax

from bcnet_jax.models import layers
from bcnet_jax.space import paths
from bcnet_jax.supernet import loss_pool


@flax.struct.dataclass
class TrainState:
  step: jax.Array
  params: Any
  batch_stats: Any
  opt_state: optax.OptState
  pool: loss_pool.LossPool | None  # None for a compact model


def supernet_state(model: layers.WidthModel,
                   tx: optax.GradientTransformation, rng: jax.Array, *,
                   pool_size: int = 100) -> TrainState:
  """Initial state of a supernet, with its loss pool.

  Jit it with `out_shardings` to create it directly where it will live.
  """
  full = paths.pair(model.space, jnp.asarray(model.space.full()))
  variables = model.init(rng, model.dummy_input(1), full, train=False)
  return _initial(tx, variables,
                  loss_pool.create(pool_size, model.space.num_groups))


def compact_state(model: layers.WidthModel,
                  tx: optax.GradientTransformation, rng: jax.Array
                  ) -> TrainState:
  """Initial state of a compact model (no loss pool)."""
  variables = model.init(rng, model.dummy_input(1), train=False)
  return _initial(tx, variables, None)


def _initial(tx, variables, pool) -> TrainState:
  return TrainState(step=jnp.zeros((), jnp.int32), params=variables['params'],
                    batch_stats=variables['batch_stats'],
                    opt_state=tx.init(variables['params']), pool=pool)
