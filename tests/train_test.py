"""The train program on the testing config (real MNIST digits): summary,
metrics, idempotent reruns, resume after SIGKILL, corrupt, foreign and
structurally different checkpoints, NaN loss, and the commands' errors."""

import contextlib
import io
import json
import os
import pathlib
import shutil
import signal
import subprocess
import tempfile
import time
from unittest import mock

from absl.testing import absltest
import jax.numpy as jnp
import numpy as np

from bcnet_jax import training as train
from bcnet_jax.run import checkpoint
from bcnet_jax.run import config_utils
from bcnet_jax.run import stages as run
from bcnet_jax.run.data import pipeline
from bcnet_jax.supernet import stage as supernet
from configs import testing as testing_config
from tests.programs import command
from tests.programs import KILLED_ENV
from tests.programs import ROOT
from tests.programs import snapshot
from tests.programs import SUBPROCESS_ENV

# These runs take the host feed (built by the host's threads, as large
# datasets are); the testing config's default, the device feed, resumes in
# feed_test and trains everywhere else.
HOST_FEED = {'input.on_device_max_mb': 0}


def config(**overrides):
  c = testing_config.get_config()
  c.update_from_flattened_dict({**HOST_FEED, **overrides})
  return c


def checkpoint_steps(workdir) -> list[int]:
  folder = pathlib.Path(workdir, 'checkpoints')
  return sorted(int(p.name) for p in folder.iterdir() if p.name.isdigit())


def metric_steps(workdir, prefix: str) -> list[int]:
  """Steps of the metrics.jsonl records with a key starting with prefix."""
  lines = pathlib.Path(workdir, 'metrics.jsonl').read_text().splitlines()
  return [r['step'] for r in map(json.loads, lines)
          if any(k.startswith(prefix) for k in r)]


def train_command(workdir, *overrides):
  return command('train', '--config=configs/testing.py',
                 f'--workdir={workdir}', '--config.input.on_device_max_mb=0',
                 *overrides)


class TrainTest(absltest.TestCase):

  @classmethod
  def setUpClass(cls):
    super().setUpClass()
    cls.tmp = tempfile.mkdtemp()
    cls.reference_dir = os.path.join(cls.tmp, 'reference')
    cls.reference = train.train_and_evaluate(config(), cls.reference_dir)
    # A finished 10-step run that tests copy and change.
    cls.short_dir = os.path.join(cls.tmp, 'short')
    cls.short = train.train_and_evaluate(config(total_steps=10), cls.short_dir)

  def copy_of_short(self, name) -> str:
    workdir = os.path.join(self.tmp, name)
    shutil.copytree(self.short_dir, workdir)
    return workdir

  def test_summary_metrics_and_checkpoints(self):
    summary = self.reference
    self.assertEqual(summary['steps'], 30)
    self.assertLen(summary['params_sha256'], 64)
    self.assertTrue(np.isfinite(summary['final_loss']))
    for name in ('smallest', 'full', 'random0'):
      self.assertBetween(summary[f'eval/{name}/score'], 0.0, 1.0)
    self.assertEqual(summary['eval_widths']['full'], [20] * 12)
    self.assertEqual(summary['eval_score'],
                     "score = mean of the left and right paths' accuracy")
    on_disk = json.loads(pathlib.Path(self.reference_dir,
                                      'summary.json').read_text())
    self.assertEqual(on_disk, summary)
    self.assertEqual(metric_steps(self.reference_dir, 'train/'),
                     [5, 10, 15, 20, 25, 30])
    self.assertEqual(metric_steps(self.reference_dir, 'eval/'), [30])
    self.assertTrue(any(p.name.startswith('events.out.tfevents') for p in
                        pathlib.Path(self.reference_dir,
                                     'tensorboard').iterdir()))
    self.assertEqual(checkpoint_steps(self.reference_dir), [25, 30])

  def test_rerunning_a_finished_run_writes_nothing(self):
    before = snapshot(self.reference_dir)
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
      again = train.train_and_evaluate(config(), self.reference_dir)
    self.assertEqual(again, self.reference)
    self.assertIn('this run is complete (step 30); its summary is '
                  f'{os.path.join(self.reference_dir, "summary.json")}',
                  out.getvalue())
    self.assertEqual(snapshot(self.reference_dir), before)

  def test_raising_the_step_count_continues_the_run(self):
    workdir = self.copy_of_short('longer')
    summary = train.train_and_evaluate(config(total_steps=15), workdir)
    self.assertEqual((summary['first_step_this_run'], summary['steps']),
                     (10, 15))
    self.assertEqual(metric_steps(workdir, 'train/'), [5, 10, 15])
    self.assertEqual(metric_steps(workdir, 'eval/'), [10, 15])
    self.assertEqual(checkpoint_steps(workdir), [10, 15])

  def test_restarts_record_each_step_once(self):
    workdir = self.copy_of_short('restarted')
    # With an evaluation every 5 steps. As if killed after step 10's metrics
    # were written, before its checkpoint: the rerun restores step 5, redoes
    # the evaluation owed there (a checkpoint is saved before its step's
    # evaluation) and steps 6..10.
    every_5 = config(total_steps=10, eval_every_steps=5)
    shutil.rmtree(os.path.join(workdir, 'checkpoints', '10'))
    os.remove(os.path.join(workdir, 'summary.json'))
    summary = train.train_and_evaluate(every_5, workdir)
    self.assertEqual(summary['first_step_this_run'], 5)
    self.assertEqual(summary['params_sha256'], self.short['params_sha256'])
    self.assertEqual(metric_steps(workdir, 'train/'), [5, 10])
    self.assertEqual(metric_steps(workdir, 'eval/'), [5, 10])
    # Killed after the final checkpoint, before the summary: only the final
    # evaluation is redone, and recorded once.
    os.remove(os.path.join(workdir, 'summary.json'))
    again = train.train_and_evaluate(every_5, workdir)
    self.assertEqual(again['first_step_this_run'], 10)
    self.assertEqual(again['final_loss'], summary['final_loss'])
    self.assertEqual(metric_steps(workdir, 'train/'), [5, 10])
    self.assertEqual(metric_steps(workdir, 'eval/'), [5, 10])
    # Killed before its first checkpoint, the last line cut short: the rerun
    # starts from scratch and keeps none of the old records.
    shutil.rmtree(os.path.join(workdir, 'checkpoints'))
    os.remove(os.path.join(workdir, 'summary.json'))
    with open(os.path.join(workdir, 'metrics.jsonl'), 'a') as f:
      f.write('{"step": 3, "train/lo')
    scratch = train.train_and_evaluate(every_5, workdir)
    self.assertEqual(scratch['first_step_this_run'], 0)
    self.assertEqual(scratch['params_sha256'], self.short['params_sha256'])
    self.assertEqual(metric_steps(workdir, 'train/'), [5, 10])
    self.assertEqual(metric_steps(workdir, 'eval/'), [5, 10])

  def test_sigkill_then_rerun_gives_the_same_parameters(self):
    workdir = os.path.join(self.tmp, 'killed')
    process = subprocess.Popen(
        train_command(workdir), cwd=ROOT, env=KILLED_ENV,
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 300
    while time.time() < deadline and process.poll() is None:
      if pathlib.Path(workdir, 'checkpoints').exists() and checkpoint_steps(
          workdir):
        process.send_signal(signal.SIGKILL)
        break
      time.sleep(0.02)
    self.assertEqual(process.wait(), -signal.SIGKILL,
                     'the run ended before it could be killed')
    steps_left = checkpoint_steps(workdir)
    self.assertLess(max(steps_left), 30)
    out = subprocess.run(train_command(workdir), cwd=ROOT, env=SUBPROCESS_ENV,
                         capture_output=True, text=True, check=True)
    summary = json.loads(out.stdout.strip().splitlines()[-1])
    self.assertEqual(summary['first_step_this_run'], max(steps_left))
    self.assertEqual(summary['params_sha256'],
                     self.reference['params_sha256'])
    self.assertEqual(metric_steps(workdir, 'train/'),
                     [5, 10, 15, 20, 25, 30])

  def assert_falls_back_to_step_5(self, workdir, reason):
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
      summary = train.train_and_evaluate(config(total_steps=10), workdir)
    self.assertRegex(out.getvalue().splitlines()[0],
                     f'^warning: the checkpoint of step 10 is unreadable '
                     f'\\({reason}.*\\); moved to .*unreadable_checkpoints/'
                     '10-.*; falling back to step 5$')
    self.assertEqual(summary['first_step_this_run'], 5)
    self.assertEqual(summary['params_sha256'], self.short['params_sha256'])
    # Step 10 was saved anew; the unreadable one is kept aside.
    self.assertEqual(checkpoint_steps(workdir), [5, 10])
    self.assertLen(list(pathlib.Path(workdir, 'unreadable_checkpoints'
                                     ).iterdir()), 1)

  def data_files(self, workdir, step):
    files = sorted((p for p in pathlib.Path(
        workdir, 'checkpoints', str(step), 'state').rglob('d/*')
                    if p.is_file()), key=lambda p: p.stat().st_size)
    self.assertNotEmpty(files)
    return files

  def test_arrays_unlike_their_digest_are_caught(self):
    # Bytes flipped in a data file mostly break its compression (the next
    # test); values that still decode are caught by the digest. Made here
    # deterministically: the digest of step 5's arrays on step 10.
    workdir = self.copy_of_short('unlike_digest')
    digests = [pathlib.Path(workdir, 'checkpoints', str(step), 'digest',
                            'metadata') for step in (5, 10)]
    digests[1].write_text(digests[0].read_text())
    self.assert_falls_back_to_step_5(
        workdir, 'its arrays differ from the digest written when it was saved')

  def test_undecodable_checkpoint_falls_back(self):
    # Bit rot all over the data files, same sizes: zstd cannot decode them
    # (orbax wraps TensorStore's ValueError; the cause is reported).
    workdir = self.copy_of_short('undecodable')
    for path in self.data_files(workdir, 10):
      data = bytearray(path.read_bytes())
      for i in range(0, len(data), 4096):
        data[i:i + 64] = bytes(b ^ 0xFF for b in data[i:i + 64])
      path.write_bytes(bytes(data))
    self.assert_falls_back_to_step_5(workdir, 'ValueError: ')

  def test_structure_change_is_an_error_and_moves_nothing(self):
    setup = supernet.Setup.create(config(total_steps=10))
    state = setup.initial_state()
    # As if the code had changed: the pool is gone, a parameter was added
    # and one has another shape.
    params = dict(state.params)
    params['new_head'] = {'kernel': jnp.zeros((3, 3))}
    params['classifier'] = {**params['classifier'],
                            'bias': jnp.zeros((11,))}
    changed = state.replace(params=params, pool=None)
    before = snapshot(self.short_dir)
    checkpoints = run.checkpoints(setup, self.short_dir)
    with self.assertRaises(checkpoint.CheckpointMismatch) as raised:
      checkpoints.restore_latest(changed)
    checkpoints.close()
    message = str(raised.exception)
    self.assertIn('step 10', message)
    self.assertIn('missing in the checkpoint: params.new_head.kernel',
                  message)
    self.assertIn("not in this code's train state: pool.", message)
    self.assertIn('params.classifier.bias checkpoint (10,) float32, this '
                  'code (11,) float32', message)
    self.assertIn('Nothing was moved', message)
    self.assertEqual(snapshot(self.short_dir), before)

  def test_checkpoint_without_digest_is_restored_with_a_warning(self):
    # As written by bcnet_jax 0.1, before digests: readable, not verifiable.
    workdir = self.copy_of_short('no_digest')
    shutil.rmtree(os.path.join(workdir, 'checkpoints', '10', 'digest'))
    setup = supernet.Setup.create(config(total_steps=10))
    checkpoints = run.checkpoints(setup, workdir)
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
      restored = checkpoints.restore_latest(setup.initial_state())
    checkpoints.close()
    self.assertEqual(int(restored.step), 10)
    self.assertEqual(checkpoint.tree_sha256(restored.params),
                     self.short['params_sha256'])
    self.assertIn('step 10 has no digest', out.getvalue())

  def test_a_failing_read_that_is_not_damage_moves_nothing(self):
    # TensorStore reports every failure as ValueError; out of memory is not
    # a damaged checkpoint.
    setup = supernet.Setup.create(config(total_steps=10))
    before = snapshot(self.short_dir)
    checkpoints = run.checkpoints(setup, self.short_dir)
    out_of_memory = ValueError('RESOURCE_EXHAUSTED: cannot allocate')
    with mock.patch.object(checkpoints.manager, 'restore',
                           side_effect=out_of_memory):
      with self.assertRaisesRegex(ValueError, 'RESOURCE_EXHAUSTED'):
        checkpoints.restore_latest(setup.initial_state())
    checkpoints.close()
    self.assertEqual(snapshot(self.short_dir), before)

  def test_wrapped_read_errors_are_damage_unless_resources(self):
    def raised(message, wrap=True):
      try:
        try:
          raise ValueError(message)
        except ValueError as e:
          if wrap:  # as orbax wraps TensorStore's read errors
            raise Exception('Encountered error while reading array') from e
          raise
      except Exception as e:  # pylint: disable=broad-except
        return e
    corrupt = 'FAILED_PRECONDITION: ZSTD_decompressStream() failed'
    self.assertTrue(checkpoint._damaged(raised(corrupt)))
    self.assertTrue(checkpoint._damaged(raised(corrupt, wrap=False)))
    self.assertFalse(checkpoint._damaged(raised('RESOURCE_EXHAUSTED: oom')))
    self.assertFalse(checkpoint._damaged(RuntimeError('XLA out of memory')))

  def test_foreign_checkpoint_is_a_clear_error(self):
    with self.assertRaisesRegex(
        checkpoint.ForeignCheckpoint,
        r'another run: seed: checkpoint 0, this run 1'):
      train.train_and_evaluate(config(seed=1), self.reference_dir)

  def test_non_finite_loss_stops_and_keeps_the_good_checkpoint(self):
    workdir = self.copy_of_short('nan')
    train_batch = pipeline.Input.train_batch

    def poisoned(data, step):  # the loss of step 11 is not finite
      batch = train_batch(data, step)
      return {**batch, 'image': batch['image'] * np.nan}

    with mock.patch.object(pipeline.Input, 'train_batch', poisoned), \
        self.assertRaisesRegex(FloatingPointError,
                               'non-finite loss .* at step 15'):
      train.train_and_evaluate(config(), workdir)
    self.assertEqual(checkpoint_steps(workdir), [5, 10])

  def test_evaluate_workdir_rescores_without_writing(self):
    before = snapshot(self.reference_dir)
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
      scores = supernet.evaluate_workdir(config(), self.reference_dir)
    self.assertEqual(scores['step'], 30)
    for key, value in self.reference.items():
      if key.startswith('eval/'):
        self.assertEqual(scores[key], value, key)
    self.assertIn('full (20 of 20 bins: the nominal network)', out.getvalue())
    self.assertEqual(snapshot(self.reference_dir), before)

  def test_bad_input_is_one_line_and_exit_status_2(self):
    tmp = pathlib.Path(self.create_tempdir().full_path)
    a_file = tmp / 'a_file'
    a_file.write_text('')
    cases = {  # name: (command, what stderr says)
        'typo': (train_command(tmp / 'w1', '--config.optim.learnig_rate=1'),
                 'no such field.*learnig_rate.*learning_rate'),
        'missing config': (command('train', '--config=configs/nothere.py',
                                   f'--workdir={tmp / "w2"}'),
                           'cannot load --config=configs/nothere.py.*No such'
                           ' file'),
        'unknown model': (train_command(tmp / 'w3', '--config.model.name=x'),
                          "unknown model 'x'; choose one of resnet20_cifar"),
        'data not prepared': (
            command('train', '--config=configs/cifar10.py',
                    f'--workdir={tmp / "w4"}',
                    f'--config.input.data_dir={tmp}',
                    '--config.input.eval_batch_size=400'),  # 8 devices
            'not prepared.*tfds build cifar10 --file_format=array_record'),
        'workdir is a file': (train_command(a_file),
                              'exists and is not a directory'),
        'foreign checkpoint': (
            train_command(self.reference_dir, '--config.seed=1'),
            'another run: seed: checkpoint 0, this run 1'),
        'evaluate, no flags': (command('evaluate'), 'flag --workdir'),
        'evaluate, no checkpoint': (
            command('evaluate', '--config=configs/testing.py',
                    f'--workdir={tmp / "w5"}'),
            'no readable supernet checkpoint.*train one first'),
    }
    before = snapshot(self.reference_dir)
    running = {name: subprocess.Popen(
        argv, cwd=ROOT, env=SUBPROCESS_ENV, stdout=subprocess.PIPE,
        stderr=subprocess.PIPE, text=True) for name, (argv, _) in cases.items()}
    for name, process in running.items():
      stdout, stderr = process.communicate()
      with self.subTest(name):
        self.assertEqual(process.returncode, 2, stderr)
        self.assertEqual(stdout, '')
        self.assertNotIn('Traceback', stderr)
        self.assertLen(stderr.strip().splitlines(), 1, stderr)
        self.assertRegex(stderr, '^error: ' + '.*' + cases[name][1])
    self.assertEqual(sorted(p.name for p in tmp.iterdir()), ['a_file'])
    self.assertEqual(snapshot(self.reference_dir), before)


class ConfigTest(absltest.TestCase):

  def test_search_budget_in_macs_or_as_a_fraction(self):
    search = config_utils.base_config().search
    with self.assertRaisesRegex(ValueError, 'exactly one of'):
      config_utils.macs_budget(search, 1000)
    search.macs_fraction = 0.5
    self.assertEqual(config_utils.macs_budget(search, 1000), 500.0)
    search.macs_budget = 400
    with self.assertRaisesRegex(ValueError, 'exactly one of'):
      config_utils.macs_budget(search, 1000)
    search.macs_fraction = None
    self.assertEqual(config_utils.macs_budget(search, 1000), 400.0)
    search.macs_budget, search.macs_fraction = None, 1.5
    with self.assertRaisesRegex(ValueError, r'must be in \(0, 1\]'):
      config_utils.macs_budget(search, 1000)

  def test_minival_evaluation_needs_a_minival_split(self):
    with self.assertRaisesRegex(ValueError, 'minival_size >= 1'):
      supernet.Setup.create(config(**{'input.minival_size': 0}))

  def test_every_config_loads_locked(self):
    import importlib  # pylint: disable=g-import-not-at-top
    for path in sorted((ROOT / 'configs').glob('*.py')):
      module = importlib.import_module(f'configs.{path.stem}')
      c = module.get_config()
      self.assertTrue(module.__doc__.strip(), path.name)
      self.assertEqual(c.eval.split, 'minival', path.name)  # never test
      c.lock()
      with self.assertRaisesRegex(AttributeError, 'learnig_rate'):
        c.optim.learnig_rate = 0.1


if __name__ == '__main__':
  absltest.main()
