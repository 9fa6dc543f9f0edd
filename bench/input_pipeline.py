"""Input images/s against train-step images/s, for each training feed.

  python bench/input_pipeline.py --config=configs/cifar10.py \
      --config.input.source=image_folder --config.input.data_dir=DIR \
      [--steps 20] [--paths device,host]

Prints one JSON line per path (run/data/train_feed.py):
  path: 'device' (the training split held on the devices, each batch
    gathered and augmented inside the step) or 'host' (built by this
    process's input.num_threads threads; with input.workers > 0, by grain
    worker processes: 'workers').
  input_images_per_s: what the feed delivers, alone: for 'host', building
    `--steps` batches (read, decode, augment, normalize); for 'device',
    gathering, augmenting and normalizing them on the devices (its one-off
    decoding of the split is `setup_s`).
  step_images_per_s: the jitted supernet step of the config on one batch
    again and again, after one compiling step: the step without its input
    (the device path's includes gathering and augmenting).
  train_images_per_s: the same step fed by this path, the next batch built
    while a step runs as training does it (what training gets).
  per_core: input and train divided by the host's CPU cores
    (os.sched_getaffinity).
  input_keeps_up: whether input_images_per_s >= step_images_per_s.
Machines are noisy: compare paths within one run only.
"""

from __future__ import annotations

import json
import os
import time
from typing import Any

from absl import flags
import jax

from bcnet_jax.run import app
from bcnet_jax.run import parallel
from bcnet_jax.supernet import stage as supernet

PATHS = ('device', 'host')


def measure(config: Any, steps: int, paths=PATHS) -> list[dict[str, Any]]:
  """One line per path of `paths` (see the module docstring)."""
  cores = len(os.sched_getaffinity(0))
  lines = []
  for path in paths:
    limit = 0 if path == 'host' else config.input.on_device_max_mb
    c = config.copy_and_resolve_references()
    c.input.on_device_max_mb = limit
    start = time.perf_counter()
    setup = supernet.Setup.create(c)
    feed = setup.feed
    if path == 'device' and feed.name != 'device':
      lines.append({'bench': 'input_pipeline', 'path': path,
                    'skipped': f'the device feed does not apply: '
                               f'{feed.describe()}'})
      continue
    if feed.name == 'device':
      jax.block_until_ready(feed.examples)
    setup_s = time.perf_counter() - start
    input_s = _input_seconds(setup, feed, steps)
    step_s, train_s = _step_seconds(setup, feed, steps)
    batch = c.input.batch_size
    input_rate = batch * steps / input_s
    step_rate = batch * steps / step_s
    train_rate = batch * steps / train_s
    lines.append({
        'bench': 'input_pipeline', 'path': feed.name,
        'model': c.model.name, 'source': c.input.source,
        'augment': c.input.augment, 'batch': batch, 'steps': steps,
        'num_threads': c.input.num_threads, 'workers': c.input.workers,
        'setup_s': round(setup_s, 2),
        'input_images_per_s': round(input_rate, 1),
        'step_images_per_s': round(step_rate, 1),
        'train_images_per_s': round(train_rate, 1),
        'cores': cores,
        'input_images_per_s_per_core': round(input_rate / cores, 1),
        'train_images_per_s_per_core': round(train_rate / cores, 1),
        'input_keeps_up': input_rate >= step_rate,
        'devices': jax.device_count(),
        'platform': jax.devices()[0].platform})
  return lines


def _input_seconds(setup, feed, steps: int) -> float:
  """Seconds the feed takes to deliver batches 1..steps, alone."""
  if feed.name != 'device':
    with feed.batches(0, steps + 1) as batches:
      next(batches)  # warm the thread pool or the workers, the file cache
      start = time.perf_counter()
      for _ in batches:
        pass
      return time.perf_counter() - start
  build = jax.jit(feed.build_batch)
  with feed.batches(0, steps + 1) as batches:
    positions = [parallel.global_batch(b, setup.mesh)['position']
                 for b in batches]
  jax.block_until_ready(build(feed.examples, positions[0], 0))
  start = time.perf_counter()
  out = [build(feed.examples, p, step) for step, p in enumerate(positions)
         if step]
  jax.block_until_ready(out)
  return time.perf_counter() - start


def _step_seconds(setup, feed, steps: int) -> tuple[float, float]:
  """Seconds of supernet steps 1..steps on batch 0 alone (the step without
  its input), then of steps 1..steps fed as training feeds them."""
  step_fn = setup.jit_train_step()
  state = setup.initial_state()
  seconds = []
  with feed.batches(0, steps + 1) as batches:
    batches = iter(batches)
    first = parallel.global_batch(next(batches), setup.mesh)
    state, metrics = step_fn(state, first, *setup.step_args(0))
    for fed in (False, True):
      jax.block_until_ready((state, metrics))
      start = time.perf_counter()
      for step in range(1, steps + 1):
        batch = (parallel.global_batch(next(batches), setup.mesh) if fed
                 else first)
        state, metrics = step_fn(state, batch, *setup.step_args(step))
      jax.block_until_ready((state, metrics))
      seconds.append(time.perf_counter() - start)
  return seconds[0], seconds[1]


_STEPS = flags.DEFINE_integer('steps', 20, 'Batches to time.')
_PATHS = flags.DEFINE_list('paths', list(PATHS), 'Feeds to measure.')


def main(argv) -> None:
  del argv
  for line in measure(app.config(), _STEPS.value, _PATHS.value):
    print(json.dumps(line), flush=True)


if __name__ == '__main__':
  app.run(main, required=('config',))
