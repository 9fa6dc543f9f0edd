"""The initial train state of a supernet: learning.state's, with the
loss-record pool the search's prior is fitted to."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import optax

from bcnet_jax.learning import state as state_lib
from bcnet_jax.models import layers
from bcnet_jax.space import paths
from bcnet_jax.supernet import loss_pool


def supernet_state(model: layers.WidthModel,
                   tx: optax.GradientTransformation, rng: jax.Array, *,
                   pool_size: int = 100) -> state_lib.TrainState:
  """Initial state of a supernet, with its loss pool.

  Jit it with `out_shardings` to create it directly where it will live.
  """
  full = paths.pair(model.space, jnp.asarray(model.space.full()))
  variables = model.init(rng, model.dummy_input(1), full, train=False)
  return state_lib.initial(
      tx, variables, loss_pool.create(pool_size, model.space.num_groups))
