"""Train-step throughput: fused and reference BCNet steps, ua and plain.

  python bench/train_step.py [--model resnet20_cifar] [--batch 128]
                             [--steps 5] [--modes fused,reference,ua,plain]

Prints exactly one JSON line per mode (docs/design.md §3's definitions):
  mode: 'fused' (bcnet, 2 fused passes), 'reference' (bcnet, 4 masked
    passes), 'ua' (left path only) or 'plain' (the compact nominal network).
  model, batch, steps: what was run; steps are timed after one compiling step.
  images_per_s: batch x steps / seconds.
  subnet_images_per_s: images_per_s x sub-networks per step (4, 4, 1, 1).
  traces: 1, checked with chex.assert_max_traces over its steps and 50 more
    random width vectors (lowered only: lowering hits jit's trace cache as a
    call does); a retrace is an error.
  useful_mac_fraction: MACs of the sliced sub-networks a step trains (mean
    over the width vectors) / MACs the step computes (passes x full width).
  seconds_per_step, devices: for reading the numbers.

The step runs as training runs it: jit over all devices, the state donated,
one width vector per step from sampling.widths_for_step. Images are a fixed
pseudo-random batch: a step's cost does not depend on pixel values.
"""

import argparse
import functools
import json
import time

import chex
import jax
import numpy as np
import optax

from bcnet_jax import models
from bcnet_jax import parallel
from bcnet_jax import sampling
from bcnet_jax import state as state_lib
from bcnet_jax import steps
from bcnet_jax.costs import CostModel

# mode -> train_step keywords ('plain': the compact nominal network).
MODES = {
    'fused': {'objective': 'bcnet', 'complementary': True,
              'implementation': 'fused'},
    'reference': {'objective': 'bcnet', 'complementary': True,
                  'implementation': 'reference'},
    'ua': {'objective': 'ua', 'complementary': True,
           'implementation': 'fused'},
    'plain': {},
}
TRACE_VECTORS = 50


def passes_and_subnetworks(mode: str, space) -> tuple[int, int]:
  """Full-width passes and sub-networks per step, as the step has them."""
  if mode == 'plain':
    return 1, 1
  ids, select = steps.passes(space, space.full(), **MODES[mode])
  return len(ids), len(select)


def useful_mac_fraction(mode: str, supernet: models.WidthModel,
                        widths: np.ndarray) -> float:
  """Sliced sub-network MACs / computed MACs, mean over `widths` [K, G]."""
  if mode == 'plain':
    return 1.0
  costs = CostModel(supernet)
  space = supernet.space
  table = sampling.subnetwork_table(MODES[mode]['objective'],
                                    MODES[mode]['complementary'])
  # A path's MACs depend on its width vector, not on its side.
  useful = sum(costs.macs(space.complement(widths) if of_complement
                          else widths).astype(np.float64)
               for _, of_complement in table)
  computed = passes_and_subnetworks(mode, space)[0] * costs.macs(space.full())
  return float(np.mean(useful) / computed)


def bench(mode: str, model_name: str, batch_size: int, num_steps: int,
          seed: int = 0) -> dict:
  kwargs = MODES[mode]
  supernet = models.get_model(model_name)
  space = supernet.space
  subnets = passes_and_subnetworks(mode, space)[1]
  model = (models.compact_like(supernet, space.full()) if mode == 'plain'
           else supernet)
  tx = optax.sgd(0.01, momentum=0.9, nesterov=True)

  def train_step(*args, **kw):
    return steps.train_step(*args, **kw)

  # A second trace (a width vector that recompiles) raises AssertionError.
  chex.clear_trace_counter()  # so that each call counts from zero
  mesh = parallel.create_mesh()
  compact = mode == 'plain'
  step = parallel.jit_train_step(
      functools.partial(chex.assert_max_traces(train_step, n=1), model=model,
                        tx=tx, **kwargs), mesh,
      num_replicated_args=0 if compact else 1)
  state = parallel.create_state(
      functools.partial(state_lib.create_train_state, model, tx,
                        jax.random.key(seed)), mesh)
  rng = np.random.default_rng(seed)
  res = model.resolution
  batch = parallel.global_batch({
      'image': rng.normal(size=(batch_size, res, res, model.in_channels)
                          ).astype(np.float32),
      'label': rng.integers(0, model.num_classes, batch_size, np.int32)},
      mesh)
  widths = np.stack([sampling.widths_for_step(space, seed, i)
                     for i in range(num_steps + 1 + TRACE_VECTORS)])
  args = lambda i: () if compact else (widths[i],)  # noqa: E731
  state, metrics = step(state, batch, *args(0))  # compiles
  jax.block_until_ready(metrics)
  start = time.perf_counter()
  for i in range(1, num_steps + 1):
    state, metrics = step(state, batch, *args(i))
  jax.block_until_ready((state, metrics))
  seconds = time.perf_counter() - start
  if not np.isfinite(float(metrics['loss'])):
    raise FloatingPointError(f'{mode}: non-finite loss')
  for i in range(num_steps + 1, len(widths)):
    step.lower(state, batch, *args(i))
  images_per_s = batch_size * num_steps / seconds
  return {
      'bench': 'train_step', 'mode': mode, 'model': model_name,
      'batch': batch_size, 'steps': num_steps,
      'images_per_s': images_per_s,
      'subnet_images_per_s': images_per_s * subnets,
      'traces': 1,  # over all width vectors: assert_max_traces(n=1) held
      'useful_mac_fraction': useful_mac_fraction(mode, supernet, widths),
      'seconds_per_step': seconds / num_steps,
      'devices': jax.device_count(),
  }


def rounded(line: dict) -> dict:
  """The line as printed: 4 significant digits are plenty for timings."""
  return {k: float(f'{v:.4g}') if isinstance(v, float) else v
          for k, v in line.items()}


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('--model', default='resnet20_cifar',
                      choices=list(models.MODELS))
  parser.add_argument('--batch', type=int, default=128)
  parser.add_argument('--steps', type=int, default=5)
  parser.add_argument('--modes', default=','.join(MODES))
  args = parser.parse_args()
  modes = args.modes.split(',')
  unknown = sorted(set(modes) - set(MODES))
  if unknown:
    parser.error(f'unknown modes {unknown}; choose from {list(MODES)}')
  if args.steps < 1:
    parser.error('--steps must be at least 1')
  for mode in modes:
    print(json.dumps(rounded(bench(mode, args.model, args.batch,
                                   args.steps))), flush=True)


if __name__ == '__main__':
  main()
