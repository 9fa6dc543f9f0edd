"""The training program of any stage (a stages.Stage: the supernet or
a retrained network), which bcnet_jax/training.py picks and hands over.

Rerunning resumes from the last checkpoint in the workdir; rerunning a
finished run says so and writes nothing; raising the step count continues
it. The workdir gets `checkpoints/` (orbax), `metrics.jsonl`,
`tensorboard/` event files, `config.json` (the run's config, which the
later stages read: run/run_config.py) and, at the end, `summary.json`.

  summary = program.run(setup, workdir, command='python -m ...')
"""

from __future__ import annotations

import contextlib
import json
import os
import time
from typing import Any

import jax
import numpy as np

from bcnet_jax.learning import state as state_lib
from bcnet_jax.run import checkpoint
from bcnet_jax.run import console
from bcnet_jax.run import errors
from bcnet_jax.run import files
from bcnet_jax.run import metric_writer
from bcnet_jax.run import parallel
from bcnet_jax.run import run_config
from bcnet_jax.run import stages
from bcnet_jax.run.data import pipeline


def _report(setup: stages.Stage, summary: dict[str, Any], workdir: str
            ) -> None:
  """The final table and the files written."""
  console.say()
  console.say(setup.table(summary))
  console.say()
  console.say('Wrote:')
  for name, what in (('summary.json', 'the numbers above and the run\'s'),
                     ('config.json', 'the run\'s config, which the later '
                      'stages read'),
                     ('metrics.jsonl', 'loss and evaluations per step'),
                     ('tensorboard', 'event files: tensorboard --logdir '
                      f'{workdir}'),
                     ('checkpoints', 'the last train states; rerun the same '
                      'command to resume')) + setup.written():
    console.say(f'  {os.path.join(workdir, name)}  ({what})')


def _periodic_evals_ahead(setup: stages.Stage, first_step: int) -> bool:
  """Whether a run from first_step evaluates before its last step."""
  every = setup.eval_every
  if not every:
    return False
  next_eval = max(-(-first_step // every), 1) * every
  return next_eval < setup.total_steps


def _announce(setup: stages.Stage, workdir: str, first_step: int) -> None:
  config, data = setup.config, setup.data
  res = config.input.resolution
  console.say(f'bcnet_jax.train: {setup.describe()}')
  console.say(f'data: {pipeline.describe_source(config.input)}, {res}x{res}'
              f'x{config.input.channels}, {data.num_classes} classes: '
              f'{len(data.train_indices):,} train, '
              f'{len(data.minival_indices):,} minival, '
              f'{len(data.eval_source):,} eval images')
  devices = jax.devices()
  epochs = setup.total_steps / data.steps_per_epoch
  kind = f'{devices[0].platform.upper()} device'
  console.say(f'{console.plural(len(devices), kind)}; global batch '
              f'{config.input.batch_size}; '
              f'{console.plural(setup.total_steps, "step")} '
              f'({console.plural(epochs, "epoch", "epochs")}); evaluation on '
              f'{stages.EVAL_SPLITS[config.eval.split]}'
              + (f' every {console.plural(setup.eval_every, "step")}'
                 if _periodic_evals_ahead(setup, first_step) else '')
              + ' and at the end')
  console.say(f'training batches: {setup.feed.describe()}')
  resumed = f' (resuming at step {first_step})' if first_step else ''
  console.say(f'workdir: {workdir}{resumed}')


def _finished_summary(path: str, total_steps: int,
                      state: state_lib.TrainState) -> dict[str, Any] | None:
  """The summary of this exact finished run, if one was written."""
  try:
    with open(path) as f:
      summary = json.load(f)
  except (OSError, ValueError):
    return None
  if (summary.get('steps') == total_steps and
      summary.get('params_sha256') == checkpoint.tree_sha256(state.params)):
    return summary
  return None


def run(setup: stages.Stage, workdir: str, command: str | None = None
        ) -> dict[str, Any]:
  """Trains `setup` (checked: nothing written yet) in `workdir` (checked
  by stages.check_workdir); returns the summary. `command`, the command line
  that asked for it, is kept in config.json."""
  start_time = time.time()
  state = setup.initial_state()
  summary_path = os.path.join(workdir, 'summary.json')
  ckpt = stages.checkpoints(setup, workdir)
  try:  # also on errors: pending saves finish, the manager is closed
    restored = ckpt.restore_latest(state)
    state = state if restored is None else restored
    first_step, total_steps = int(state.step), setup.total_steps
    if first_step > total_steps:
      raise errors.InvalidInput(
          f'{workdir} holds a checkpoint of step {first_step}, past this '
          f'config\'s {total_steps} steps: raise total_steps / total_epochs '
          'to continue it, or use another --workdir')
    if first_step == total_steps:
      finished = _finished_summary(summary_path, total_steps, state)
      if finished is not None:
        console.say(f'{workdir}: this run is complete (step {total_steps}); '
                    f'its summary is {summary_path}. Nothing was written; '
                    'raise total_steps or total_epochs to train further.')
        return finished
    _announce(setup, workdir, first_step)
    if jax.process_index() == 0:
      run_config.write(workdir, setup.config, command)
      setup.prepare(workdir)
    summary = _train(setup, state, ckpt, workdir, first_step)
  finally:
    ckpt.wait()
    ckpt.close()
  summary['wall_time_s_this_run'] = round(time.time() - start_time, 2)
  if jax.process_index() == 0:
    files.write_json_atomic(summary_path, summary)
  _report(setup, summary, workdir)
  return summary


def _train(setup: stages.Stage, state, ckpt: checkpoint.Checkpoints,
           workdir: str, first_step: int) -> dict[str, Any]:
  """Steps first_step..total_steps, evaluations, checkpoints: the summary."""
  config, mesh = setup.config, setup.mesh
  total_steps, eval_every = setup.total_steps, setup.eval_every

  def periodic_eval_at(step: int) -> bool:
    return bool(eval_every) and step % eval_every == 0 and (
        0 < step < total_steps)

  train_step = setup.jit_train_step()
  # A checkpoint is saved before its step's evaluation, so a run killed in
  # between owes it: a restart at that step (or at the last) redoes it.
  owed_eval = periodic_eval_at(first_step) or first_step == total_steps
  writer = metric_writer.MetricWriter(
      workdir, first_step, redone_at_start=('eval/',) if owed_eval else ())
  bar = console.StepBar(total_steps, first_step)
  last_log, last_loss = (first_step, time.time()), None
  feeding = contextlib.ExitStack()  # the feed's threads or processes
  try:
    if periodic_eval_at(first_step):
      writer.write(first_step, setup.evaluate(state, final=False,
                                              status=bar.status))
      bar.status('compiling')
    local_batches = feeding.enter_context(
        setup.feed.batches(first_step, total_steps))
    for step, local in zip(range(first_step, total_steps), local_batches):
      batch = parallel.global_batch(local, mesh)
      state, metrics = train_step(state, batch, *setup.step_args(step))
      done = step + 1
      bar.step_done(done)
      is_last = done == total_steps
      if done % config.log_every_steps == 0 or is_last or (
          done % config.ckpt_every_steps == 0):
        last_loss, last_log = _log(setup, writer, bar, metrics, done,
                                   last_log, ckpt.directory)
      if done % config.ckpt_every_steps == 0 or is_last:
        ckpt.save(done, state)
      if periodic_eval_at(done):
        writer.write(done, setup.evaluate(state, final=False,
                                          status=bar.status))
        bar.status('training')
    final_eval = setup.evaluate(state, final=True, status=bar.status)
    writer.write(total_steps, final_eval)
    if jax.process_index() == 0:
      setup.finish(workdir, state, bar.status)
  finally:  # also on errors: files are closed (the caller closes ckpt)
    bar.close()
    feeding.close()
    writer.close()
  if last_loss is None:  # resumed at the last step: the recorded loss
    last_loss = metric_writer.last_value(
        os.path.join(workdir, 'metrics.jsonl'), 'train/loss')
  return {
      'model': config.model.name, 'steps': total_steps,
      'first_step_this_run': first_step, 'final_loss': last_loss,
      'input_feed': setup.feed.name,
      **final_eval, **setup.summary_fields(state),
      'params_sha256': checkpoint.tree_sha256(state.params),
  }


def _log(setup: stages.Stage, writer: metric_writer.MetricWriter,
         bar: console.StepBar, metrics: dict[str, Any], done: int,
         last_log: tuple[int, float], checkpoints: str
         ) -> tuple[float, tuple[int, float]]:
  """Writes step `done`'s metrics, with the images per second since the
  last log (step, time); returns its loss and this log's (step, time). A
  non-finite loss stops training: the checkpoints so far are kept."""
  values = jax.device_get(metrics)
  if not np.isfinite(values['loss']):
    raise errors.TrainingDiverged(
        f'non-finite loss ({values["loss"]}) at step {done}: training '
        f'stopped; the last good checkpoint in {checkpoints} is kept. '
        'Lower optim.learning_rate or check the input.')
  now = time.time()
  images_per_s = (done - last_log[0]) * setup.config.input.batch_size / max(
      now - last_log[1], 1e-9)
  loss = float(values['loss'])
  bar.metrics(loss=f'{loss:.4f}', img_s=f'{images_per_s:.1f}')
  writer.write(done, {'train/loss': values['loss'],
                      'train/objective': values['objective'],
                      'train/grad_norm': values['grad_norm'],
                      'train/learning_rate': setup.schedule(done - 1),
                      'train/images_per_s': images_per_s})
  return loss, (done, now)
