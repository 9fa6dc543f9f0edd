"""Input images/s against train-step images/s for one config.

  python bench/input_pipeline.py --config=configs/cifar10.py \
      --config.model.name=resnet20_cifar \
      --config.input.source=image_folder --config.input.data_dir=DIR \
      [--steps 20]

Prints one JSON line: input_images_per_s (this host building training
batches: read, decode, augment, normalize, `--steps` batches, one thread
pool of input.num_threads) and train_images_per_s (the jitted supernet step
of the config, its model and optimizer, on those batches, after one
compiling step), and whether the input keeps up.
"""

import json
import time

from absl import flags
import jax

from bcnet_jax.run import app
from bcnet_jax.run import parallel
from bcnet_jax.space import sampling
from bcnet_jax.supernet import stage as supernet

# --config is bcnet_jax.app's flag (defined once, there).
_STEPS = flags.DEFINE_integer('steps', 20, 'Batches to time.')


def main(argv) -> None:
  del argv
  config = app.config()
  setup = supernet.Setup.create(config)
  data = setup.data
  data.train_batch(0)  # warm the thread pool and file cache
  start = time.perf_counter()
  batches = [data.train_batch(step) for step in range(1, _STEPS.value + 1)]
  input_s = time.perf_counter() - start

  mesh = setup.mesh
  step_fn = setup.jit_train_step()
  state = setup.initial_state()
  space = setup.model.space
  state, metrics = step_fn(state, parallel.global_batch(batches[0], mesh),
                           sampling.widths_for_step(space, 0, 0))
  jax.block_until_ready(metrics)
  start = time.perf_counter()
  for step, batch in enumerate(batches[1:], 1):
    state, metrics = step_fn(state, parallel.global_batch(batch, mesh),
                             sampling.widths_for_step(space, 0, step))
  jax.block_until_ready((state, metrics))
  train_s = time.perf_counter() - start
  batch = config.input.batch_size
  input_rate = batch * _STEPS.value / input_s
  train_rate = batch * (_STEPS.value - 1) / train_s
  print(json.dumps({
      'bench': 'input_pipeline', 'model': config.model.name,
      'source': config.input.source, 'augment': config.input.augment,
      'batch': batch, 'steps': _STEPS.value,
      'num_threads': config.input.num_threads,
      'input_images_per_s': round(input_rate, 1),
      'train_images_per_s': round(train_rate, 1),
      'input_keeps_up': input_rate >= train_rate,
      'devices': jax.device_count()}))


if __name__ == '__main__':
  app.run(main, required=('config',))
