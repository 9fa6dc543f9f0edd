"""The whole job on real MNIST digits (the testing config): one tiny
supernet, trained once and shared, its batch evaluator, its search, the rank
CLI, and the searched arch retrained, exported and used to predict."""

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
import jax
import numpy as np
from PIL import Image
from scipy import stats

from bcnet_jax import models
from bcnet_jax import training as train
from bcnet_jax.models import ops
from bcnet_jax.retrain import export
from bcnet_jax.retrain import predict
from bcnet_jax.retrain import stage as retrain
from bcnet_jax.run import checkpoint
from bcnet_jax.run import parallel
from bcnet_jax.searching import ranking as rank
from bcnet_jax.searching import report as search_report
from bcnet_jax.searching import search
from bcnet_jax.space.costs import CostModel
from bcnet_jax.supernet import evaluator as evaluator_lib
from bcnet_jax.supernet import stage as supernet
from configs import testing as testing_config
from tests import images
from tests.programs import command
from tests.programs import KILLED_ENV
from tests.programs import ROOT
from tests.programs import searched_arch
from tests.programs import snapshot
from tests.programs import SUBPROCESS_ENV


def config(**overrides):
  c = testing_config.get_config()
  # Trained far past chance (measured: 0.73 at full width, 0.13 at the
  # smallest, on the 64 minival images), in under a minute.
  c.total_steps = 150
  c.input.batch_size = 32
  c.update_from_flattened_dict(overrides)
  return c


def readme_preprocess(path: str, info: dict, resolution: int
                      ) -> np.ndarray:
  """The README's preprocessing for an export, step by step (no
  augmentation: input.json's augment is 'none' or 'cifar')."""
  image = Image.open(path).convert('L' if info['channels'] == 1 else 'RGB')
  if image.size != (resolution, resolution):
    image = image.resize((resolution, resolution), Image.BILINEAR)
  pixels = np.asarray(image, np.float32).reshape(
      resolution, resolution, info['channels']) / 255.0
  return (pixels - np.asarray(info['mean'], np.float32)) / np.asarray(
      info['std'], np.float32)


class PipelineTest(absltest.TestCase):
  """One class, so that pytest's --dist loadscope runs it in one process:
  the supernet is trained once, searched once, and shared."""

  @classmethod
  def setUpClass(cls):
    super().setUpClass()
    cls.tmp = tempfile.mkdtemp()
    cls.trained_dir = os.path.join(cls.tmp, 'trained')
    train.train_and_evaluate(config(), cls.trained_dir)
    cls.setup = supernet.Setup.create(config())
    cls.state = supernet.restore_trained(cls.setup, cls.trained_dir)
    cls.searched = os.path.join(cls.tmp, 'searched')
    shutil.copytree(cls.trained_dir, cls.searched)
    cls.summary = search.run(config(), cls.searched)
    cls.arch_path = os.path.join(cls.searched, 'search', 'arch.json')

  @classmethod
  def tearDownClass(cls):
    shutil.rmtree(cls.tmp)
    super().tearDownClass()

  def copy_of_trained(self, name: str) -> str:
    workdir = os.path.join(self.tmp, name)
    shutil.copytree(self.trained_dir, workdir)
    return workdir

  # The batch evaluator.

  def compact_scores(self, widths):
    calibration, eval_batches = self.setup.scoring_data(cached=True)
    return evaluator_lib.compact_scores(
        self.setup.model, {'params': self.state.params,
                           'batch_stats': self.state.batch_stats}, widths,
        calibration=calibration, eval_batches=eval_batches)

  def score(self, evaluator, widths, mesh=None, **kwargs):
    calibration, eval_batches = self.setup.scoring_data(cached=True)
    mesh = mesh or self.setup.mesh
    replicated = jax.device_put(
        (self.state.params, self.state.batch_stats),
        parallel.replicated(mesh))

    def on(batches):  # the batches on this evaluator's devices
      return lambda: [parallel.global_batch(jax.device_get(b), mesh)
                      for b in batches()]

    return evaluator.score(*replicated, widths, calibration=on(calibration),
                           eval_batches=on(eval_batches), **kwargs)

  def test_batch_equals_alone_and_the_sliced_compact_model(self):
    model = self.setup.model
    widths = model.space.sample(np.random.default_rng(1), 2)
    batch = self.score(self.setup.evaluator(), widths)
    for i, c in enumerate(widths):
      alone = self.score(evaluator_lib.Evaluator(model, self.setup.mesh, 1),
                         c[None])
      compact = self.compact_scores(c)
      for side in evaluator_lib.SIDES:
        self.assertEqual(batch[side][i], alone[side][0])
        self.assertEqual(batch[side][i], compact[side])
    self.assertEqual(batch['examples'], config().input.minival_size)

  def trained_summary(self):
    return json.loads(pathlib.Path(self.trained_dir, 'summary.json'
                                   ).read_text())

  def test_the_supernet_learned(self):
    # A supernet that learned nothing scores ~0.1 (10 classes) everywhere.
    summary = self.trained_summary()
    self.assertGreater(summary['eval/full/score'], 0.5)
    self.assertGreater(summary['eval/full/score'],
                       summary['eval/smallest/score'] + 0.2)

  def test_a_unilateral_supernet_is_scored_by_its_left_path_alone(self):
    ua = supernet.Setup.create(config(**{'supernet.objective': 'ua'}))
    self.assertEqual(ua.evaluator().sides, ('left',))
    self.assertIn('left path', supernet.score_definition(ua))
    widths = self.setup.model.space.sample(np.random.default_rng(5), 3)
    left_only = self.score(ua.evaluator(), widths)
    both = self.score(self.setup.evaluator(), widths)
    self.assertEqual(left_only['sides'], ('left',))
    self.assertNotIn('right', left_only)
    np.testing.assert_array_equal(left_only['score'], left_only['left'])
    np.testing.assert_array_equal(left_only['left'], both['left'])
    np.testing.assert_array_equal(both['score'],
                                  (both['left'] + both['right']) / 2)

  def test_a_unilateral_run_is_scored_by_its_left_path_throughout(self):
    ua = testing_config.get_config()
    ua.supernet.objective = 'ua'
    workdir = os.path.join(self.tmp, 'ua')
    summary = train.train_and_evaluate(ua, workdir)  # training's evaluation
    self.assertNotIn('eval/full/right', summary)
    self.assertEqual(summary['eval/full/score'], summary['eval/full/left'])
    self.assertIn("the left path's accuracy", summary['eval_score'])
    searched = search.run(ua, workdir)
    for method in ('evolution',) + search.BASELINES:
      self.assertIsNone(searched[method]['right'])
      self.assertEqual(searched[method]['score'], searched[method]['left'])
    table = search_report.table(search.Search(
        supernet.Setup.create(ua), supernet.restore_trained(
            supernet.Setup.create(ua), workdir), workdir), searched)
    self.assertIn("score = the left path's accuracy", table)
    archs = self.write('ua_archs.json', {f'n{i}': w.tolist() for i, w in
                                         enumerate(self.setup.model.space
                                                   .sample(np.random
                                                           .default_rng(7),
                                                           3))})
    ranked = rank.run(ua, workdir, archs)
    self.assertEqual(ranked['sides'], ['left'])
    for d in json.loads(pathlib.Path(ranked['details']).read_text()
                        ).values():
      self.assertEqual(d['score'], d['left'])
      self.assertNotIn('right', d)

  def test_standard_errors_from_per_example_hits(self):
    widths = self.setup.model.space.sample(np.random.default_rng(6), 2)
    result = self.score(self.setup.evaluator(), widths, per_example=True)
    self.assertNotIn('hits', self.score(self.setup.evaluator(), widths))
    e = config().input.minival_size
    self.assertEqual(result['hits'].shape, (2, 2, e))
    np.testing.assert_array_equal(result['hits'].mean(axis=-1)[:, 0],
                                  result['left'])
    per_example = evaluator_lib.per_example_score(result['hits'])
    self.assertEqual(set(np.unique(per_example)) - {0, 0.5, 1}, set())
    np.testing.assert_allclose(result['score_se'], np.std(
        per_example, axis=-1, ddof=1) / np.sqrt(e))
    diff, se = evaluator_lib.paired_difference(per_example[0], per_example[1])
    self.assertAlmostEqual(diff, result['score'][0] - result['score'][1])
    self.assertAlmostEqual(se, np.std(per_example[0] - per_example[1],
                                      ddof=1) / np.sqrt(e))
    self.assertTrue(np.all(result['loss'] >= 0))
    np.testing.assert_allclose(result['loss_right'],
                               result['loss'][:, 1].mean(axis=-1))

  def test_one_compile_serves_every_candidate_set_and_8_devices_equal_1(self):
    space = self.setup.model.space
    evaluator = self.setup.evaluator()
    rng = np.random.default_rng(2)
    self.score(evaluator, space.sample(rng, 3))  # compiles
    compiled = [evaluator_lib.pool_batch._cache_size(),
                evaluator_lib.score_batch._cache_size()]
    with mock.patch.object(evaluator_lib, '_per_path',
                           wraps=evaluator_lib._per_path) as traced:
      sets = [space.sample(rng, n) for n in (8, 5, 11)]  # padded, two calls
      on_8 = [self.score(evaluator, w) for w in sets]
      self.assertEqual(traced.call_count, 0)
    self.assertEqual([evaluator_lib.pool_batch._cache_size(),
                      evaluator_lib.score_batch._cache_size()], compiled)
    self.assertEqual(jax.device_count(), 8)
    one_device = parallel.create_mesh(jax.devices()[:1])
    on_1 = self.score(evaluator_lib.Evaluator(self.setup.model, one_device, 8),
                      sets[2], one_device)
    for side in ('left', 'right'):
      np.testing.assert_array_equal(on_8[2][side], on_1[side])


  def test_vmapped_paths_as_on_accelerators_score_the_same(self):
    # accelerator_ops takes the GPU/TPU forms: paths vmapped, not mapped.
    widths = self.setup.model.space.sample(np.random.default_rng(4), 3)
    with ops.accelerator_ops():
      vmapped = self.score(self.setup.evaluator(), widths)
    mapped = self.score(self.setup.evaluator(), widths)
    for side in evaluator_lib.SIDES:
      np.testing.assert_array_equal(vmapped[side], mapped[side])

  # The search.

  def read(self, workdir, name):
    return pathlib.Path(workdir, 'search', name).read_text()

  def test_the_winner_scores_above_the_smallest_width_vector(self):
    # Scored as training scored the smallest: the same images and BN
    # recalibration. A search of an untrained supernet finds ~0.1.
    arch = json.loads(self.read(self.searched, 'arch.json'))
    self.assertGreater(arch['score'],
                       self.trained_summary()['eval/smallest/score'] + 0.2)

  def test_outputs_and_legality(self):
    c = config()
    setup, summary = self.setup, self.summary
    space, costs = setup.model.space, CostModel(setup.model)
    full = costs.macs(space.full())
    self.assertEqual(summary['macs_budget'], int(0.5 * full))
    low, high = summary['band']
    state = json.loads(self.read(self.searched, 'state.json'))
    evolved = [r for r in state['records'] if r['phase'] == 'evolution']
    self.assertLen(evolved, c.search.population + c.search.generations * (
        c.search.mutations + c.search.crossovers))
    keys = [space.channel_key(r['widths']) for r in evolved]
    self.assertLen(set(keys), len(keys))  # none evaluated twice
    for r in state['records']:
      if r['phase'] != 'uniform':
        self.assertBetween(r['macs'], low, high)
    arch = json.loads(self.read(self.searched, 'arch.json'))
    best = space.widths_from_arch(arch)
    self.assertEqual(arch['score'], max(r['score'] for r in evolved))
    self.assertEqual(arch['macs'], costs.macs(best))
    self.assertEqual(arch['macs_budget'], summary['macs_budget'])
    self.assertEqual(arch['supernet_step'], 150)
    history = [json.loads(line) for line in
               self.read(self.searched, 'history.jsonl').splitlines()]
    self.assertEqual([h['generation'] for h in history],
                     list(range(c.search.generations + 1)))
    self.assertEqual(history[-1]['best_score'], arch['score'])
    # Each line from state.json's records: the best of those scored up to
    # its generation, the mean of its own, and how many were scored.
    for h in history:
      so_far = [r for r in evolved if r['generation'] <= h['generation']]
      this = [r['score'] for r in so_far
              if r['generation'] == h['generation']]
      best = max(so_far, key=lambda r: r['score'])
      self.assertEqual((h['best_score'], h['best_macs'], h['evaluations']),
                       (best['score'], best['macs'], len(so_far)))
      self.assertAlmostEqual(h['mean_score'], np.mean(this))
    self.assertEqual(pathlib.Path(self.searched, 'search', 'population.png'
                                  ).read_bytes()[:4], b'\x89PNG')
    on_disk = json.loads(self.read(self.searched, 'summary.json'))
    self.assertEqual(on_disk, summary)
    self.assertEqual(summary['random']['evaluations'], len(evolved))
    uniform = summary['uniform']['widths']
    self.assertLen(set(uniform), 1)
    self.assertLessEqual(summary['uniform']['macs'], summary['macs_budget'])
    self.assertGreater(costs.macs(np.asarray(uniform) + 1),
                       summary['macs_budget'])
    for method in ('evolution',) + search.BASELINES:
      self.assertEqual(
          summary[method]['score'],
          (summary[method]['left'] + summary[method]['right']) / 2)
      self.assertBetween(summary[method]['score_se'], 1e-4, 0.1)
    # The comparison rescored the three best on the same images: the
    # paired difference is the difference of their scores.
    self.assertEqual(summary['examples'], c.input.minival_size)
    self.assertLessEqual(summary['magnitude']['macs'],
                         summary['macs_budget'])
    for baseline in search.BASELINES:
      versus = summary[baseline]['winner_minus_this']
      self.assertAlmostEqual(versus['difference'], summary['evolution'][
          'score'] - summary[baseline]['score'])
      self.assertGreaterEqual(versus['se'], 0)
      self.assertEqual(versus['same_width_vector'], summary[baseline][
          'widths'] == summary['evolution']['widths'])

  def test_the_table_gives_errors_a_verdict_and_the_next_command(self):
    table = search_report.table(search.Search(self.setup, self.state,
                                              self.searched), self.summary)
    evolution = next(l for l in table.splitlines() if 'evolution' in l)
    self.assertTrue(evolution.startswith('* '))
    r = self.summary['evolution']
    self.assertIn(f'{r["score"]:.3f} ± {r["score_se"]:.3f}', evolution)
    self.assertIn(search_report.verdict(self.summary), table)
    # The retrain command reads the supernet's config from its workdir.
    self.assertTrue(table.endswith(
        f'python -m bcnet_jax.train --config={self.searched}/config.json '
        f'--workdir={self.searched}/retrained --config.stage=retrain '
        f'--config.retrain.arch={self.arch_path}'))

  def test_verdict_says_what_would_tell_scores_apart(self):
    def verdict(uniform, random):
      return search_report.verdict({'examples': 500, **{
          phase: {'winner_minus_this': {'difference': diff, 'se': se,
                                        'same_width_vector': diff is None}}
          for phase, (diff, se) in (('uniform', uniform),
                                    ('random', random),
                                    ('magnitude', (0.05, 0.01)))}})

    text = verdict((0.002, 0.004), (0.03, 0.01))
    self.assertIn('above random search by 0.030 ± 0.010', text)
    # 2 errors of 0.004 over a 0.002 lead: 500 x 4^2 images.
    self.assertIn('not distinguishable from uniform scaling (+0.002 ± '
                  '0.004): the difference is within 2 paired errors on 500 '
                  'images', text)
    self.assertIn('about 8,000 images', text)
    self.assertIn('below uniform scaling by 0.020',
                  verdict((-0.02, 0.005), (0.03, 0.01)))
    self.assertIn('The best of uniform scaling is the winner itself',
                  verdict((None, 0.0), (0.03, 0.01)))

  def test_rerunning_a_finished_search_writes_nothing(self):
    before = snapshot(self.searched)
    self.assertEqual(search.run(config(), self.searched), self.summary)
    self.assertEqual(snapshot(self.searched), before)

  def test_sigkill_then_rerun_ends_with_the_same_arch(self):
    workdir = self.copy_of_trained('killed')
    state_path = pathlib.Path(workdir, 'search', 'state.json')
    process = subprocess.Popen(
        command('search', '--config=configs/testing.py',
                f'--workdir={workdir}',
                f'--config.input.batch_size={config().input.batch_size}'),
        cwd=ROOT, env=KILLED_ENV, stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL)
    deadline = time.time() + 300
    while time.time() < deadline and process.poll() is None:
      if state_path.exists():
        process.send_signal(signal.SIGKILL)
        break
      time.sleep(0.01)
    self.assertEqual(process.wait(), -signal.SIGKILL,
                     'the search ended before it could be killed')
    done = json.loads(state_path.read_text())['units_done']
    self.assertBetween(done, 1, len(search.Search(
        self.setup, self.state, workdir).units()) - 1)
    resumed = search.run(config(), workdir)
    self.assertEqual(searched_arch(workdir), searched_arch(self.searched))
    self.assertEqual(self.read(workdir, 'history.jsonl').count('\n'),
                     self.read(self.searched, 'history.jsonl').count('\n'))
    for method in ('evolution',) + search.BASELINES:
      self.assertEqual(resumed[method]['widths'],
                       self.summary[method]['widths'])

  def test_a_state_of_another_search_is_an_error_naming_it(self):
    workdir = os.path.join(self.tmp, 'other_budget')
    shutil.copytree(self.searched, workdir)
    before = snapshot(workdir)
    with self.assertRaisesRegex(
        ValueError, 'belongs to another search '
        r'\(search.budget_macs: state \d+, this run \d+\)\. Rerun with '):
      search.run(config(**{'search.macs_fraction': 0.4}), workdir)
    with self.assertRaisesRegex(ValueError,
                                'search.top_k: state 3, this run 2'):
      search.run(config(**{'search.top_k': 2}), workdir)
    self.assertEqual(snapshot(workdir), before)

  def test_no_supernet_is_an_error_saying_to_train(self):
    with self.assertRaisesRegex(FileNotFoundError, 'train one first'):
      search.run(config(), os.path.join(self.tmp, 'empty'))

  def test_budget_below_the_smallest_width_vector(self):
    with self.assertRaisesRegex(ValueError, 'below the smallest width '
                                'vector .* raise the budget'):
      search.run(config(**{'search.macs_fraction': 0.001}),
                 self.copy_of_trained('too_small'))


  # The rank CLI.

  def write(self, name, value) -> str:
    path = os.path.join(self.tmp, name)
    pathlib.Path(path).write_text(json.dumps(value))
    return path

  def test_scores_and_agreement_with_a_truth(self):
    space = self.setup.model.space
    widths = space.sample(np.random.default_rng(3), 6)
    archs = self.write('archs.json', {f'n{i}': w.tolist()
                                      for i, w in enumerate(widths)})
    # The truth: the same fitness computed by compact, sliced models.
    truth = {f'n{i}': {'mean': self.compact_scores(c)['score']}
             for i, c in enumerate(widths)}
    truth['not_in_archs'] = 0.5
    out = os.path.join(self.tmp, 'scores.json')
    summary = rank.run(config(), self.trained_dir, archs,
                       self.write('truth.json', truth), out)
    scores = json.loads(pathlib.Path(out).read_text())
    self.assertEqual(sorted(scores), [f'n{i}' for i in range(6)])
    for key, score in scores.items():
      self.assertAlmostEqual(score, truth[key]['mean'], places=12)
    details = json.loads(pathlib.Path(rank.details_path(out)).read_text())
    self.assertEqual(sorted(details), sorted(scores))
    for key, d in details.items():
      self.assertEqual(d['score'], scores[key])
      self.assertEqual(d['score'], (d['left'] + d['right']) / 2)
      self.assertBetween(d['score_se'], 1e-4, 0.1)
      self.assertGreater(d['loss_left'], 0)
    self.assertEqual(summary['sides'], ['left', 'right'])
    first, second = sorted(scores, key=scores.get, reverse=True)[:2]
    self.assertEqual(summary['leader']['keys'], [first, second])
    self.assertAlmostEqual(summary['leader']['difference'],
                           scores[first] - scores[second])
    self.assertGreaterEqual(summary['leader']['se'], 0)
    self.assertEqual(summary['compared'], 6)
    self.assertAlmostEqual(summary['supernet']['kendall_tau'], 1.0)
    self.assertAlmostEqual(summary['supernet']['spearman_rho'], 1.0)
    self.assertEqual(summary['supernet']['top10_overlap'], 1.0)
    macs = CostModel(self.setup.model).macs(widths)
    means = [truth[f'n{i}']['mean'] for i in range(6)]
    self.assertAlmostEqual(summary['macs_only']['kendall_tau'],
                           stats.kendalltau(macs, means).statistic)

  def test_archs_formats_and_errors(self):
    space = models.get_space('cbm_resnet', 4, 1)
    self.assertEqual(
        {k: v.tolist() for k, v in rank.read_archs(self.write(
            'digits.json', {'4123412': '4123412'}), space).items()},
        {'4123412': [4, 1, 2, 3, 4, 1, 2]})
    listed = rank.read_archs(self.write('list.json', [[1] * 7, [4] * 7]),
                             space)
    self.assertEqual(list(listed), ['0', '1'])
    for value, message in (
        ('[[1, 2]', 'not valid JSON'),
        ('{}', 'non-empty'),
        ('{"a": "4123419"}', 'a: .*group'),
        ('{"a": [5, 1, 1, 1, 1, 1, 1]}', 'a: .*group'),
        ('{"a": "12x"}', 'digit strings'),
        ('{"a": [[1, 1, 1, 1, 1, 1, 1], [2, 2, 2, 2, 2, 2, 2]]}',
         'a: expected one list of 7 bins, got shape'),
    ):
      path = os.path.join(self.tmp, 'bad.json')
      pathlib.Path(path).write_text(value)
      with self.assertRaisesRegex(ValueError, message):
        rank.read_archs(path, space)
    for bad in ({'a': 'high'}, {'a': float('nan')}, {'a': {'acc': [0.9]}}):
      with self.assertRaisesRegex(ValueError, 'a: expected a finite number'):
        rank.read_truth(self.write('bad_truth.json', bad))
    archs = self.write('two.json', {'a': [4] * 12, 'b': [8] * 12})
    with self.assertRaisesRegex(ValueError, 'share 0 keys'):
      rank.run(config(), self.trained_dir, archs,
               self.write('other_truth.json', {'x': 0.5, 'y': 0.6}))


  def test_commands_report_bad_input_in_one_line(self):
    empty = os.path.join(self.tmp, 'nothing_trained')
    os.makedirs(empty)
    archs = self.write('nested.json', {'a': [[4] * 12]})
    for argv, message in (
        (command('search', '--config=configs/testing.py',
                 f'--workdir={empty}'), 'train one first'),
        (command('rank', '--config=configs/testing.py',
                 f'--workdir={self.trained_dir}', f'--archs={archs}'),
         'a: expected one list of 12 bins'),
        (command('predict', f'--workdir={self.trained_dir}', archs),
         'no arch.json: it is not a retrained network'),
        (command('predict', f'--workdir={empty}'),
         'give one or more image files'),
    ):
      out = subprocess.run(argv, cwd=ROOT, env=SUBPROCESS_ENV,
                           capture_output=True, text=True)
      self.assertEqual(out.returncode, 2, out.stderr)
      self.assertEqual(len(out.stderr.strip().splitlines()), 1, out.stderr)
      self.assertRegex(out.stderr, f'^error: .*{message}')
    self.assertEqual(os.listdir(empty), [])


  # Retraining, export and prediction.

  def retrain_config(self, **overrides):
    return config(**{'stage': 'retrain', 'retrain.arch': self.arch_path,
                     **overrides})

  def digit_files(self, n: int) -> tuple[list[str], np.ndarray]:
    """n real MNIST digits as PNG files, and their labels."""
    batch = images.mnist_batch(n, resolution=28, offset=4000)
    folder = pathlib.Path(self.tmp, 'digits')
    folder.mkdir(exist_ok=True)
    paths = []
    for i, pixels in enumerate(images.mnist_pixels(n, offset=4000)):
      paths.append(str(folder / f'{i}.png'))
      Image.fromarray(pixels).save(paths[-1])
    return paths, batch['label']

  def test_retrain_export_predict_end_to_end(self):
    workdir = os.path.join(self.tmp, 'retrained')
    summary = train.train_and_evaluate(self.retrain_config(), workdir)
    arch = json.loads(pathlib.Path(self.arch_path).read_text())
    self.assertLessEqual(arch['macs'], arch['macs_budget'])
    self.assertEqual((summary['stage'], summary['arch']), ('retrain', arch))
    self.assertBetween(summary['eval/test/accuracy'], 0.0, 1.0)
    model, variables, info = export.load(workdir)
    costs = CostModel(model)
    widths = np.asarray(model.widths)
    self.assertEqual((summary['macs'], summary['params']),
                     (arch['macs'], arch['params']))
    self.assertEqual((costs.macs(widths), costs.params(widths)),
                     (arch['macs'], arch['params']))
    self.assertEqual(sum(v.size for v in jax.tree.leaves(
        variables['params'])), arch['params'])
    self.assertEqual(info['step'], 30)
    self.assertEqual(checkpoint.tree_sha256(variables['params']),
                     summary['params_sha256'])
    # Its latency, measured beside the full network's and uniform scaling's
    # at the search's budget and batch.
    latency = summary['latency']
    self.assertEqual(latency['batch'], arch['latency_batch'])
    self.assertAlmostEqual(latency['speedup_over_full'],
                           latency['full'] / latency['this'])
    self.assertAlmostEqual(latency['speedup_over_uniform'],
                           latency['uniform'] / latency['this'])
    self.assertIn(f'{latency["speedup_over_full"]:.2f}x as fast as the full',
                  retrain.table(summary, {}))
    # Predictions from image files equal the loaded model's and the
    # jax.export artifact's on the digits preprocessed as the README says:
    # grey (input.json's channels), resized to the arch's resolution
    # (bilinear, PIL), scaled to [0, 1], then input.json's mean and std.
    files, labels = self.digit_files(6)
    Image.open(files[0]).resize((40, 40)).save(files[0])  # to be resized
    predicted = predict.predict(workdir, files)
    x = np.stack([readme_preprocess(f, info, arch['resolution'])
                  for f in files])
    logits, _ = model.apply(variables, x, train=False)
    exported = jax.export.deserialize(bytearray(pathlib.Path(
        workdir, export.JAX_EXPORT).read_bytes()))
    np.testing.assert_allclose(exported.call(x), jax.nn.softmax(logits),
                               rtol=1e-5, atol=1e-6)
    for result, row in zip(predicted, np.asarray(exported.call(x))):
      self.assertLen(result['top5'], 5)
      self.assertEqual(result['top5'][0][0],
                       info['classes'][int(np.argmax(row))])
      self.assertAlmostEqual(result['top5'][0][1], float(row.max()), 5)
    self.assertLen(labels, 6)
    # The command prints the same, one JSON object per image.
    out = subprocess.run(
        command('predict', f'--workdir={workdir}', '--json', *files[:2]),
        cwd=ROOT, env=SUBPROCESS_ENV, capture_output=True, text=True)
    self.assertEqual(out.returncode, 0, out.stderr)
    self.assertEqual([json.loads(line)['top5'][0][0]
                      for line in out.stdout.splitlines()],
                     [r['top5'][0][0] for r in predicted[:2]])
    # A missing file among good ones: the good ones are classified, the
    # missing one reported, the exit status says it.
    missing = os.path.join(self.tmp, 'no_such_digit.png')
    out = subprocess.run(
        command('predict', f'--workdir={workdir}', '--json', files[0],
                missing, files[1]),
        cwd=ROOT, env=SUBPROCESS_ENV, capture_output=True, text=True)
    self.assertEqual(out.returncode, 2, out.stderr)
    self.assertEqual([json.loads(line)['file']
                      for line in out.stdout.splitlines()],
                     [files[0], files[1]])
    self.assertRegex(out.stderr, f'^error: {missing}: not a readable image')
    self.assertIn('1 of 3 files could not be read', out.stderr)
    # Rerunning the finished retrain writes nothing; another arch in the
    # same workdir is another run.
    before = snapshot(workdir)
    self.assertEqual(train.train_and_evaluate(self.retrain_config(), workdir),
                     summary)
    self.assertEqual(snapshot(workdir), before)
    other = dict(arch, widths={g: 1 for g in arch['widths']})
    other['channels'] = self.setup.model.space.channels(
        np.ones(len(arch['widths']), np.int32))
    other_path = self.write('other_arch.json', other)
    with self.assertRaisesRegex(checkpoint.ForeignCheckpoint,
                                'retrain.widths'):
      train.train_and_evaluate(
          self.retrain_config(**{'retrain.arch': other_path}), workdir)
    # An arch.json edited under the checkpoint: named group by group.
    edited = os.path.join(self.tmp, 'edited_export')
    shutil.copytree(workdir, edited)
    pathlib.Path(edited, 'arch.json').write_text(json.dumps(other))
    group = next(g for g, w in arch['widths'].items() if w != 1)
    with self.assertRaisesRegex(
        ValueError, f'arch.json widths.{group}: checkpoint '
        f'{arch["widths"][group]}, file 1;'):
      export.load(edited)

  def test_retrain_killed_and_rerun_ends_with_the_same_parameters(self):
    workdir = os.path.join(self.tmp, 'retrain_killed')
    process = subprocess.Popen(
        command('train', '--config=configs/testing.py', f'--workdir={workdir}',
                '--config.stage=retrain',
                f'--config.input.batch_size={config().input.batch_size}',
                f'--config.retrain.arch={self.arch_path}'),
        cwd=ROOT, env=KILLED_ENV, stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL)
    folder = pathlib.Path(workdir, 'checkpoints')
    deadline = time.time() + 300
    while time.time() < deadline and process.poll() is None:
      if folder.exists() and any(p.name.isdigit() for p in folder.iterdir()):
        process.send_signal(signal.SIGKILL)
        break
      time.sleep(0.02)
    self.assertEqual(process.wait(), -signal.SIGKILL,
                     'the run ended before it could be killed')
    resumed = train.train_and_evaluate(self.retrain_config(), workdir)
    self.assertGreater(resumed['first_step_this_run'], 0)
    whole = train.train_and_evaluate(
        self.retrain_config(), os.path.join(self.tmp, 'retrain_whole'))
    self.assertEqual(resumed['params_sha256'], whole['params_sha256'])

  def test_retrain_and_load_errors(self):
    arch = json.loads(pathlib.Path(self.arch_path).read_text())
    for changed, message in (
        ({'model': 'vgg16_cifar'}, "retrain.arch .*model 'vgg16_cifar'"),
        ({'resolution': 32}, 'resolution 32; input.resolution is 28'),
    ):
      path = self.write('bad_arch.json', dict(arch, **changed))
      with self.assertRaisesRegex(ValueError, message):
        retrain.Setup.create(self.retrain_config(**{'retrain.arch': path}))
    with self.assertRaisesRegex(FileNotFoundError, 'retrain.arch: no file'):
      retrain.Setup.create(self.retrain_config(
          **{'retrain.arch': os.path.join(self.tmp, 'missing.json')}))
    with self.assertRaisesRegex(ValueError, 'needs --config.retrain.arch'):
      retrain.Setup.create(config(stage='retrain'))
    with self.assertRaisesRegex(ValueError, 'evaluate, search and rank read '
                                'a supernet'):
      supernet.Setup.create(self.retrain_config())
    with self.assertRaisesRegex(FileNotFoundError, 'not a retrained network'):
      export.load(self.trained_dir)


if __name__ == '__main__':
  absltest.main()
