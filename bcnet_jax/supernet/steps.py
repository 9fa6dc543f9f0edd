"""Pure step functions; the callers jit them (see parallel.jit_train_step).

The BCNet supernet step (docs/design.md §3). Per step one width vector c,
and for the `bcnet` objective with `complementary` its complement c̄, train
four sub-networks L(c), R(c), L(c̄), R(c̄); the objective is ½ of the sum of
their cross-entropies (every channel gets weight 1), the logged loss their
mean.

A step is a list of passes (`Pass`: typed paths and the sub-network each
path is), built by one function per strategy:
- `fused_passes` (implementation 'fused', the default): L(c) and R(c̄) are
  disjoint and cover every channel, so one full-width pass with
  `paths.pair(c)` carries both, and a second with `pair(c̄)` carries L(c̄)
  and R(c): 2 passes, not 4.
- `single_passes` ('reference'; also without complementary, where paths
  overlap, and for 'ua', L(c) alone): one single-path pass per sub-network,
  each in its window of N channels per dim (the nominal network's shapes),
  BN statistics threaded through L(c), R(c̄), R(c), L(c̄) in that order.
and its gradients by one of two functions:
- `joint_gradients` (learning/steps.py): one backward through every pass.
- `pass_by_pass_gradients`: each pass's gradients before the next pass's
  forward, so only one pass's activations are held at a time (the peak
  memory of one pass instead of the sum). The gradients are the same sum.

A compact model's plain step, and what both steps share (passes, their
loss, the update): learning/steps.py.

Passes are unrolled: under `lax.scan` the same ResNet-20 step ran 30x slower
on XLA:CPU (45.9 s against 1.5 s at batch 128). Width vectors are traced int32
data: one compiled step serves them all.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import optax

from bcnet_jax.learning import steps as learning
from bcnet_jax.learning.state import TrainState
from bcnet_jax.learning.steps import Batch
from bcnet_jax.learning.steps import Metrics
from bcnet_jax.learning.steps import Pass
from bcnet_jax.learning.steps import PassLoss
from bcnet_jax.learning.steps import SubNetwork
from bcnet_jax.models import layers
from bcnet_jax.run import errors
from bcnet_jax.space import paths as paths_lib
from bcnet_jax.space import sampling
from bcnet_jax.supernet import loss_pool

IMPLEMENTATIONS = ('fused', 'reference')
# supernet.implementation='auto': the fastest step measured on each platform
# (bench/train_step.py; bench/accelerator.py prints its `step_winners`). On
# 2 CPU cores `fused` took ResNet-20 at batch 128 1.54 s a step, the 4-pass
# `reference` 2.42 s (experiments/step_speed.md). GPU and TPU are not
# measured yet: `fused` (half the passes) until a device run says otherwise.
PLATFORM_DEFAULTS = {'cpu': 'fused', 'gpu': 'fused', 'tpu': 'fused'}


def implementation_for(name: str, platform: str, pair: bool = True) -> str:
  """The implementation `name` ('auto', 'fused' or 'reference') means on
  `platform` (jax's: 'cpu', 'gpu', 'tpu') for a model that runs paired
  paths (`pair`; a traced model runs single paths: 'reference')."""
  if name == 'auto':
    return PLATFORM_DEFAULTS.get(platform, 'fused') if pair else 'reference'
  if name not in IMPLEMENTATIONS:
    raise errors.InvalidInput(
        f"supernet.implementation must be 'auto' or one of "
        f'{list(IMPLEMENTATIONS)}, got {name!r}')
  if name == 'fused' and not pair:
    raise errors.InvalidInput(
        "supernet.implementation='fused' runs the built-in models' paired "
        "paths; a traced model trains with 'reference' (or 'auto')")
  return name


def fused_passes(space, c: jax.Array) -> list[Pass]:
  """pair(c) carries L(c) and R(c̄); pair(c̄) carries L(c̄) and R(c)."""
  cbar = space.complement(c)
  return [Pass(paths_lib.pair(space, c), (('left', False), ('right', True))),
          Pass(paths_lib.pair(space, cbar), (('left', True), ('right', False)))]


# Single passes thread BN statistics in the fused passes' order.
_SINGLE_ORDER = (('left', False), ('right', True), ('right', False),
                 ('left', True))


def single_passes(space, c: jax.Array, subnetworks: tuple[SubNetwork, ...]
                  ) -> list[Pass]:
  """One single-path pass per sub-network of `subnetworks`."""
  cbar = space.complement(c)
  return [Pass(paths_lib.SIDES[side](space, cbar if of_complement else c),
               ((side, of_complement),))
          for side, of_complement in _SINGLE_ORDER
          if (side, of_complement) in subnetworks]


def passes(space, widths: jax.Array, *, objective: str, complementary: bool,
           implementation: str) -> list[Pass]:
  """The passes of a supernet step, by its objective and implementation."""
  if implementation not in IMPLEMENTATIONS:
    raise errors.InvalidInput(
        f'implementation must be one of {IMPLEMENTATIONS}, got '
        f'{implementation!r}')
  table = sampling.subnetwork_table(objective, complementary)
  c = jnp.asarray(widths, jnp.int32)
  if len(table) == 4 and implementation == 'fused':
    return fused_passes(space, c)
  return single_passes(space, c, table)


def pass_by_pass_gradients(loss: PassLoss, params, stats,
                           step_passes: list[Pass]):
  """joint_gradients' values, each pass's backward before the next pass's
  forward: the peak memory of one pass."""
  value, ce, grads, read = 0.0, [], None, params
  for index, step_pass in enumerate(step_passes):
    (share, (pass_ce, stats)), pass_grads = jax.value_and_grad(
        loss, has_aux=True)(read, stats, step_pass, index)
    value, ce = value + share, ce + [pass_ce]
    grads = pass_grads if grads is None else jax.tree.map(
        jnp.add, grads, pass_grads)
    # The next pass reads the parameters through these gradients (+ 0 x g:
    # the same values), so it cannot start before this pass's backward ends
    # and frees its activations. Not lax.optimization_barrier: XLA:CPU drops
    # it before scheduling (measured: the same peak memory); nor a lax.scan
    # over passes (module docstring). An infinite gradient makes these NaN,
    # but the loss is then non-finite too and training stops on it.
    read = jax.tree.map(lambda p, g: p + 0 * g, params, grads)
  return value, ce, stats, grads


def supernet_step(state: TrainState, batch: Batch, widths: jax.Array, *,
                  model: layers.WidthModel, tx: optax.GradientTransformation,
                  objective: str = 'bcnet', complementary: bool = True,
                  implementation: str = 'fused', pass_by_pass: bool = False,
                  label_smoothing: float = 0.0, dtype: Any = jnp.float32,
                  seed: int = 0) -> tuple[TrainState, Metrics]:
  """One supernet step at width vector `widths`. `state` may be donated.

  Args:
    state: the train state (params and BN statistics stay float32).
    batch: {'image': [B, H, W, C], 'label': [B] int}.
    widths: [G] int32 bins, sampled on the host for this step.
    model: the supernet (widths=None).
    tx: the optimizer.
    objective: 'bcnet' or 'ua'.
    complementary: also train c̄ (bcnet only).
    implementation: 'fused' or 'reference' (see module docstring).
    pass_by_pass: each pass's gradients before the next pass (less memory).
    label_smoothing: for the cross-entropy.
    dtype: compute dtype of activations (float32 or bfloat16).
    seed: dropout randomness, folded with the step and pass.

  Returns:
    The new state and metrics: `path_losses` (per sub-network, order L(c),
    R(c), L(c̄), R(c̄)), `loss` (their mean), `objective` (what is
    minimized) and `grad_norm`.
  """
  if model.widths is not None:
    raise ValueError('supernet_step trains a supernet; a compact model '
                     'trains with compact_step')
  table = sampling.subnetwork_table(objective, complementary)
  step_passes = passes(model.space, widths, objective=objective,
                       complementary=complementary,
                       implementation=implementation)
  # Bilateral objectives weigh each path ½; ua trains one.
  loss = learning.pass_loss(
      model, batch, jax.random.fold_in(jax.random.key(seed), state.step),
      weight=1.0 if len(table) == 1 else 0.5,
      label_smoothing=label_smoothing, dtype=dtype)
  gradients = (pass_by_pass_gradients if pass_by_pass
               else learning.joint_gradients)
  value, ce, stats, grads = gradients(loss, state.params, state.batch_stats,
                                      step_passes)
  where = {sub: ce[i][k] for i, step_pass in enumerate(step_passes)
           for k, sub in enumerate(step_pass.carries)}
  path_losses = jnp.stack([where[sub] for sub in table])
  # Pool records: c (and c̄) with their bilateral loss; ua: c with ℓL(c).
  c = jnp.asarray(widths, jnp.int32)
  record_losses = (path_losses if objective == 'ua'
                   else path_losses.reshape(-1, 2).mean(axis=1))
  record_widths = jnp.stack([c, model.space.complement(c)]
                            )[:len(record_losses)]
  new_state = learning.apply_gradients(state, tx, grads, stats)
  new_state = new_state.replace(
      pool=loss_pool.offer(state.pool, record_widths, record_losses))
  return new_state, learning.metrics(path_losses, value, grads)


