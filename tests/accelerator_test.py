"""bench/accelerator.py at --size=tiny on the CPU: the device run's code
path end to end (real MNIST digits), killed and rerun: it continues without
redoing what it finished, and writes its JSON and tables."""

import importlib
import json
import pathlib
import signal
import subprocess
import sys
import time

from absl.testing import absltest

from tests.programs import KILLED_ENV
from tests.programs import ROOT
from tests.programs import SUBPROCESS_ENV

PARTS = ('device', 'step', 'step_winners', 'evaluator', 'input',
         'channel_bench_macro')


def accelerator_command(out):
  return [sys.executable, 'bench/accelerator.py', '--size=tiny',
          f'--out={out}']


def saved(out: pathlib.Path) -> dict:
  try:
    return json.loads((out / 'results.json').read_text())
  except (OSError, ValueError):  # not written yet
    return {}


def accelerator_module():
  """bench/accelerator.py, imported as its command runs it."""
  sys.path.insert(0, str(ROOT / 'bench'))
  try:
    return importlib.import_module('accelerator')
  finally:
    sys.path.remove(str(ROOT / 'bench'))


def step_line(model, mode, seconds, compile_s=30.0, dtype='float32'):
  return {'bench': 'train_step', 'model': model, 'batch': 256, 'mode': mode,
          'dtype': dtype, 'seconds_per_step': seconds, 'compile_s': compile_s}


class PlanTest(absltest.TestCase):
  """The device size's sizing, on figures of the kind a GPU gives."""

  def setUp(self):
    super().setUp()
    self.acc = accelerator_module()
    self.results = {
        'step': {self.acc.entry_key('cbm_mobilenet', 256, mode, 'float32'):
                 step_line('cbm_mobilenet', mode, seconds)
                 for mode, seconds in (('fused', 0.04), ('ua', 0.01))},
        'evaluator': {'candidates_per_s': 25.0}}

  def test_the_experiment_trains_what_fits_before_its_share(self):
    plan = self.acc.plan_steps(self.results, spent_s=60.0, budget_s=480.0,
                               steps_per_epoch=187)
    # 0.85 x 480 - 60 s spent - 60 s scoring (1.5 x 1,000 / 25) - 2 x (2 x
    # 30 s compiles + 20 s decoding + 10 s) = 108 s, at 1.1 x 0.05 s a step.
    self.assertEqual(plan['steps'], int(108 / 0.055))
    self.assertAlmostEqual(plan['epochs'], plan['steps'] / 187, places=3)
    self.assertEqual(plan['predicted_scoring_s'], 60.0)
    late = self.acc.plan_steps(self.results, spent_s=450.0, budget_s=480.0,
                               steps_per_epoch=187)
    self.assertEqual(late['steps'], 20)  # the floor: it still runs

  def test_the_fastest_bcnet_step_per_model_and_dtype(self):
    steps = {str(i): step_line('resnet20_cifar', mode, seconds)
             for i, (mode, seconds) in enumerate(
                 (('plain', 0.01), ('fused', 0.05),
                  ('fused_pass_by_pass', 0.04), ('reference', 0.09)))}
    steps['ua only'] = step_line('cbm_mobilenet', 'ua', 0.01)
    self.assertEqual(self.acc.winners(steps),
                     {'resnet20_cifar/256/float32': 'fused_pass_by_pass'})

  def test_the_tables_list_an_entry_the_device_memory_could_not_hold(self):
    results = {
        'size': 'device', 'device': {'count': 1, 'kind': 'H100',
                                     'platform': 'gpu', 'python': '3.12',
                                     'packages': {'jax': '0.12.1'}},
        'step': {'a': {**step_line('mobilenetv2', 'fused', 0.2),
                       'images_per_s': 640.0, 'subnet_images_per_s': 2560.0,
                       'peak_bytes': 2 ** 30},
                 'b': {'bench': 'train_step', 'model': 'mobilenetv2',
                       'batch': 128, 'mode': 'reference', 'dtype': 'float32',
                       'skipped': 'out of device memory at this batch'}},
        'step_winners': {}, 'evaluator': None, 'input': None,
        'channel_bench_macro': None}
    table = self.acc.markdown(results)
    self.assertIn('| mobilenetv2 | 256 | float32 | fused | 0.2 |', table)
    self.assertIn('mobilenetv2 batch 128 float32 reference: out of device '
                  'memory at this batch', table)


class AcceleratorTest(absltest.TestCase):

  def test_killed_run_continues_and_writes_its_results(self):
    out = pathlib.Path(self.create_tempdir().full_path)
    process = subprocess.Popen(
        accelerator_command(out), cwd=ROOT, env=KILLED_ENV,
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 600
    while time.time() < deadline and process.poll() is None:
      if saved(out).get('evaluator'):  # a part done, the experiment next
        process.send_signal(signal.SIGKILL)
        break
      time.sleep(0.05)
    self.assertEqual(process.wait(), -signal.SIGKILL,
                     'the run ended before it could be killed')
    before = saved(out)
    self.assertIsNone(before['channel_bench_macro'] and
                      before['channel_bench_macro'].get('finished'))

    rerun = subprocess.run(accelerator_command(out), cwd=ROOT,
                           env=SUBPROCESS_ENV, capture_output=True,
                           text=True, check=False)
    self.assertEqual(rerun.returncode, 0, rerun.stderr[-2000:])
    self.assertIn('results.json: continuing', rerun.stdout)
    self.assertNotRegex(rerun.stdout, r'(?m)^\[\s*[\d.]+ s\] evaluator:')
    results = saved(out)
    self.assertEqual(results['evaluator'], before['evaluator'])
    self.assertContainsSubset(PARTS, results)
    self.assertEqual(results['device']['platform'], 'cpu')
    self.assertEqual({line['mode'] for line in results['step'].values()
                      if 'mode' in line}, {'plain', 'fused'})
    for line in results['step'].values():
      if 'mode' in line:
        self.assertGreater(line['images_per_s'], 0)
    self.assertEqual({line['path'] for line in results['input']},
                     {'device', 'host'})
    self.assertGreater(results['evaluator']['candidates_per_s'], 0)
    experiment = results['channel_bench_macro']
    self.assertTrue(experiment['finished'])
    self.assertEqual(experiment['record']['steps'], 4)
    for name in ('bcnet', 'ua'):
      scores = json.loads(pathlib.Path(experiment['scores'][name]
                                       ).read_text())
      self.assertLen(scores, 10)
    table = (out / 'results.md').read_text()
    for heading in ('## Train step', '## Batch evaluator', '## Input',
                    '## Channel-Bench-Macro'):
      self.assertIn(heading, table)
    # A finished run, rerun, redoes nothing and changes nothing.
    again = subprocess.run(accelerator_command(out), cwd=ROOT,
                           env=SUBPROCESS_ENV, capture_output=True,
                           text=True, check=True)
    self.assertNotRegex(again.stdout, r'(?m)^\[\s*[\d.]+ s\]')
    self.assertEqual(saved(out), results)


if __name__ == '__main__':
  absltest.main()
