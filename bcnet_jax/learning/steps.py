"""The plain step of a compact model, and what a supernet step shares with it.

A step is a list of passes (`Pass`: typed paths and the sub-network each
path is); `pass_loss` is the loss of one pass, `joint_gradients` the
gradients of all passes in one backward, `apply_gradients` the optimizer's
update. A compact model (static widths, no masks: the retrain stage, the
benchmark's 'plain' mode) trains with one plain pass: `compact_step`. The
supernet's passes and step: supernet/steps.py.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable

import jax
import jax.numpy as jnp
import optax

from bcnet_jax.learning.state import TrainState
from bcnet_jax.models import layers
from bcnet_jax.space import paths as paths_lib

Batch = dict[str, jax.Array]
SubNetwork = tuple[str, bool]  # (side, whether of the complement)
Metrics = dict[str, jax.Array]


@dataclasses.dataclass(frozen=True)
class Pass:
  """One forward pass: its paths (None: a compact model's plain pass) and
  the sub-network that path k of it trains, for each k."""
  paths: paths_lib.Paths | None
  carries: tuple[SubNetwork, ...]


# A compact model's one plain pass: the left path of its own width vector
# (its parameters are L(c)'s slice of a supernet's).
COMPACT_PASS = Pass(None, (('left', False),))


def cross_entropy(logits: jax.Array, labels: jax.Array,
                  label_smoothing: float) -> jax.Array:
  """Mean over the batch axis (-2), in float32 or wider."""
  logits = logits.astype(jnp.promote_types(logits.dtype, jnp.float32))
  targets = optax.smooth_labels(
      jax.nn.one_hot(labels, logits.shape[-1], dtype=logits.dtype),
      label_smoothing)
  return jnp.mean(optax.softmax_cross_entropy(logits, targets), axis=-1)


PassLoss = Callable[[Any, Any, Pass, int], tuple[jax.Array, Any]]


def pass_loss(model: layers.WidthModel, batch: Batch, rng: jax.Array, *,
              weight: float, label_smoothing: float, dtype: Any) -> PassLoss:
  """loss(params, stats, pass, index) -> (share, (ce, new stats)): the
  pass's share of the objective (`weight` x the sum of its paths'
  cross-entropies), ce per path it carries, and the BN statistics after it."""
  images = batch['image'].astype(dtype)

  def loss(params, stats, step_pass: Pass, index: int):
    inputs = () if step_pass.paths is None else (step_pass.paths,)
    (logits, _), new = model.apply(
        {'params': params, 'batch_stats': stats}, images, *inputs,
        train=True, mutable=['batch_stats'],
        rngs={'dropout': jax.random.fold_in(rng, index)})
    logits = logits.reshape((-1,) + logits.shape[-2:])  # [paths, B, K]
    ce = cross_entropy(logits, batch['label'], label_smoothing)
    ce = ce[:len(step_pass.carries)]
    return weight * jnp.sum(ce), (ce, new['batch_stats'])

  return loss


def joint_gradients(loss: PassLoss, params, stats, step_passes: list[Pass]):
  """(objective, [ce per pass], stats, gradients): one backward through
  every pass; all their activations are held at once."""
  def total(params):
    value, ce, new_stats = 0.0, [], stats
    for index, step_pass in enumerate(step_passes):
      share, (pass_ce, new_stats) = loss(params, new_stats, step_pass, index)
      value, ce = value + share, ce + [pass_ce]
    return value, (ce, new_stats)

  (value, (ce, stats)), grads = jax.value_and_grad(total, has_aux=True)(
      params)
  return value, ce, stats, grads


def apply_gradients(state: TrainState, tx: optax.GradientTransformation,
                    grads, stats) -> TrainState:
  """The state after the optimizer's update, with the new BN statistics."""
  updates, opt_state = tx.update(grads, state.opt_state, state.params)
  return state.replace(
      step=state.step + 1, params=optax.apply_updates(state.params, updates),
      batch_stats=stats, opt_state=opt_state)


def compact_step(state: TrainState, batch: Batch, *,
                 model: layers.WidthModel, tx: optax.GradientTransformation,
                 label_smoothing: float = 0.0, dtype: Any = jnp.float32,
                 seed: int = 0) -> tuple[TrainState, Metrics]:
  """One plain step of a compact model (static widths); metrics as
  supernet_step's with one path."""
  if model.widths is None:
    raise ValueError('compact_step trains a compact model; a supernet '
                     'trains with supernet_step')
  loss = pass_loss(model, batch, jax.random.fold_in(jax.random.key(seed),
                                                    state.step),
                   weight=1.0, label_smoothing=label_smoothing, dtype=dtype)
  value, ce, stats, grads = joint_gradients(
      loss, state.params, state.batch_stats, [COMPACT_PASS])
  return apply_gradients(state, tx, grads, stats), metrics(ce[0], value, grads)


def metrics(path_losses: jax.Array, value: jax.Array, grads) -> Metrics:
  """What a step logs: the mean path loss, the objective, the per-path
  losses and the gradients' norm."""
  return {'loss': jnp.mean(path_losses), 'objective': value,
          'path_losses': path_losses, 'grad_norm': optax.tree.norm(grads)}
