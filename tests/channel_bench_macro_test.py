"""The Channel-Bench-Macro experiment: its sample, its report's figures on
a synthetic results file, bad input, and a run killed and resumed (tiny
size, real MNIST digits through the benchmark's MobileNet)."""

import contextlib
import io
import json
import os
import pathlib
import subprocess
from unittest import mock
import warnings

from absl.testing import absltest
import numpy as np
from scipy import stats

from bcnet_jax.run import checkpoint
from bcnet_jax.run import config_utils
from bcnet_jax.searching import ranking as rank
from configs import cbm_mobilenet
from experiments.channel_bench_macro import experiment
from experiments.channel_bench_macro import report
from experiments.channel_bench_macro import sample
from tests.programs import ROOT
from tests.programs import snapshot
from tests.programs import SUBPROCESS_ENV


def scipy_warnings(caught: list[warnings.WarningMessage]) -> list[str]:
  """The warnings among `caught` that scipy raised: an undefined
  statistic is reported as null, never as a warning on stderr."""
  return [f'{w.category.__name__}: {w.message}' for w in caught
          if w.category.__module__.startswith('scipy') or
          f'{os.sep}scipy{os.sep}' in w.filename]


def mnist_config():
  """The benchmark's MobileNet on the embedded MNIST digits (no download)."""
  return config_utils.embedded_mnist_input(cbm_mobilenet.get_config())


class SampleTest(absltest.TestCase):

  def test_stratified_deterministic_and_equal_per_quintile(self):
    keys = sample.draw('mobilenet', 50, seed=0)
    self.assertEqual(keys, sample.draw('mobilenet', 50, seed=0))
    self.assertNotEqual(keys, sample.draw('mobilenet', 50, seed=1))
    self.assertEqual(keys, sorted(set(keys)))
    strata = sample.quintiles('mobilenet')
    self.assertEqual([sum(strata[k] == q for k in keys) for q in range(5)],
                     [10] * 5)
    self.assertEqual([list(strata.values()).count(q) for q in range(5)],
                     [3277, 3277, 3277, 3277, 3276])
    costs = sample.benchmark_costs('mobilenet')
    macs = {k: costs.macs(sample.widths(k)) for k in strata}
    # Quintiles are ordered by MACs: no arch of q is above one of q + 1.
    for q in range(4):
      self.assertLessEqual(max(m for k, m in macs.items() if strata[k] == q),
                           min(m for k, m in macs.items()
                               if strata[k] == q + 1))
    self.assertLen(sample.draw('mobilenet', None, seed=0), 4 ** 7)
    with self.assertRaisesRegex(ValueError, 'multiple of 5'):
      sample.draw('mobilenet', 12, seed=0)


class CommittedSmokeRunTest(absltest.TestCase):

  def test_score_files_hold_benchmark_keys_of_the_sample(self):
    folder = ROOT / 'experiments' / 'channel_bench_macro' / 'smoke_mobilenet'
    record = json.loads((folder / 'record.json').read_text())
    keys = sample.draw('mobilenet', record['sample_size'], record['seed'])
    for name in experiment.SUPERNETS:
      scores = json.loads((folder / f'scores_{name}_mobilenet.json')
                          .read_text())
      self.assertEqual(sorted(scores), keys)
      self.assertTrue(all(len(k) == 7 and set(k) <= set('1234')
                          for k in scores))
      self.assertTrue(all(0 <= v <= 1 for v in scores.values()))


class ReportTest(absltest.TestCase):
  """Figures against values worked out by hand."""

  def setUp(self):
    super().setUp()
    self.costs = sample.benchmark_costs('mobilenet')
    self.full = self.costs.macs(self.costs.space.full())
    strata = sample.quintiles('mobilenet')
    macs = {k: int(self.costs.macs(sample.widths(k))) for k in strata}
    # Four archs in the band of the 50% budget and in one MACs quintile,
    # by ascending MACs, and three of the lowest quintile.
    band = [k for k, m in macs.items()
            if 0.4 * self.full <= m <= 0.5 * self.full]
    self.band_quintile = strata[band[0]]
    band = sorted((k for k in band if strata[k] == self.band_quintile),
                  key=lambda k: (macs[k], k))
    self.band = [band[0], band[len(band) // 3], band[2 * len(band) // 3],
                 band[-1]]
    self.low = sorted(k for k in strata if strata[k] == 0)[:3]
    self.strata, self.macs = strata, macs

  def details(self, scores, sides=('left', 'right')):
    """Scored like the evaluator: left = the score, right = minus it (so a
    swap of the sides shows), losses 1 - score."""
    return {k: {'score': s, 'score_se': 0.01,
                **{side: v for side, v in (('left', s), ('right', -s))
                   if side in sides},
                **{f'loss_{side}': 1 - s for side in sides}}
            for k, s in scores.items()}

  def test_tau_within_quintile_and_picks(self):
    keys = sorted(self.band + self.low)
    truth = dict(zip(self.low + self.band, [80., 81., 82., 90., 91., 92.,
                                            93.]))
    bcnet = dict(zip(self.low + self.band, [.1, .2, .3, .6, .8, .7, .5]))
    ua = dict(zip(self.low + self.band, [.3, .2, .1, .4, .5, .6, .7]))
    figures = report.build('mobilenet', keys + ['4444444'],
                           {'bcnet': self.details(bcnet),
                            'ua': self.details(ua, ('left',))}, truth)
    self.assertEqual(figures['compared'], 7)  # 4444444 has no truth
    self.assertEqual(figures['sample'], 8)
    self.assertEqual(list(figures['rankings']), [
        'bcnet/score', 'bcnet/left', 'bcnet/right', 'bcnet/neg_loss',
        'ua/score', 'ua/neg_loss', 'macs_only'])
    r = figures['rankings']
    b, u = r['bcnet/score'], r['ua/score']
    # bcnet: of the 21 pairs only 4 in the band are discordant (90-93,
    # 91-92, 91-93, 92-93): tau = 13/21; rank differences there -1, -2, 0,
    # 3: rho = 1 - 6 * 14 / (7 * 48) = 0.75; its first (0.8 at 91) is not
    # the best (93): top-10% (1 of 7) overlap 0.
    self.assertAlmostEqual(b['kendall_tau'], 13 / 21)
    self.assertAlmostEqual(b['spearman_rho'], 0.75)
    self.assertEqual(b['top10_overlap'], 0.0)
    self.assertAlmostEqual(r['bcnet/left']['kendall_tau'], 13 / 21)
    self.assertAlmostEqual(r['bcnet/right']['kendall_tau'], -13 / 21)
    self.assertAlmostEqual(r['bcnet/neg_loss']['kendall_tau'], 13 / 21)
    # Within quintiles: bcnet's low three in order (1), its band 2 of 6
    # pairs concordant (-1/3); ua's low reversed (-1), band in order (1).
    q = self.band_quintile
    self.assertEqual(b['within_quintile_tau'][0], 1.0)
    self.assertAlmostEqual(b['within_quintile_tau'][q], -1 / 3)
    self.assertAlmostEqual(b['within_quintile_tau_mean'], 1 / 3)
    self.assertEqual(u['within_quintile_tau'][0], -1.0)
    self.assertEqual(u['within_quintile_tau'][q], 1.0)
    self.assertEqual(u['within_quintile_tau_mean'], 0.0)
    self.assertEqual(b['within_quintile_tau_count'], 2)
    self.assertEqual(sum(t is None for t in b['within_quintile_tau']), 3)
    # 50% budget: bcnet picks the 2nd (91.0; 2 of 4 at most as good),
    # ua the 4th (93.0, the best: 100%), MACs alone the largest (the 4th);
    # no sampled arch lies in the 25% or 75% bands.
    self.assertEqual(b['picks']['0.5'], {
        'key': self.band[1], 'band_size': 4, 'accuracy': 91.0,
        'percentile': 50.0, 'best_in_band': 93.0})
    self.assertEqual((u['picks']['0.5']['accuracy'],
                      u['picks']['0.5']['percentile']), (93.0, 100.0))
    self.assertEqual(r['macs_only']['picks']['0.5']['key'], self.band[-1])
    for budget in ('0.25', '0.75'):
      self.assertIsNone(b['picks'][budget])
    layer3 = [int(k[3]) for k in keys]
    acc = [truth[k] for k in keys]
    self.assertAlmostEqual(figures['truth_layer_sensitivity'][3],
                           stats.spearmanr(layer3, acc).statistic)
    self.assertAlmostEqual(b['layer_sensitivity'][3], stats.spearmanr(
        layer3, [bcnet[k] for k in keys]).statistic)
    gaps = figures['tau_gaps']
    self.assertEqual(list(gaps), [
        'bcnet/left - bcnet/score', 'bcnet/right - bcnet/score',
        'bcnet/neg_loss - bcnet/score', 'ua/neg_loss - ua/score',
        'bcnet/score - ua/score', 'bcnet/score - macs_only',
        'ua/score - macs_only'])
    self.assertAlmostEqual(gaps['bcnet/right - bcnet/score']['difference'],
                           -26 / 21)
    low, high = gaps['bcnet/right - bcnet/score']['ci95']
    self.assertLess(low, -26 / 21)
    self.assertLess(-26 / 21, high)
    self.assertEqual(report.tau_difference(  # seeded: the same interval
        np.asarray([-bcnet[k] for k in keys]),
        np.asarray([bcnet[k] for k in keys]), np.asarray(acc))['ci95'],
                     [low, high])
    self.assertEqual(gaps['bcnet/left - bcnet/score']['difference'], 0)
    self.assertIsNone(figures['caveat'])  # figures of a full-size run
    table = report.table(figures)
    self.assertNotIn('NOT MEANINGFUL', table)
    self.assertIn('91.00 (50%)', table)
    self.assertIn('50%: 93.00 of 4', table)
    path = os.path.join(self.create_tempdir().full_path, 'fig.png')
    report.plot('mobilenet', keys, {'bcnet': self.details(bcnet),
                                    'ua': self.details(ua, ('left',))},
                truth, path)
    self.assertEqual(pathlib.Path(path).read_bytes()[:4], b'\x89PNG')

  def test_a_constant_ranking_has_no_tau(self):
    keys = sorted(self.band + self.low)
    truth = {k: 90.0 + i for i, k in enumerate(keys)}
    flat = {k: 0.5 for k in keys}
    with warnings.catch_warnings(record=True) as caught:
      warnings.simplefilter('always')
      figures = report.build('mobilenet', keys,
                             {'bcnet': self.details(flat)}, truth)
      # Three archs: resamples with one distinct arch have no τ, so no
      # interval, rather than NaN (and no warning: scipy gives two).
      few = report.tau_difference(np.asarray([1., 2., 3.]),
                                  np.asarray([3., 1., 2.]),
                                  np.asarray([1., 2., 3.]))
    self.assertEqual(scipy_warnings(caught), [])
    r = figures['rankings']['bcnet/score']
    self.assertIsNone(r['kendall_tau'])
    self.assertIsNone(r['within_quintile_tau_mean'])
    json.dumps(figures, allow_nan=False)  # valid JSON: no NaN anywhere
    self.assertIsNone(few['ci95'])
    self.assertAlmostEqual(few['difference'], 1 - (-1 / 3))

  def test_results_file_checks(self):
    tmp = self.create_tempdir()
    key = self.band[0]
    good = {key: {'acc': [1, 2, 3], 'mean': 91.5, 'std': 0.1,
                  'flops': self.macs[key], 'params': 1}}
    path = tmp.create_file('good.json', json.dumps(good)).full_path
    self.assertEqual(report.read_results(path, 'mobilenet'), {key: 91.5})
    resnet = sample.benchmark_costs('resnet').macs(sample.widths(key))
    for content, message in (
        ('{"1111111": ', 'not valid JSON'),
        ('[]', 'non-empty object'),
        (json.dumps({'11111': {'mean': 90}}), "key '11111' is not an arch"),
        (json.dumps({key: {'acc': [90]}}), 'finite "mean"'),
        (json.dumps({key: {'mean': 90, 'flops': int(resnet)}}),
         'of the resnet space: give --space=resnet'),
    ):
      bad = tmp.create_file('bad.json', content).full_path
      with self.assertRaisesRegex(ValueError, message):
        report.read_results(bad, 'mobilenet')
    with self.assertRaisesRegex(FileNotFoundError, 'no file .* give the '
                                'benchmark\'s Results_MobileNet.json'):
      report.read_results(os.path.join(tmp.full_path, 'none.json'),
                          'mobilenet')
    with self.assertRaisesRegex(FileNotFoundError, 'is a directory'):
      report.read_results(tmp.full_path, 'mobilenet')


class CommandTest(absltest.TestCase):

  def test_bad_results_file_is_one_line_and_exit_2(self):
    tmp = self.create_tempdir().full_path
    resnet_flops = int(sample.benchmark_costs('resnet').macs(
        sample.widths('4432214')))
    files = {'missing': (os.path.join(tmp, 'none.json'), 'no file'),
             'malformed': (os.path.join(tmp, 'bad.json'), 'not valid JSON'),
             'other space': (os.path.join(tmp, 'resnet.json'),
                             'give --space=resnet')}
    pathlib.Path(files['malformed'][0]).write_text('{"4432214": {')
    pathlib.Path(files['other space'][0]).write_text(json.dumps(
        {'4432214': {'mean': 93.0, 'flops': resnet_flops}}))
    workdir = os.path.join(tmp, 'run')
    for what, (path, message) in files.items():
      result = subprocess.run(
          ['python', '-m', 'experiments.channel_bench_macro',
           '--space=mobilenet', '--size=tiny', f'--workdir={workdir}',
           f'--results={path}'], cwd=ROOT, env=SUBPROCESS_ENV,
          capture_output=True, text=True, timeout=300)
      self.assertEqual(result.returncode, 2, what)
      lines = result.stderr.strip().splitlines()
      self.assertLen(lines, 1, what)
      self.assertIn(message, lines[0], what)
      self.assertFalse(os.path.exists(workdir), what)


class Interrupted(Exception):
  """Stands for a kill at a chosen point."""


class ResumeTest(absltest.TestCase):

  def test_killed_in_training_and_in_scoring_ends_as_uninterrupted(self):
    tmp = self.create_tempdir().full_path
    whole, killed = os.path.join(tmp, 'whole'), os.path.join(tmp, 'killed')
    keys = sample.draw('mobilenet', 10, seed=0)
    self.check_the_tiny_report_says_it_is_not_meaningful(whole, keys)

    save = checkpoint.Checkpoints.save

    def save_then_die(ckpt, step, state):
      save(ckpt, step, state)
      if step == 2 and 'supernet_bcnet' in ckpt.directory:
        ckpt.wait()
        raise Interrupted

    with mock.patch.object(checkpoint.Checkpoints, 'save', save_then_die):
      with self.assertRaises(Interrupted):
        experiment.run(mnist_config(), 'mobilenet', 'tiny', killed)
    self.assertFalse(os.path.exists(os.path.join(killed, 'supernet_bcnet',
                                                 'summary.json')))
    score_archs, calls = rank.score_archs, []

    def second_chunk_dies(setup, *args, **kwargs):
      calls.append(setup.config.supernet.objective)
      if calls.count('ua') == 2:
        raise Interrupted
      return score_archs(setup, *args, **kwargs)

    with mock.patch.object(rank, 'score_archs', second_chunk_dies):
      with self.assertRaises(Interrupted):
        experiment.run(mnist_config(), 'mobilenet', 'tiny', killed)
    partial = json.loads(pathlib.Path(
        killed, 'scores_ua_mobilenet.json').read_text())
    self.assertLen(partial, experiment.SIZES['tiny'].chunk)
    with mock.patch.object(rank, 'score_archs',
                           wraps=rank.score_archs) as scored:
      experiment.run(mnist_config(), 'mobilenet', 'tiny', killed)
    # Only what was left: 10 ua archs - the 4 scored before, in 2 chunks.
    self.assertEqual(scored.call_count, 2)
    for name in experiment.SUPERNETS:
      path = f'scores_{name}_mobilenet.json'
      scores = json.loads(pathlib.Path(killed, path).read_text())
      self.assertEqual(sorted(scores), keys)
      self.assertEqual(scores, json.loads(pathlib.Path(whole, path)
                                          .read_text()))
    record = json.loads(pathlib.Path(killed, 'record.json').read_text())
    self.assertEqual(record['stages']['train_bcnet']['runs'], 2)
    self.assertEqual(record['stages']['score_ua']['runs'], 2)
    self.assertEqual((record['steps'], record['images'],
                      record['sample_size']), (4, 32, 10))
    # Scores of a UA supernet are its left path's accuracy alone.
    details = json.loads(pathlib.Path(
        killed, 'scoring_ua_mobilenet.json').read_text())['details']
    for d in details.values():
      self.assertEqual(d['score'], d['left'])
      self.assertNotIn('right', d)
    self.assertEqual(record['scores']['ua'].split(' (')[0],
                     "score = the left path's accuracy")
    # A finished run reruns without training or scoring anything; a
    # removed scores file is rebuilt from the scoring state.
    os.remove(os.path.join(killed, 'scores_bcnet_mobilenet.json'))
    before = snapshot(killed)
    with mock.patch.object(rank, 'score_archs') as scored, \
        mock.patch.object(experiment.train, 'train_and_evaluate') as trained:
      experiment.run(mnist_config(), 'mobilenet', 'tiny', killed)
    scored.assert_not_called()
    trained.assert_not_called()
    after = snapshot(killed)
    rebuilt = os.path.join(killed, 'scores_bcnet_mobilenet.json')
    self.assertEqual(json.loads(pathlib.Path(rebuilt).read_text()), json.loads(
        pathlib.Path(whole, 'scores_bcnet_mobilenet.json').read_text()))
    self.assertEqual({k: v for k, v in after.items() if k != rebuilt},
                     before)  # record.json included: nothing to record
    self.check_errors_leave_the_workdir_as_it_is(killed)

  def check_the_tiny_report_says_it_is_not_meaningful(self, workdir, keys):
    """The whole tiny run, reported against made-up accuracies: its table
    and report.json say the figures mean nothing, and why; scipy's
    warnings on its few archs (undefined statistics) stay off stderr."""
    results = os.path.join(self.create_tempdir().full_path, 'results.json')
    accuracy = np.random.default_rng(0).uniform(90, 94, len(keys))
    pathlib.Path(results).write_text(json.dumps(
        {k: {'mean': a} for k, a in zip(keys, accuracy)}))
    printed = io.StringIO()
    with warnings.catch_warnings(record=True) as caught, \
        contextlib.redirect_stdout(printed):
      warnings.simplefilter('always')
      experiment.run(mnist_config(), 'mobilenet', 'tiny', workdir, results)
    self.assertEqual(scipy_warnings(caught), [])
    figures = json.loads(pathlib.Path(workdir, 'report.json').read_text())
    self.assertEqual(figures['caveat'], experiment.SIZES['tiny'].caveat)
    tiny = experiment.SIZES['tiny']
    self.assertIn(f'NOT MEANINGFUL: --size=tiny trains each supernet '
                  f'{tiny.steps} steps and ranks {tiny.sample} architectures',
                  figures['caveat'])
    self.assertIn(figures['caveat'] + '\nRankings of 10 sampled',
                  printed.getvalue())
    self.assertIn('NOT MEANINGFUL', experiment.SIZES['smoke'].caveat)
    self.assertIsNone(experiment.SIZES['full'].caveat)

  def check_errors_leave_the_workdir_as_it_is(self, workdir):
    """Input that does not fit the workdir: an error naming what differs,
    and nothing written."""
    before = snapshot(workdir)
    with self.assertRaisesRegex(ValueError, 'records a run of '
                                '--space=mobilenet --size=tiny'):
      experiment.run(mnist_config(), 'mobilenet', 'smoke', workdir)
    other = mnist_config()
    other.model.name = 'resnet20_cifar'
    with self.assertRaisesRegex(ValueError, 'give --config=configs/'
                                'cbm_mobilenet.py or another --space'):
      experiment.run(other, 'mobilenet', 'tiny', workdir)
    results = os.path.join(self.create_tempdir().full_path, 'one.json')
    pathlib.Path(results).write_text(json.dumps({'1111111': {'mean': 80}}))
    with self.assertRaisesRegex(ValueError, 'holds 0 of the 10 sampled'):
      experiment.run(mnist_config(), 'mobilenet', 'tiny', workdir, results)
    self.assertEqual(snapshot(workdir), before)
    state = pathlib.Path(workdir, 'scoring_ua_mobilenet.json')
    saved = json.loads(state.read_text())
    saved['identity']['supernet.step'] = 3
    state.write_text(json.dumps(saved))
    before = snapshot(workdir)
    with self.assertRaisesRegex(ValueError, 'scores of another supernet or '
                                'sample .supernet.step: state 3, this run '
                                '4'):
      experiment.run(mnist_config(), 'mobilenet', 'tiny', workdir)
    self.assertEqual(snapshot(workdir), before)


if __name__ == '__main__':
  absltest.main()
