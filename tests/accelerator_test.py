"""bench/accelerator.py at --size=tiny on the CPU: the device run's code
path end to end (real MNIST digits), killed and rerun: it continues without
redoing what it finished, and writes its JSON and tables."""

import json
import pathlib
import signal
import subprocess
import sys
import time

from absl.testing import absltest

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


class AcceleratorTest(absltest.TestCase):

  def test_killed_run_continues_and_writes_its_results(self):
    out = pathlib.Path(self.create_tempdir().full_path)
    process = subprocess.Popen(
        accelerator_command(out), cwd=ROOT, env=SUBPROCESS_ENV,
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
