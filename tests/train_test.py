"""The train program on the testing config (real MNIST digits): summary,
metrics, resume after SIGKILL, corrupt and foreign checkpoints, NaN loss,
config typos."""

import json
import os
import pathlib
import signal
import subprocess
import sys
import tempfile
import time

from absl.testing import absltest
import numpy as np

from bcnet_jax import train
from configs import testing as testing_config

ROOT = pathlib.Path(__file__).resolve().parents[1]


def config(**overrides):
  c = testing_config.get_config()
  c.update_from_flattened_dict(overrides)
  return c


def checkpoint_steps(workdir) -> list[int]:
  folder = pathlib.Path(workdir, 'checkpoints')
  return sorted(int(p.name) for p in folder.iterdir() if p.name.isdigit())


# The same devices (XLA_FLAGS) as this process, and no persistent compilation
# cache: jax writes cache entries in place, so a process killed while writing
# one leaves a truncated executable that crashes the next reader.
SUBPROCESS_ENV = {**os.environ, 'JAX_ENABLE_COMPILATION_CACHE': 'false'}
SUBPROCESS_ENV.pop('JAX_COMPILATION_CACHE_DIR', None)


def train_command(workdir, *overrides):
  return [sys.executable, '-m', 'bcnet_jax.train',
          '--config=configs/testing.py', f'--workdir={workdir}', *overrides]


class TrainTest(absltest.TestCase):

  @classmethod
  def setUpClass(cls):
    super().setUpClass()
    cls.tmp = tempfile.mkdtemp()
    cls.reference_dir = os.path.join(cls.tmp, 'reference')
    cls.reference = train.train_and_evaluate(config(), cls.reference_dir)

  def test_summary_metrics_and_checkpoints(self):
    summary = self.reference
    self.assertEqual(summary['steps'], 30)
    self.assertLen(summary['params_sha256'], 64)
    self.assertTrue(np.isfinite(summary['final_loss']))
    for name in ('min', 'max', 'random0'):
      self.assertBetween(summary[f'eval/{name}/score'], 0.0, 1.0)
    on_disk = json.loads(pathlib.Path(self.reference_dir,
                                      'summary.json').read_text())
    self.assertEqual(on_disk['params_sha256'], summary['params_sha256'])
    lines = [json.loads(l) for l in pathlib.Path(
        self.reference_dir, 'metrics.jsonl').read_text().splitlines()]
    self.assertEqual([l['step'] for l in lines if 'train/loss' in l],
                     [5, 10, 15, 20, 25, 30])
    self.assertTrue(any(p.name.startswith('events.out.tfevents') for p in
                        pathlib.Path(self.reference_dir,
                                     'tensorboard').iterdir()))
    self.assertEqual(checkpoint_steps(self.reference_dir), [25, 30])
    # Rerunning a finished run resumes at the end and changes nothing.
    again = train.train_and_evaluate(config(), self.reference_dir)
    self.assertEqual(again['first_step_this_run'], 30)
    self.assertEqual(again['params_sha256'], summary['params_sha256'])

  def test_sigkill_then_rerun_gives_the_same_parameters(self):
    workdir = os.path.join(self.tmp, 'killed')
    process = subprocess.Popen(
        train_command(workdir), cwd=ROOT, env=SUBPROCESS_ENV,
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

  def test_corrupt_latest_checkpoint_falls_back(self):
    workdir = os.path.join(self.tmp, 'corrupt')
    first = train.train_and_evaluate(config(total_steps=10), workdir)
    self.assertEqual(checkpoint_steps(workdir), [5, 10])
    # A partial write: every array data file of step 10 cut to half.
    data_files = [p for p in pathlib.Path(
        workdir, 'checkpoints', '10', 'state').rglob('d/*') if p.is_file()]
    self.assertNotEmpty(data_files)
    for path in data_files:
      path.write_bytes(path.read_bytes()[:path.stat().st_size // 2])
    summary = train.train_and_evaluate(config(total_steps=10), workdir)
    self.assertEqual(summary['first_step_this_run'], 5)
    self.assertEqual(summary['params_sha256'], first['params_sha256'])
    # Step 10 was saved anew; the unreadable one is kept aside.
    self.assertEqual(checkpoint_steps(workdir), [5, 10])
    self.assertLen(list(pathlib.Path(workdir, 'unreadable_checkpoints'
                                     ).iterdir()), 1)

  def test_foreign_checkpoint_is_a_clear_error(self):
    with self.assertRaisesRegex(
        ValueError, r'another run: seed: checkpoint 0, this run 1'):
      train.train_and_evaluate(config(seed=1), self.reference_dir)

  def test_non_finite_loss_stops_and_keeps_the_good_checkpoint(self):
    workdir = os.path.join(self.tmp, 'nan')
    train.train_and_evaluate(config(total_steps=10), workdir)
    # std 0 divides the images by zero: the loss of step 11 is not finite.
    with self.assertRaisesRegex(FloatingPointError,
                                'non-finite loss .* at step 15'):
      train.train_and_evaluate(config(**{'input.std': (0.0,)}), workdir)
    self.assertEqual(checkpoint_steps(workdir), [5, 10])


class ConfigTest(absltest.TestCase):

  def test_every_config_loads_locked(self):
    import importlib  # pylint: disable=g-import-not-at-top
    for path in sorted((ROOT / 'configs').glob('*.py')):
      module = importlib.import_module(f'configs.{path.stem}')
      c = module.get_config()
      self.assertTrue(module.__doc__.strip(), path.name)
      c.lock()
      with self.assertRaisesRegex(AttributeError, 'learnig_rate'):
        c.optim.learnig_rate = 0.1

  def test_typo_on_the_command_line_names_the_field(self):
    out = subprocess.run(
        train_command(self.create_tempdir().full_path,
                      '--config.optim.learnig_rate=0.1'),
        cwd=ROOT, env=SUBPROCESS_ENV, capture_output=True, text=True)
    self.assertNotEqual(out.returncode, 0)
    self.assertIn('learnig_rate', out.stderr)


if __name__ == '__main__':
  absltest.main()
