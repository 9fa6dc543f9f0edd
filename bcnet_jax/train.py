"""Supernet training: `python -m bcnet_jax.train --config=... --workdir=...`.

Rerunning the same command resumes from the last checkpoint in the workdir.
The workdir gets `checkpoints/` (orbax), `metrics.jsonl`, `tensorboard/`
event files and, at the end, `summary.json`. In Python:

  from bcnet_jax import train
  summary = train.train_and_evaluate(config, workdir)
"""

from __future__ import annotations

import concurrent.futures
import functools
import hashlib
import json
import os
import time
from typing import Any

from absl import app
from absl import flags
from absl import logging
import jax
import jax.numpy as jnp
import numpy as np
from ml_collections import config_flags
from tqdm import tqdm

from bcnet_jax import checkpoint
from bcnet_jax import config_utils
from bcnet_jax import evaluate
from bcnet_jax import metric_writer
from bcnet_jax import models
from bcnet_jax import optim
from bcnet_jax import parallel
from bcnet_jax import sampling
from bcnet_jax import state as state_lib
from bcnet_jax import steps
from bcnet_jax.data import pipeline

DTYPES = {'float32': jnp.float32, 'bfloat16': jnp.bfloat16}


def params_sha256(params: Any) -> str:
  """SHA-256 over the parameters' bytes, in flattened-path order."""
  digest = hashlib.sha256()
  for path, leaf in jax.tree_util.tree_flatten_with_path(
      jax.device_get(params))[0]:
    digest.update(jax.tree_util.keystr(path).encode())
    digest.update(np.ascontiguousarray(leaf).tobytes())
  return digest.hexdigest()


def _write_json(path: str, value: Any) -> None:
  tmp = f'{path}.tmp'
  with open(tmp, 'w') as f:
    json.dump(value, f, indent=1)
  os.replace(tmp, path)


def evaluate_widths(model, state, data: pipeline.Input, config: Any,
                    mesh) -> dict[str, float]:
  """Recalibrated scores of the fixed width vectors (DESIGN §4)."""
  def calibration():
    return (parallel.global_batch(b, mesh)
            for b in data.calibration_batches(config.eval.bn_calib_batches))

  def eval_batches():
    return (parallel.global_batch(b, mesh)
            for b in data.eval_batches(config.eval.split))

  out = {}
  for name, widths in evaluate.fixed_widths(
      model.space, config.eval.num_random, config.seed).items():
    result = evaluate.score(model, state.params, state.batch_stats, widths,
                            calibration=calibration,
                            eval_batches=eval_batches)
    for key in ('left', 'right', 'score'):
      out[f'eval/{name}/{key}'] = result[key]
  return out


def jit_supernet_step(config: Any, model, tx, mesh):
  """The supernet step of config.supernet, jitted over the mesh."""
  return parallel.jit_train_step(functools.partial(
      steps.train_step, model=model, tx=tx,
      objective=config.supernet.objective,
      complementary=config.supernet.complementary,
      implementation=config.supernet.implementation,
      label_smoothing=config.supernet.label_smoothing,
      dtype=DTYPES[config.supernet.dtype], seed=config.seed), mesh)


def train_and_evaluate(config: Any, workdir: str) -> dict[str, Any]:
  """Trains the supernet of `config` in `workdir`; returns the summary."""
  start_time = time.time()
  workdir = os.path.abspath(workdir)
  os.makedirs(workdir, exist_ok=True)
  logging.info('Config:\n%s', config)
  mesh = parallel.create_mesh()
  parallel.check_global_batch(config.input.batch_size, mesh)
  parallel.check_global_batch(config.input.eval_batch_size, mesh)

  if config.supernet.dtype not in DTYPES:
    raise ValueError(f'supernet.dtype must be one of {list(DTYPES)}, got '
                     f'{config.supernet.dtype!r}')
  data = pipeline.Input.create(config.input, seed=config.seed)
  data.check_calibration(config.eval.bn_calib_batches)
  spe = data.steps_per_epoch
  total_steps = config_utils.steps_from(config, 'total', spe)
  if total_steps is None:
    raise ValueError('set total_epochs or total_steps in the config')
  eval_every = config_utils.steps_from(config, 'eval_every', spe)
  space = models.get_space(config.model.name, config.model.bins,
                           config.model.min_bins)
  model = models.get_model(
      config.model.name, space=space, num_classes=data.num_classes,
      in_channels=config.input.channels,
      resolution=config.input.resolution, lowering=config.model.lowering)
  tx, schedule = optim.create_optimizer(
      config_utils.optimizer_config(config.optim, spe), total_steps)
  logging.info('%d steps (%d per epoch), global batch %d, %d devices',
               total_steps, spe, config.input.batch_size, jax.device_count())

  state = parallel.create_state(functools.partial(
      state_lib.create_train_state, model, tx,
      jax.random.key(config.seed), pool_size=config.supernet.pool_size), mesh)
  ckpt = checkpoint.Checkpoints(
      workdir, checkpoint.identity(config, data.num_classes),
      config.keep_checkpoints)
  restored = ckpt.restore_latest(state)
  state = state if restored is None else restored
  first_step = int(state.step)

  train_step = jit_supernet_step(config, model, tx, mesh)
  writer = metric_writer.MetricWriter(workdir)
  progress = tqdm(total=total_steps, initial=first_step, unit='step',
                  disable=jax.process_index() != 0, mininterval=2.0)
  last_log, last_time, metrics = first_step, time.time(), None
  prefetch = concurrent.futures.ThreadPoolExecutor(1)  # the next batch
  upcoming = prefetch.submit(data.train_batch, first_step)
  try:
    for step in range(first_step, total_steps):
      widths = sampling.widths_for_step(space, config.seed, step)
      batch = parallel.global_batch(upcoming.result(), mesh)
      if step + 1 < total_steps:
        upcoming = prefetch.submit(data.train_batch, step + 1)
      state, metrics = train_step(state, batch, widths)
      done = step + 1
      progress.update(1)
      is_last = done == total_steps
      if done % config.log_every_steps == 0 or is_last or (
          done % config.ckpt_every_steps == 0):
        values = jax.device_get(metrics)
        if not np.isfinite(values['loss']):
          raise FloatingPointError(
              f'non-finite loss ({values["loss"]}) at step {done}: training '
              f'stopped; the last good checkpoint in {ckpt.directory} is kept. '
              'Lower optim.learning_rate or check the input.')
        now = time.time()
        images_per_s = (done - last_log) * config.input.batch_size / max(
            now - last_time, 1e-9)
        last_log, last_time = done, now
        progress.set_postfix(loss=f'{values["loss"]:.4f}',
                             img_s=f'{images_per_s:.1f}')
        writer.write(done, {'train/loss': values['loss'],
                            'train/objective': values['objective'],
                            'train/grad_norm': values['grad_norm'],
                            'train/learning_rate': schedule(done - 1),
                            'train/images_per_s': images_per_s})
      if done % config.ckpt_every_steps == 0 or is_last:
        ckpt.save(done, state)
      if (eval_every and done % eval_every == 0) and not is_last:
        writer.write(done, evaluate_widths(model, state, data, config, mesh))
    final_eval = evaluate_widths(model, state, data, config, mesh)
    writer.write(total_steps, final_eval)
  finally:  # also on errors: no pending save is lost, files are closed
    progress.close()
    prefetch.shutdown(cancel_futures=True)
    ckpt.wait()
    ckpt.close()
    writer.close()
  summary = {
      'model': config.model.name, 'steps': total_steps,
      'first_step_this_run': first_step,
      'wall_time_s': round(time.time() - start_time, 2),
      'final_loss': (None if metrics is None
                     else float(jax.device_get(metrics)['loss'])),
      **final_eval,
      'loss_pool_best': float(jax.device_get(state.pool.losses)[0]),
      'params_sha256': params_sha256(state.params),
  }
  if jax.process_index() == 0:
    _write_json(os.path.join(workdir, 'summary.json'), summary)
  return summary


_CONFIG = config_flags.DEFINE_config_file(
    'config', None, 'Config file, e.g. configs/cifar10.py.', lock_config=True)
_WORKDIR = flags.DEFINE_string('workdir', None,
                               'Directory for checkpoints and metrics.')


def main(argv: list[str]) -> None:
  if len(argv) > 1:
    raise app.UsageError(f'unexpected arguments: {argv[1:]}')
  if not flags.FLAGS['verbosity'].present:  # orbax logs every file at INFO
    logging.set_verbosity(logging.WARNING)
  summary = train_and_evaluate(_CONFIG.value, _WORKDIR.value)
  print(json.dumps(summary), flush=True)


if __name__ == '__main__':
  flags.mark_flags_as_required(['config', 'workdir'])
  app.run(main)
