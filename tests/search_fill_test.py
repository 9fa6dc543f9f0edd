"""A search that evolution alone cannot feed (issue 26): Channel-Bench-
Macro's MobileNet (7 groups of 4 bins) trained 4 steps on real CIFAR-10
JPEGs, whose few loss records fit a peaked prior, searched with two
parents, rare mutations and a narrow MACs band. Its generations are filled
from the prior and uniformly, it ends within the budget, and a search killed
(SIGKILL) after its first bred generation resumes to the same arch. Skips
where the CIFAR-10 JPEG copy is absent (data_test.cifar_folder)."""

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
import numpy as np

from bcnet_jax import training as train
from bcnet_jax.run import console
from bcnet_jax.searching import search
from configs import cbm_mobilenet
from tests.data_test import cifar_folder
from tests.programs import command
from tests.programs import KILLED_ENV
from tests.programs import ROOT
from tests.programs import searched_arch

# The 'tiny' size of experiments/channel_bench_macro, and a search whose
# band (MACs in [0.95 F, F]) two parents seldom breed into, with mutations
# (probability 0.05 per gene) redrawn from a peaked prior. 8 units:
# generations 0-2, uniform scaling, 2 chunks of random search, magnitude,
# comparison.
OVERRIDES = {
    'total_steps': 4, 'total_epochs': None, 'eval_every_steps': None,
    'eval_every_epochs': None, 'log_every_steps': 1, 'ckpt_every_steps': 1,
    'optim.warmup_epochs': 0.0, 'eval.num_random': 0,
    'input.source': 'image_folder', 'input.batch_size': 8,
    'input.minival_size': 16, 'input.eval_batch_size': 16,
    'input.num_threads': 2, 'eval.bn_calib_batches': 1,
    'search.macs_fraction': 0.5, 'search.band_low': 0.95,
    'search.population': 8, 'search.generations': 2, 'search.top_k': 2,
    'search.mutations': 2, 'search.crossovers': 2,
    'search.mutation_prob': 0.05}
# How the search's line names each source of a generation's candidates.
WORDS = {'bred': 'bred', 'prior': 'drawn from the prior',
         'uniform': 'drawn uniformly'}


def config():
  c = cbm_mobilenet.get_config()
  c.update_from_flattened_dict({**OVERRIDES,
                                'input.data_dir': cifar_folder()})
  return c


def flags() -> list[str]:
  """config() on the command line."""
  overrides = {**OVERRIDES, 'input.data_dir': cifar_folder()}
  return ['--config=configs/cbm_mobilenet.py'] + [
      f'--config.{k}={v}' for k, v in overrides.items()]


def said(generation: int, candidates: dict[str, int],
         why: str = ' (a peaked prior or a small band leaves few new ones)'
         ) -> str:
  """The line a search says of a generation it filled."""
  (_, wanted), (usual, n), *rest = candidates.items()
  return (f'generation {generation}: {n} of {wanted} {WORDS[usual]}' +
          ''.join(f', {m} {WORDS[k]}' for k, m in rest) + why)


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

  def history(self, workdir: str) -> list[dict]:
    """history.jsonl's lines, less their wall times."""
    return [{k: v for k, v in json.loads(line).items() if k != 'wall_time_s'}
            for line in self.read(workdir, 'history.jsonl').splitlines()]

  def test_generations_are_filled_and_the_arch_is_within_budget(self):
    state = json.loads(self.read(self.searched, 'state.json'))
    # The premise: most of the prior's mass on one width per group.
    self.assertGreater(np.mean(np.max(state['probs'], axis=1)), 0.8)
    low, high = self.summary['band']
    evolved = [r for r in state['records'] if r['phase'] == 'evolution']
    self.assertLen(evolved, 8 + 2 * 4)
    keys = [tuple(r['widths']) for r in evolved]
    self.assertLen(set(keys), len(keys))  # each scored once
    for r in state['records']:  # the two baselines: within budget only
      if r['phase'] in ('uniform', 'magnitude'):
        self.assertLessEqual(r['macs'], high)
      else:
        self.assertBetween(r['macs'], low, high)
    history = self.history(self.searched)
    self.assertEqual([h['generation'] for h in history], [0, 1, 2])
    self.assertEqual(history[0]['candidates']['wanted'], 8)
    self.assertEqual(set(history[0]['candidates']),
                     {'wanted', 'prior', 'uniform'})
    for h in history:
      wanted, *sources = h['candidates'].values()
      self.assertEqual(sum(sources), wanted)
    # Some generation was filled: fewer bred (generation 0: drawn from the
    # prior) than wanted. A line said so for each.
    filled = [h for h in history if list(h['candidates'].values())[1] <
              h['candidates']['wanted']]
    self.assertNotEmpty(filled, history)
    self.assertEqual([line for line in self.lines if 'peaked' in line],
                     [said(h['generation'], h['candidates']) for h in filled])
    arch = json.loads(self.read(self.searched, 'arch.json'))
    self.assertLessEqual(arch['macs'], arch['macs_budget'])
    self.assertEqual(arch['score'], max(r['score'] for r in evolved))

  def test_sigkill_after_a_bred_generation_then_rerun_ends_the_same(self):
    workdir = self.copy_of_trained('killed')
    state_path = pathlib.Path(workdir, 'search', 'state.json')
    process = subprocess.Popen(
        command('search', *flags(), f'--workdir={workdir}'), cwd=ROOT,
        env=KILLED_ENV, stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    while time.time() < deadline and process.poll() is None:
      if (state_path.exists() and  # replaced atomically: never half a file
          json.loads(state_path.read_text())['units_done'] >= 2):
        process.send_signal(signal.SIGKILL)
        break
      time.sleep(0.01)
    self.assertEqual(process.wait(), -signal.SIGKILL,
                     'the search ended before it could be killed')
    done = json.loads(state_path.read_text())['units_done']
    self.assertBetween(done, 2, 7)  # generations 0 and 1 done, of 8 units
    resumed = search.run(config(), workdir)
    self.assertEqual(searched_arch(workdir), searched_arch(self.searched))
    self.assertEqual(self.history(workdir), self.history(self.searched))
    for method in ('evolution',) + search.BASELINES:
      self.assertEqual(resumed[method]['widths'],
                       self.summary[method]['widths'])

  def test_an_exhausted_band_ends_evolution_and_the_baselines_run(self):
    # [0.9995 F, F] holds 4 width vectors: generation 0 takes all of them,
    # generation 1 finds none left, and the search goes on to its baselines.
    workdir = self.copy_of_trained('exhausted')
    c = config()
    c.search.band_low = 0.9995
    with mock.patch.object(console, 'say', wraps=console.say) as say:
      summary = search.run(c, workdir)
    history = self.history(workdir)
    lines = [str(call.args[0]) for call in say.call_args_list if call.args]
    self.assertContainsSubsequence(lines, [
        said(0, history[0]['candidates'],
             ': the band has no other unscored width vector'),
        'generation 1: the band has no other unscored width vector: '
        'evolution ends after 4 evaluations; uniform scaling and random '
        'search follow'])
    state = json.loads(self.read(workdir, 'state.json'))
    evolved = [r for r in state['records'] if r['phase'] == 'evolution']
    self.assertLen({tuple(r['widths']) for r in evolved}, 4)
    self.assertEqual(summary['random']['evaluations'], 4)
    self.assertEqual([h['mean_score'] is None for h in history],
                     [False, True, True])
    self.assertEqual([h['evaluations'] for h in history], [4, 4, 4])
    self.assertBetween(summary['evolution']['macs'], *summary['band'])
    self.assertLessEqual(summary['evolution']['macs'],
                         summary['macs_budget'])


if __name__ == '__main__':
  absltest.main()
