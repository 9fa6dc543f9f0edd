"""The train state: everything a supernet or compact step reads and writes."""

from __future__ import annotations

from typing import Any

import flax
import jax
import jax.numpy as jnp
import optax

from bcnet_jax.models import layers


@flax.struct.dataclass
class TrainState:
  step: jax.Array
  params: Any
  batch_stats: Any
  opt_state: optax.OptState
  pool: Any  # a supernet's loss-record pool; None for a compact model


def initial(tx: optax.GradientTransformation, variables: Any,
            pool: Any = None) -> TrainState:
  """The state of step 0 of a model initialized as `variables`."""
  return TrainState(step=jnp.zeros((), jnp.int32), params=variables['params'],
                    batch_stats=variables['batch_stats'],
                    opt_state=tx.init(variables['params']), pool=pool)


def compact_state(model: layers.WidthModel,
                  tx: optax.GradientTransformation, rng: jax.Array
                  ) -> TrainState:
  """Initial state of a compact model (no loss pool)."""
  variables = model.init(rng, model.dummy_input(1), train=False)
  return initial(tx, variables)
