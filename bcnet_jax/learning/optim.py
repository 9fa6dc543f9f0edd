"""Optimizer and learning-rate schedule from config (durations in steps).

Config fields (a ConfigDict or anything with these attributes):
  name: 'sgd' (momentum SGD, as in BCNet's recipes).
  learning_rate: peak learning rate after warm-up.
  momentum, nesterov: SGD momentum and whether it is Nesterov's.
  weight_decay: L2 on conv and dense kernels only (not BN, not biases),
    added to the gradient before momentum, as PyTorch's SGD does.
  schedule: 'cosine' (to 0 at total_steps) or 'step' (x step_factor at every
    step in step_milestones).
  warmup_steps: linear warm-up from 0.
  step_milestones, step_factor: for 'step'.
"""

from __future__ import annotations

from typing import Any

from flax import traverse_util
import optax

from bcnet_jax.run import errors

SCHEDULES = ('cosine', 'step')


def create_schedule(config: Any, total_steps: int) -> optax.Schedule:
  warmup = int(config.warmup_steps)
  if not 0 <= warmup < total_steps:
    raise ValueError(f'warmup_steps must be in [0, total_steps={total_steps}),'
                     f' got {warmup}')
  lr = config.learning_rate
  if config.schedule == 'cosine':
    after = optax.cosine_decay_schedule(lr, total_steps - warmup)
  elif config.schedule == 'step':
    after = optax.piecewise_constant_schedule(
        lr, {int(m) - warmup: config.step_factor
             for m in config.step_milestones if int(m) > warmup})
  else:
    raise errors.InvalidInput(f'schedule must be one of {SCHEDULES}, got '
                              f'{config.schedule!r}')
  if warmup == 0:
    return after
  return optax.join_schedules(
      [optax.linear_schedule(0.0, lr, warmup), after], [warmup])


def decay_mask(params: Any) -> Any:
  """True for conv and dense kernels; BN parameters and biases: False."""
  flat = traverse_util.flatten_dict(params)
  return traverse_util.unflatten_dict(
      {k: k[-1] == 'kernel' for k in flat})


def create_optimizer(config: Any, total_steps: int
                     ) -> tuple[optax.GradientTransformation, optax.Schedule]:
  """The optax transformation and its schedule (for logging the lr)."""
  if config.name != 'sgd':
    raise errors.InvalidInput(f"optim.name must be 'sgd', got {config.name!r}")
  schedule = create_schedule(config, total_steps)
  tx = optax.chain(
      optax.add_decayed_weights(config.weight_decay, mask=decay_mask),
      optax.sgd(schedule, momentum=config.momentum or None,
                nesterov=config.nesterov))
  return tx, schedule
