"""A search that evolution alone cannot feed (issue 26): Channel-Bench-
Macro's MobileNet (7 groups of 4 bins) trained 4 steps on real CIFAR-10
JPEGs, searched with two parents, rare mutations and a narrow MACs band.
Its generations are filled from the prior and uniformly, it ends within the
budget, and a search killed (SIGKILL) after its first generation resumes to
the same arch. Skips where the CIFAR-10 JPEG copy is absent (data_test)."""

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

from bcnet_jax.run import console
from bcnet_jax.run import training as train
from bcnet_jax.searching import search
from configs import cbm_mobilenet
from tests.data_test import cifar_folder
from tests.programs import command
from tests.programs import ROOT
from tests.programs import SUBPROCESS_ENV

# The 'tiny' size of experiments/channel_bench_macro, and a search whose
# band (MACs in [0.9 F, F]) parents seldom breed into: 2 parents, mutation
# probability 0.05 per gene.
OVERRIDES = {
    'total_steps': 4, 'total_epochs': None, 'eval_every_steps': None,
    'eval_every_epochs': None, 'log_every_steps': 1, 'ckpt_every_steps': 1,
    'optim.warmup_epochs': 0.0, 'eval.num_random': 0,
    'input.source': 'image_folder', 'input.batch_size': 8,
    'input.minival_size': 16, 'input.eval_batch_size': 16,
    'input.num_threads': 2, 'eval.bn_calib_batches': 1,
    'search.macs_fraction': 0.5, 'search.band_low': 0.9,
    'search.population': 6, 'search.generations': 3, 'search.top_k': 2,
    'search.mutations': 3, 'search.crossovers': 3,
    'search.mutation_prob': 0.05}


def config():
  c = cbm_mobilenet.get_config()
  c.update_from_flattened_dict({**OVERRIDES, 'input.data_dir': cifar_folder()})
  return c


def flags() -> list[str]:
  """config() on the command line."""
  return ['--config=configs/cbm_mobilenet.py'] + [
      f'--config.{k}={v}' for k, v in {**OVERRIDES,
                                        'input.data_dir': cifar_folder()
                                        }.items()]


class SearchFillTest(absltest.TestCase):

  @classmethod
  def setUpClass(cls):
    super().setUpClass()
    cls.tmp = tempfile.mkdtemp()
    cls.trained = os.path.join(cls.tmp, 'trained')
    train.train_and_evaluate(config(), cls.trained)
    cls.searched = cls.copy_of_trained('searched')
    with mock.patch.object(console, 'say', wraps=console.say) as say:
      cls.summary = search.run(config(), cls.searched)
    cls.lines = [str(c.args[0]) for c in say.call_args_list if c.args]

  @classmethod
  def tearDownClass(cls):
    shutil.rmtree(cls.tmp)
    super().tearDownClass()

  @classmethod
  def copy_of_trained(cls, name: str) -> str:
    workdir = os.path.join(cls.tmp, name)
    shutil.copytree(cls.trained, workdir)
    return workdir

  def read(self, workdir: str, name: str) -> str:
    return pathlib.Path(workdir, 'search', name).read_text()

  def history(self, workdir: str, timed: bool = False) -> list[dict]:
    lines = [json.loads(line) for line in
             self.read(workdir, 'history.jsonl').splitlines()]
    return [{k: v for k, v in h.items() if timed or k != 'wall_time_s'}
            for h in lines]

  def test_generations_are_filled_and_the_arch_is_within_budget(self):
    state = json.loads(self.read(self.searched, 'state.json'))
    low, high = self.summary['band']
    evolved = [r for r in state['records'] if r['phase'] == 'evolution']
    keys = [tuple(r['widths']) for r in evolved]
    self.assertLen(set(keys), len(keys))  # each scored once
    for r in state['records']:
      if r['phase'] != 'uniform':
        self.assertBetween(r['macs'], low, high)
    history = self.history(self.searched)
    self.assertEqual([h['generation'] for h in history], [0, 1, 2, 3])
    self.assertEqual(history[0]['candidates']['wanted'], 6)
    for h in history[1:]:
      c = h['candidates']
      self.assertEqual(c['wanted'], 6)
      self.assertEqual(c['bred'] + c['prior'] + c['uniform'], 6)
    filled = sum(h['candidates']['prior'] + h['candidates']['uniform']
                 for h in history[1:])
    self.assertGreater(filled, 0, history)
    said = [line for line in self.lines if 'a peaked prior or a small band'
            in line]
    self.assertLen(said, sum(h['candidates']['bred'] < 6
                             for h in history[1:]))
    self.assertRegex(said[0], r'^generation \d: \d of 6 bred, \d drawn from '
                     r'the prior, \d drawn uniformly')
    self.assertLen(evolved, 6 + 3 * 6)
    arch = json.loads(self.read(self.searched, 'arch.json'))
    self.assertLessEqual(arch['macs'], arch['macs_budget'])
    self.assertEqual(arch['score'], max(r['score'] for r in evolved))

  def test_sigkill_after_a_generation_then_rerun_ends_with_the_same_arch(
      self):
    workdir = self.copy_of_trained('killed')
    state_path = pathlib.Path(workdir, 'search', 'state.json')
    process = subprocess.Popen(
        command('search', *flags(), f'--workdir={workdir}'), cwd=ROOT,
        env=SUBPROCESS_ENV, stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    while time.time() < deadline and process.poll() is None:
      if state_path.exists():
        process.send_signal(signal.SIGKILL)
        break
      time.sleep(0.01)
    self.assertEqual(process.wait(), -signal.SIGKILL,
                     'the search ended before it could be killed')
    done = json.loads(state_path.read_text())['units_done']
    self.assertBetween(done, 1, 9)  # of 4 generations, 1 + 4 baseline
    # units and the comparison
    subprocess.run(command('search', *flags(), f'--workdir={workdir}'),
                   cwd=ROOT, env=SUBPROCESS_ENV, check=True,
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    self.assertEqual(self.read(workdir, 'arch.json'),
                     self.read(self.searched, 'arch.json'))
    self.assertEqual(self.history(workdir), self.history(self.searched))


if __name__ == '__main__':
  absltest.main()
