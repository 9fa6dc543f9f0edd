"""Search under a latency budget: the cost seam, the per-layer table, the
latency file (built by the command on this machine's CPU, resumed), a search
constrained by its prediction, and the errors a user meets."""

import copy
import dataclasses
import itertools
import json
import os
import pathlib
import shutil
import subprocess
import sys
import tempfile
from unittest import mock

from absl.testing import absltest
from absl.testing import parameterized
import jax
import jax.numpy as jnp
import numpy as np

from bcnet_jax import models
from bcnet_jax import training as train
from bcnet_jax.models import channels
from bcnet_jax.run import files
from bcnet_jax.searching import report as search_report
from bcnet_jax.searching import search
from bcnet_jax.space import search_space as space_lib
from bcnet_jax.space.costs import Cost
from bcnet_jax.space.costs import CostModel
from bcnet_jax.supernet import stage as supernet
from bcnet_jax.timing import build
from bcnet_jax.timing import clock
from bcnet_jax.timing import layers
from bcnet_jax.timing import predictor
from bcnet_jax.timing import segments
from configs import testing as testing_config
from tests.programs import command
from tests.programs import ROOT
from tests.programs import snapshot
from tests.programs import SUBPROCESS_ENV

# A latency file in seconds: few cells (every 10th bin), few networks.
SMALL = {'batch': 2, 'repeats': 3, 'step': 10, 'fit_networks': 2,
         'networks': 3}


def resnet20_latencies() -> tuple:
  """(ResNet-20, cells of a known function of the channels, a correction
  per stream of random values, the generator that drew them)."""
  model = models.get_model('resnet20_cifar')
  cells = {k: 0.01 + 1e-4 * c.in_channels * c.out_channels
           for k, c in layers.cells(model, 5).items()}
  rng = np.random.default_rng(0)
  width = model.space.bins - model.space.min_bins + 1
  correction = {'ridge': 1.0, 'streams': ['stage1', 'stage2', 'stage3'],
                'scales': [0.8, 1.3, 1.1],
                'corrections_ms': rng.uniform(-0.3, 0.3, (3, width)).tolist(),
                'alike': [[f'stage{s}_block{b}_mid' for b in (1, 2, 3)]
                          for s in (1, 2, 3)],
                'alike_ms': rng.uniform(-0.1, 0.1, (3, width)).tolist(),
                'offset_ms': 2.0}
  return model, cells, correction, rng


def without_values(correction: dict) -> dict:
  """The correction with its values per width all 0."""
  return dict(correction,
              corrections_ms=np.zeros_like(correction['corrections_ms']),
              alike_ms=np.zeros_like(correction['alike_ms']))


def segments_of(model, cells, correction, widths) -> np.ndarray:
  """[networks, segments] ms: each segment's part of `correction` (its
  scale times its layers' tables, its stream's values, a share of the
  offset); together, the whole correction's prediction."""
  count = len(correction['scales'])
  # ResNet-20's streams and classes of alike groups: one of each a segment.
  only = lambda rows, s: [row if i == s else [0.0] * len(row)  # noqa: E731
                          for i, row in enumerate(rows)]
  parts = []
  for s in range(count):
    alone = dict(correction, offset_ms=correction['offset_ms'] / count,
                 scales=[x if i == s else 0.0
                         for i, x in enumerate(correction['scales'])],
                 corrections_ms=only(correction['corrections_ms'], s),
                 alike_ms=only(correction['alike_ms'], s))
    parts.append(predictor.stream_cost(model, cells, 5, alone)(widths))
  return np.stack(parts, 1)


class CostTest(parameterized.TestCase):

  @parameterized.parameters('resnet20_cifar', 'mobilenetv2_cifar',
                            'efficientnet_b0')
  def test_the_macs_cost_is_the_cost_models_macs(self, name):
    costs = CostModel(models.get_model(name))
    widths = costs.space.sample(np.random.default_rng(0), 200)
    np.testing.assert_array_equal(costs.macs_cost()(widths),
                                  costs.macs(widths))
    self.assertEqual(costs.macs_cost()(widths[0]), costs.macs(widths[0]))

  def test_expected_is_exact_over_every_width_vector(self):
    # Channel-Bench-Macro's 16,384 width vectors, listed; random tables of
    # every kind of term: two groups, one group (its diagonal), a group
    # and none, none at all.
    space = models.get_space('cbm_resnet', 4, 1)
    rng = np.random.default_rng(1)
    none = space.num_groups
    group_a = np.array([0, 2, 3, none, 5])
    group_b = np.array([1, 2, none, none, 0])
    cost = Cost(space, 'latency_ms', rng.random((5, 4, 4)), group_a,
                group_b, constant=0.25)
    probs = rng.random((space.num_groups, 4))
    probs /= probs.sum(1, keepdims=True)
    every = np.array(list(itertools.product(range(1, 5), repeat=7)))
    weight = np.prod(probs[np.arange(7), every - 1], axis=1)
    with jax.enable_x64(True):
      got = float(cost.expected(jnp.asarray(probs, jnp.float64)))
    self.assertAlmostEqual(got, float(np.sum(weight * cost(every))), 10)

  def test_uniform_within_and_its_error(self):
    costs = CostModel(models.get_model('resnet20_cifar'))
    cost = costs.macs_cost()
    budget = 0.5 * cost(costs.space.full())
    c = cost.uniform_within(budget)
    self.assertLessEqual(cost(c), budget)
    self.assertGreater(cost(c + 1), budget)
    with self.assertRaisesRegex(ValueError, 'below the smallest width'):
      cost.uniform_within(0.5 * cost(costs.space.smallest()))


class TablesTest(absltest.TestCase):
  """The per-layer tables from measured cells (here a known function of
  the channels, not timings: what is tested is where each value goes)."""

  def test_each_cell_in_its_place_and_linear_between_the_grid(self):
    model = models.get_model('resnet20_cifar')
    space = model.space

    def fake(cells):
      return {k: 1.0 + c.in_channels * c.out_channels
              for k, c in cells.items()}

    every, _, _ = layers.tables(model, fake(layers.cells(model, 1)), 1)
    coarse, group_a, group_b = layers.tables(
        model, fake(layers.cells(model, 5)), 5)
    grid = np.array(layers.grid(space, 5)) - space.min_bins
    for t, layer in enumerate(layers.check_supported(model)):
      rows = grid if group_a[t] < space.num_groups else [0]
      columns = grid if group_b[t] < space.num_groups else [0]
      if group_a[t] == group_b[t] and group_a[t] < space.num_groups:
        np.testing.assert_array_equal(coarse[t][grid, grid],
                                      every[t][grid, grid], layer.path)
      else:
        np.testing.assert_array_equal(coarse[t][np.ix_(rows, columns)],
                                      every[t][np.ix_(rows, columns)],
                                      layer.path)
    # Between two measured bins, the value is on the line between them.
    conv = next(t for t, g in enumerate(group_b)
                if g < space.num_groups and group_a[t] < space.num_groups
                and group_a[t] != g)
    a, b = grid[0], grid[1]
    mid = (a + b) // 2
    expected = coarse[conv][a, a] + (mid - a) / (b - a) * (
        coarse[conv][a, b] - coarse[conv][a, a])
    self.assertAlmostEqual(coarse[conv][a, mid], expected)

  def test_streams_are_the_residual_groups_and_segments_run_between(self):
    for name, streams in (('resnet20_cifar', ['stage1', 'stage2', 'stage3']),
                          ('mobilenetv2_cifar', [f'stage{s}' for s in
                                                 (2, 3, 4, 5, 6)]),
                          ('efficientnet_b0', [f'stage{s}' for s in
                                               (2, 3, 4, 5, 6)]),
                          ('vgg16_cifar', [])):
      model = models.get_model(name)
      stream_groups, segment = layers.streams(model)
      self.assertEqual([model.space.groups[g] for g in stream_groups],
                       streams, name)
      self.assertLen(segment, len(layers.check_supported(model)))
      # Segments in call order, but for a block's first layers, which
      # belong to the stage its width is numbered in.
      self.assertEqual(sorted(set(segment)),
                       list(range(max(1, len(streams)))), name)
    resnet = models.get_model('resnet20_cifar')
    paths = [layer.path[0] for layer in layers.check_supported(resnet)]
    _, segment = layers.streams(resnet)
    self.assertEqual(segment[paths.index('stage2_block1_conv1')], 1)
    self.assertEqual(segment[paths.index('stage1_block3_bn2')], 0)
    self.assertEqual(segment[paths.index('classifier')], 2)

  def test_alike_groups_are_a_segments_groups_of_equal_channels(self):
    names = lambda model: [  # noqa: E731
        (s, [model.space.groups[g] for g in groups])
        for s, groups in layers.alike_groups(model)]
    self.assertEqual(
        names(models.get_model('resnet20_cifar')),
        [(s - 1, [f'stage{s}_block{b}_mid' for b in (1, 2, 3)])
         for s in (1, 2, 3)])
    expand = lambda s, b: f'stage{s}_block{b}_expand'  # noqa: E731
    self.assertEqual(
        names(models.get_model('mobilenetv2_cifar')),
        [(0, ['stem']), (0, ['stage1']), (0, [expand(2, 1)]),
         (0, [expand(2, 2), expand(3, 1)]),
         (1, [expand(3, 2), expand(3, 3), expand(4, 1)]),
         (2, [expand(4, b) for b in (2, 3, 4)] + [expand(5, 1)]),
         (3, [expand(5, 2), expand(5, 3), expand(6, 1)]),
         (4, [expand(6, 2), expand(6, 3), expand(7, 1)]),
         (4, ['stage7']), (4, ['head'])])
    # No streams: one segment, its groups of equal channels together.
    vgg = models.get_model('vgg16_cifar')
    for _, groups in layers.alike_groups(vgg):
      self.assertLen({tuple(vgg.space.dims[g].edges) for g in groups}, 1)
    self.assertEqual(sorted(g for _, groups in layers.alike_groups(vgg)
                            for g in groups), list(range(vgg.space.num_groups)))

  def test_the_fitted_correction_predicts_what_it_was_fitted_to(self):
    # Latencies made by a known correction of a known table: the fit finds
    # a predictor of other width vectors within 1%.
    # Each segment timed alone as the correction's part of it; the whole
    # network 10% slower than their sum, plus 1 ms.
    model, cells, known, rng = resnet20_latencies()
    truth = predictor.stream_cost(model, cells, 5, known)
    fitted_on = model.space.sample(rng, 1000)
    segments_ms = segments_of(model, cells, known, fitted_on)
    np.testing.assert_allclose(segments_ms.sum(1), truth(fitted_on))
    other = model.space.sample(rng, 100)
    for fitted_to in ('segments', 'networks'):
      # A small penalty: the values not shrunk, the scales not moved.
      correction = predictor.fit_correction(
          model, cells, 5, fitted_on, 1.1 * truth(fitted_on) + 1.0,
          segments_ms, (fitted_to, 1e-3))
      self.assertEqual((correction['streams'], correction['alike'],
                        correction['fitted_to']),
                       (known['streams'], known['alike'], fitted_to))
      np.testing.assert_allclose(correction['scales'],
                                 1.1 * np.array(known['scales']), rtol=0.01)
      # As a latency file keeps it, and reads it back.
      path = os.path.join(self.create_tempdir(), 'latency.json')
      files.write_json_atomic(path, {'cells': cells, 'plan': {'step': 5},
                                     'correction': correction})
      fitted = predictor.cost_of(model, files.read_json(path))
      np.testing.assert_allclose(fitted(other), 1.1 * truth(other) + 1.0,
                                 rtol=0.01, err_msg=fitted_to)
    # Another version's streams: named, not mispredicted.
    with self.assertRaisesRegex(ValueError, r"streams \['stage1', 'stage2'\] "
                                r".* finds \['stage1', 'stage2', 'stage3'\]"):
      predictor.stream_cost(model, cells, 5,
                            dict(known, streams=['stage1', 'stage2']))
    with self.assertRaisesRegex(ValueError, r'\(2 segments.* \(3 segments'):
      predictor.stream_cost(model, cells, 5, dict(known, scales=[1.0, 1.0]))
    with self.assertRaisesRegex(
        ValueError, r"alike groups \[\['stage1_block1_mid'\]\] .* finds .* "
        r"\[\['stage1_block1_mid', "):
      predictor.stream_cost(model, cells, 5,
                            dict(known, alike=[['stage1_block1_mid']]))
    with self.assertRaisesRegex(ValueError, 'values for 2 classes of alike '
                                'groups, not its 3'):
      predictor.stream_cost(model, cells, 5,
                            dict(known, alike_ms=known['alike_ms'][:2]))
    # A class's values count at each of its groups' widths.
    no_classes = predictor.stream_cost(model, cells, 5, dict(
        known, alike_ms=np.zeros_like(known['alike_ms'])))
    values = np.asarray(known['alike_ms'])
    groups = [[model.space.groups.index(name) for name in names]
              for names in known['alike']]
    np.testing.assert_allclose(
        truth(other) - no_classes(other),
        sum(values[k][other[:, g] - model.space.min_bins]
            for k, class_ in enumerate(groups) for g in class_))
    # A correction of format 3 or 4 (no classes): its streams' values only.
    earlier = {k: v for k, v in known.items()
               if k not in ('alike', 'alike_ms')}
    np.testing.assert_allclose(
        predictor.stream_cost(model, cells, 5, earlier)(other),
        no_classes(other))
    with self.assertRaisesRegex(ValueError, 'neither one scale nor'):
      predictor.cost_of(model, {'cells': cells, 'plan': {'step': 5},
                                'correction': {'offset_ms': 1.0}})

  def test_the_build_keeps_the_correction_that_predicts_folds_best(self):
    model, cells, known, rng = resnet20_latencies()
    per_stream = predictor.stream_cost(model, cells, 5, known)
    one_scale = predictor.table_cost(model, cells, 5, scale=1.5,
                                     offset_ms=2.0)
    widths = model.space.sample(rng, 200)
    chosen, tried = predictor.choose_correction(
        model, cells, 5, widths, per_stream(widths),
        segments_of(model, cells, known, widths))
    self.assertEqual([(t['fitted_to'], t['ridge']) for t in tried],
                     list(predictor.CANDIDATES))
    self.assertIsNotNone(chosen['ridge'])
    self.assertGreater(
        max(t['kendall_tau'] for t in tried if t['ridge'] is not None),
        tried[0]['kendall_tau'])
    # A correction per stream that fits a scale below 0 is not kept.
    negative = dict(without_values(known), scales=[0.8, -0.5, 1.1],
                    offset_ms=20.0)
    chosen, tried = predictor.choose_correction(
        model, cells, 5, widths,
        predictor.stream_cost(model, cells, 5, negative)(widths),
        segments_of(model, cells, negative, widths))
    self.assertIsNone(chosen['ridge'])
    self.assertEqual([t.get('dropped') for t in tried],
                     [None] + ['a scale not positive'] * 8)
    # Latencies of one scale: every candidate fits them; one scale wins.
    one_scale_segments = segments_of(model, cells, dict(
        without_values(known), scales=[1.5] * 3, offset_ms=2.0), widths)
    chosen, _ = predictor.choose_correction(
        model, cells, 5, widths, one_scale(widths), one_scale_segments)
    self.assertEqual(set(chosen), {'ridge', 'scale', 'offset_ms'})
    self.assertAlmostEqual(chosen['scale'], 1.5)
    # Not tried: a fit to segments without segments timed; a correction
    # per stream with too few networks for its scales, or without streams.
    for name, count, timed, not_tried in (
        ('resnet20_cifar', 200, False, [False] * 5 + [True] * 4),
        ('resnet20_cifar', 10, True, [False] + [True] * 8),
        ('vgg16_cifar', 200, False, [False] + [True] * 8)):
      model = models.get_model(name)
      some = model.space.sample(rng, count)
      _, tried = predictor.choose_correction(
          model, cells if name == 'resnet20_cifar' else
          {k: 1.0 for k in layers.cells(model, 5)}, 5, some,
          rng.uniform(1, 2, count),
          rng.uniform(0.3, 0.7, (count, 3)) if timed else None)
      self.assertEqual([t['kendall_tau'] is None for t in tried], not_tried,
                       name)

  def test_a_file_of_one_scale_predicts_as_before(self):
    # Formats 1 and 2 kept one scale and offset: the same Cost as they
    # made, so a search interrupted under one resumes (its state keeps the
    # predictor's fingerprint).
    model, cells, *_ = resnet20_latencies()
    tables, group_a, group_b = layers.tables(model, cells, 5)
    before = Cost(model.space, 'latency_ms', 1.5 * tables, group_a, group_b,
                  2.0)
    cost = predictor.cost_of(model, {
        'cells': cells, 'plan': {'step': 5},
        'correction': {'scale': 1.5, 'offset_ms': 2.0}})
    self.assertEqual(cost.fingerprint(), before.fingerprint())

  def test_a_traced_model_is_an_error_saying_what_to_do(self):
    from tests import traced_test  # pylint: disable=g-import-not-at-top
    with self.assertRaisesRegex(ValueError, 'under a MACs budget'):
      layers.cells(traced_test.trace('ResNet20Twin'), 3)


class SegmentsTest(absltest.TestCase):

  def test_a_network_cut_where_its_streams_segments_meet(self):
    rng = np.random.default_rng(0)
    for name, count in (('resnet20_cifar', 3), ('mobilenetv2_cifar', 5),
                        ('vgg16_cifar', 1)):
      model = models.get_model(name)
      widths = model.space.sample(rng, 1)[0]
      compact = models.compact_like(model, widths)
      runners = segments.runners(model, widths, batch=2)
      self.assertLen(runners, count, name)
      # Each operation of the network once; each piece holds operations of
      # every layer of its segment, and of no other layer.
      _, segment = layers.streams(model)
      segment_of = {'/'.join(layer.path): at for layer, at in
                    zip(layers.check_supported(model), segment)}
      pieces = [operations(fn, args) for fn, args in runners]
      self.assertEqual(sum(len(p) for p in pieces),
                       len(operations(*clock.network_runner(
                           model, widths, batch=2))), name)
      for s, piece in enumerate(pieces):
        traced_by = {path for module in piece for path in segment_of
                     if module == path or module.startswith(path + '/')}
        self.assertEqual(traced_by, {path for path, at in segment_of.items()
                                     if at == s}, (name, s))
      # The first segment reads the image; the last gives the logits.
      first_inputs = {a.shape for a in runners[0][1]}
      self.assertIn(compact.dummy_input(2).shape, first_inputs, name)
      fn, args = runners[-1]
      self.assertEqual([o.shape for o in jax.eval_shape(fn, *args)],
                       [(2, model.num_classes)], name)


  def test_a_network_that_cannot_be_cut_is_an_error_saying_why(self):
    model = models.get_model('resnet20_cifar')
    widths = model.space.full()
    table = layers.check_supported(model)
    stream_groups, segment = layers.streams(model)
    # A layer whose module path no operation carries (called through a
    # model's method, say): its operations would join another segment.
    renamed = [dataclasses.replace(table[0], path=('elsewhere',)), *table[1:]]
    with mock.patch.object(layers, 'check_supported', lambda _: renamed):
      with self.assertRaisesRegex(ValueError, r"layers \['elsewhere'\]"):
        segments.runners(model, widths, batch=2)
    # Segments that interleave in the program.
    swapped = segment.copy()
    swapped[[0, -1]] = segment[[-1, 0]]
    with mock.patch.object(layers, 'streams',
                           lambda _: (stream_groups, swapped)):
      with self.assertRaisesRegex(ValueError, 'interleaved'):
        segments.runners(model, widths, batch=2)


def operations(fn, args) -> list[str]:
  """The module path that traced each operation of a jitted fn's
  program."""
  jaxpr, _ = segments.program(fn, args)
  return [channels.module_of(e) for e in jaxpr.eqns]


class ClockTest(absltest.TestCase):

  def test_ratios_time_the_runners_in_turns_in_a_new_order_each_round(self):
    calls = []

    def runner(name):
      return (lambda: calls.append(name), ())

    times, noise = clock.ratios([runner('a'), runner('b'), runner('c')],
                                *runner('ref'), repeats=5, warmup=1)
    self.assertEqual((times.shape, noise.shape), ((3,), (3,)))
    # Each compiled and warmed up, the reference too, then the reference;
    # then each call of a runner followed by one of the reference.
    self.assertEqual(calls[:9], ['a', 'a', 'b', 'b', 'c', 'c'] + ['ref'] * 3)
    timed = calls[9:]
    self.assertEqual(timed[1::2], ['ref'] * 15)
    rounds = [tuple(timed[0::2][i:i + 3]) for i in range(0, 15, 3)]
    for order in rounds:
      self.assertCountEqual(order, 'abc')
    self.assertGreater(len(set(rounds)), 1)

  def test_compile_all_compiles_what_the_first_call_runs(self):
    runners = [(jax.jit(lambda x, k=k: jnp.tanh(x) * k), (jnp.ones(k),))
               for k in range(2, 6)]
    compiles = []
    listener = lambda event, *_, **__: compiles.append(event)  # noqa: E731
    jax.monitoring.register_event_duration_secs_listener(listener)
    self.addCleanup(jax.monitoring.unregister_event_duration_listener,
                    listener)
    clock.compile_all(runners)
    compiled = compiles.count('/jax/core/compile/backend_compile_duration')
    self.assertGreaterEqual(compiled, len(runners))
    compiles.clear()
    for fn, args in runners:
      jax.block_until_ready(fn(*args))
    self.assertNotIn('/jax/core/compile/backend_compile_duration', compiles)

  def test_ratios_of_no_runners_time_nothing(self):
    # networks_ms of the full network alone times no others.
    calls = []
    times, noise = clock.ratios([], lambda: calls.append('ref'), (),
                                repeats=5)
    self.assertEqual((times.shape, noise.shape, calls), ((0,), (0,), []))


class LatencySearchTest(absltest.TestCase):
  """A latency file of the testing config's ResNet-20, built by the command,
  and a search under a budget between its smallest and full network."""

  @classmethod
  def setUpClass(cls):
    super().setUpClass()
    cls.tmp = tempfile.mkdtemp()
    cls.latency_path = os.path.join(cls.tmp, 'latency.json')
    cls.out = subprocess.run(
        command('latency', '--config=configs/testing.py',
                f'--out={cls.latency_path}',
                *[f'--{k}={v}' for k, v in SMALL.items()]),
        cwd=ROOT, env=SUBPROCESS_ENV, capture_output=True, text=True)
    cls.record = json.loads(pathlib.Path(cls.latency_path).read_text())
    cls.trained = os.path.join(cls.tmp, 'trained')
    train.train_and_evaluate(testing_config.get_config(), cls.trained)
    # Between the predicted smallest and full network, as the search wants.
    model = models.get_model('resnet20_cifar', resolution=28, in_channels=1)
    cost = predictor.cost_of(model, cls.record)
    cls.low, cls.high = cost(model.space.smallest()), cost(model.space.full())
    cls.budget = 0.5 * (cls.low + cls.high)
    cls.searched = os.path.join(cls.tmp, 'searched')
    shutil.copytree(cls.trained, cls.searched)
    cls.summary = search.run(cls.config(), cls.searched)

  @classmethod
  def tearDownClass(cls):
    shutil.rmtree(cls.tmp)
    super().tearDownClass()

  @classmethod
  def config(cls, **overrides):
    c = testing_config.get_config()
    c.search.macs_fraction = None
    c.search.latency_budget_ms = cls.budget
    c.search.latency_file = cls.latency_path
    c.update_from_flattened_dict(overrides)
    return c

  def test_the_command_prints_and_records_its_validation(self):
    self.assertEqual(self.out.returncode, 0, self.out.stderr)
    printed = json.loads(self.out.stdout.splitlines()[-1])
    record = self.record
    self.assertEqual(printed['validation'], record['validation'])
    self.assertEqual(set(record['validation']),
                     {'mape', 'kendall_tau', 'table_mape',
                      'table_kendall_tau', 'macs_mape', 'macs_kendall_tau',
                      'repeat_mape', 'repeat_kendall_tau', 'networks'})
    self.assertEqual(record['validation']['networks'], SMALL['networks'])
    self.assertEqual(record['device'], clock.device())
    self.assertEqual((record['batch'], record['device']['backend']),
                     (2, 'cpu'))
    self.assertTrue(record['complete'])
    self.assertLess(record['smallest_ms'], record['full_ms'])
    # The held-out networks are measured twice, the same widths.
    roles = [n['role'] for n in record['networks']]
    self.assertEqual(roles, ['fit'] * (2 + SMALL['fit_networks']) +
                     ['validation'] * SMALL['networks'] +
                     ['again'] * SMALL['networks'])
    widths = lambda role: [n['widths'] for n in record['networks']  # noqa: E731
                           if n['role'] == role]
    self.assertEqual(widths('validation'), widths('again'))
    model = models.get_model('resnet20_cifar', resolution=28, in_channels=1)
    self.assertEqual(set(record['cells']),
                     set(layers.cells(model, SMALL['step'])))
    # Each fit network's three segments (one per stream), timed alone.
    self.assertEqual([n['widths'] for n in record['segments']],
                     widths('fit'))
    for n in record['segments']:
      self.assertLen(n['ms'], 3)
      self.assertTrue(all(ms > 0 for ms in n['ms']))
    # Too few fit networks here for a correction per stream: one scale.
    self.assertEqual([(c['fitted_to'], c['ridge'])
                      for c in record['cross_validation']],
                     list(predictor.CANDIDATES))
    self.assertIsNone(record['correction']['ridge'])
    for line in ('on 3 random networks not used in fitting',
                 'The correction: one scale and offset; the candidates',
                 'per stream, fitted to whole networks (ridge 10) not tried',
                 'per stream, fitted to segments timed alone (ridge 0.1) not '
                 'tried',
                 'per-layer table + correction (the predictor)',
                 'per-layer table + fit', 'MACs + fit',
                 'measured again (repeatability)', 'noise'):
      self.assertIn(line, self.out.stdout)

  def test_an_interrupted_build_resumes_without_measuring_again(self):
    # Interrupted after the first of the second measurements.
    done = 2 + SMALL['fit_networks'] + SMALL['networks'] + 1
    partial = copy.deepcopy(self.record)
    partial.update(complete=False, networks=partial['networks'][:done],
                   segments=[])
    for key in ('correction', 'cross_validation', 'validation',
                'smallest_ms', 'noise'):
      del partial[key]
    path = os.path.join(self.tmp, 'partial.json')
    files.write_json_atomic(path, partial)
    setup = supernet.Setup.create(testing_config.get_config())
    # One network a turn: each saved as soon as it is measured.
    saved = []
    save = build.Build._save
    with mock.patch.object(build, '_NETWORKS_PER_TURN', 1), \
        mock.patch.object(build.Build, '_save', lambda self: (
            saved.append((len(self.record['networks']),
                          len(self.record['segments']))), save(self))):
      record = build.Build(testing_config.get_config(), setup.model, path,
                           **SMALL).run()
    # The networks, then each fit network's segments, then the fit.
    fit = 2 + SMALL['fit_networks']
    self.assertEqual(saved[-3 - fit:],
                     [(done + 1, 0), (done + 2, 0)] +
                     [(done + 2, k) for k in range(1, fit + 1)] +
                     [(done + 2, fit)])
    self.assertEqual(record['cells'], self.record['cells'])
    self.assertEqual(record['networks'][:done],
                     self.record['networks'][:done])
    self.assertEqual([n['widths'] for n in record['networks']],
                     [n['widths'] for n in self.record['networks']])
    self.assertLen(record['networks'], len(self.record['networks']))
    self.assertEqual([n['widths'] for n in record['segments']],
                     [n['widths'] for n in self.record['segments']])
    self.assertTrue(record['complete'])
    # Interrupted after the first fit network's segments.
    partial = copy.deepcopy(self.record)
    partial.update(complete=False, segments=partial['segments'][:1])
    files.write_json_atomic(path, partial)
    saved.clear()
    with mock.patch.object(build, '_NETWORKS_PER_TURN', 1), \
        mock.patch.object(build.Build, '_save', lambda self: (
            saved.append(len(self.record['segments'])), save(self))):
      record = build.Build(testing_config.get_config(), setup.model, path,
                           **SMALL).run()
    self.assertEqual(saved[-4:], [2, 3, 4, 4])
    self.assertEqual(min(saved), 1)  # the first one's kept throughout
    self.assertEqual(record['segments'][:1], self.record['segments'][:1])
    self.assertEqual(record['networks'], self.record['networks'])
    with self.assertRaisesRegex(ValueError, '--repeats: the file 3, now 4'):
      build.Build(testing_config.get_config(), setup.model, path,
                  **dict(SMALL, repeats=4))

  def test_a_finished_file_scored_on_networks_of_another_seed(self):
    kept = os.path.join(self.create_tempdir(), 'measured.json')
    out = subprocess.run(
        [sys.executable, str(ROOT / 'experiments/latency_new_networks.py'),
         f'--latency_file={self.latency_path}', '--networks=3',
         '--repeats=3', f'--out={kept}'],
        cwd=ROOT, env=SUBPROCESS_ENV, capture_output=True, text=True)
    self.assertEqual(out.returncode, 0, out.stderr)
    result = json.loads(out.stdout.splitlines()[-1])
    self.assertEqual((result['seed'], result['networks']), (1, 3))
    kept = files.read_json(kept)
    self.assertEqual(np.shape(kept['widths']),
                     (3, len(self.record['networks'][0]['widths'])))
    self.assertEqual(np.shape(kept['ms']), (2, 3))
    self.assertEqual(result['correction']['ridge'],
                     self.record['correction']['ridge'])
    for predicted_by in ('predictor', 'table', 'macs', 'repeat'):
      self.assertBetween(result[predicted_by]['kendall_tau'], -1, 1)
      self.assertGreater(result[predicted_by]['mape'], 0)

  def test_the_validation_pairs_each_network_with_its_second_measurement(
      self):
    # Second measurements 10% slower than the first: the predictions are
    # scored against the mean of each pair, the first as a prediction of
    # the second misses by 0.1 / 1.1 and ranks exactly.
    record = copy.deepcopy(self.record)
    first = {tuple(n['widths']): n['ms'] for n in record['networks']
             if n['role'] == 'validation'}
    for n in record['networks']:
      if n['role'] == 'again':
        n['ms'] = 1.1 * first[tuple(n['widths'])]
    path = self.write('paired.json', dict(record, complete=False))
    setup = supernet.Setup.create(testing_config.get_config())
    built = build.Build(testing_config.get_config(), setup.model, path,
                        **SMALL)
    built.finish()
    validation = built.record['validation']
    self.assertAlmostEqual(validation['repeat_mape'], 0.1 / 1.1)
    self.assertEqual(validation['repeat_kendall_tau'], 1.0)
    held_out = np.array([n['widths'] for n in record['networks']
                         if n['role'] == 'validation'])
    predicted = predictor.cost_of(setup.model, built.record)(held_out)
    expected = predictor.errors_of(
        predicted, 1.05 * np.array([first[tuple(c)] for c in held_out]))
    self.assertAlmostEqual(validation['mape'], expected['mape'])
    self.assertAlmostEqual(validation['kendall_tau'],
                           expected['kendall_tau'])
    # Second measurements of other networks (an edited file): named.
    again = [n for n in record['networks'] if n['role'] == 'again']
    again[0]['widths'], again[1]['widths'] = (again[1]['widths'],
                                              again[0]['widths'])
    path = self.write('unpaired.json', dict(record, complete=False))
    with self.assertRaisesRegex(ValueError, 'not the same width vectors'):
      build.Build(testing_config.get_config(), setup.model, path,
                  **SMALL).finish()
    # Segments of other networks: named too.
    record = copy.deepcopy(self.record)
    first, second = record['segments'][2:4]
    first['widths'], second['widths'] = second['widths'], first['widths']
    path = self.write('unpaired_segments.json', dict(record, complete=False))
    with self.assertRaisesRegex(ValueError, 'segments timed alone are not'):
      build.Build(testing_config.get_config(), setup.model, path,
                  **SMALL).finish()

  def test_a_file_of_the_earlier_format_predicts_but_is_not_resumed(self):
    # Finished files of formats 2 to 4 (one scale and offset here).
    setup = supernet.Setup.create(testing_config.get_config())
    for format_ in ('bcnet_jax.latency/2', 'bcnet_jax.latency/3',
                    'bcnet_jax.latency/4'):
      record = copy.deepcopy(self.record)
      record.update(format=format_,
                    correction={'scale': 1.2, 'offset_ms': 0.5})
      if format_ != 'bcnet_jax.latency/4':  # timed no segments
        del record['segments'], record['segment_reference_ms']
      path = self.write('earlier.json', record)
      before = pathlib.Path(path).read_bytes()
      cost, _ = predictor.load(path, self.config(), setup.model)
      widths = setup.model.space.sample(np.random.default_rng(0), 20)
      table = predictor.table_cost(setup.model, record['cells'],
                                   SMALL['step'])
      np.testing.assert_allclose(cost(widths), 1.2 * table(widths) + 0.5)
      with self.assertRaisesRegex(ValueError, f"earlier version .*'{format_}'"
                                  ".*give another --out"):
        build.Build(testing_config.get_config(), setup.model, path, **SMALL)
      self.assertEqual(pathlib.Path(path).read_bytes(), before)
    # An unfinished build of format 4: resumed, nothing measured again.
    record.update(complete=False)
    path = self.write('format4.json', record)
    resumed = build.Build(testing_config.get_config(), setup.model, path,
                          **SMALL).run()
    self.assertEqual((resumed['format'], resumed['complete']),
                     (predictor.FORMAT, True))
    for measured in ('cells', 'networks', 'segments'):
      self.assertEqual(resumed[measured], record[measured])
    # An unfinished build of format 3 (no segments): resumed, its cells and
    # networks kept, the segments timed.
    record.update(format='bcnet_jax.latency/3')
    del record['segments'], record['segment_reference_ms']
    path = self.write('format3.json', record)
    resumed = build.Build(testing_config.get_config(), setup.model, path,
                          **SMALL).run()
    self.assertEqual((resumed['format'], resumed['complete']),
                     (predictor.FORMAT, True))
    self.assertEqual((resumed['cells'], resumed['networks']),
                     (record['cells'], record['networks']))
    self.assertEqual([n['widths'] for n in resumed['segments']],
                     [n['widths'] for n in self.record['segments']])
    self.assertGreater(resumed['segment_reference_ms'], 0)

  def test_a_search_under_a_latency_budget(self):
    summary, budget = self.summary, self.budget
    self.assertEqual((summary['constraint'], summary['budget']),
                     ('latency_ms', budget))
    self.assertIsNone(summary['macs_budget'])
    state = json.loads(pathlib.Path(self.searched, 'search',
                                    'state.json').read_text())
    low, high = summary['band']
    for r in state['records']:
      self.assertIn('macs', r)
      if r['phase'] in ('evolution', 'random'):
        self.assertBetween(r['latency_ms_predicted'], low, high)
      else:
        self.assertLessEqual(r['latency_ms_predicted'], budget)
    arch = json.loads(pathlib.Path(self.searched, 'search',
                                   'arch.json').read_text())
    self.assertEqual(arch['format'], 2)
    self.assertEqual(arch['latency_budget_ms'], budget)
    self.assertIsNone(arch['macs_budget'])
    self.assertLessEqual(arch['latency_ms_predicted'], budget)
    self.assertEqual(arch['latency_ms'], summary['evolution']['latency_ms'])
    self.assertEqual(arch['latency_batch'], 2)
    self.assertEqual(list(arch['uniform_widths'].values()),
                     summary['uniform']['widths'])
    latency = summary['latency']
    self.assertAlmostEqual(latency['speedup_over_full'], latency['full_ms'] /
                           arch['latency_ms'])
    self.assertAlmostEqual(latency['speedup_over_uniform'],
                           summary['uniform']['latency_ms'] /
                           arch['latency_ms'])
    self.assertAlmostEqual(
        latency['winner_on_file_scale_ms'],
        arch['latency_ms'] / latency['full_ms'] * self.record['full_ms'])
    for method in ('evolution',) + search.BASELINES:
      self.assertGreater(summary[method]['latency_ms'], 0)
    table = search_report.table(search.Search(
        supernet.Setup.create(self.config()),
        supernet.restore_trained(supernet.Setup.create(self.config()),
                                 self.searched), self.searched), summary)
    for text in ('predicted', 'measured', 'Measured: the winner runs in',
                 f'budget of {budget:,.3f} ms',
                 f'Against the budget of {budget:.3f} ms: the winner takes '
                 f'{latency["winner_on_file_scale_ms"]:.3f} ms'):
      self.assertIn(text, table)
    self.assertEqual(pathlib.Path(self.searched, 'search', 'population.png'
                                  ).read_bytes()[:4], b'\x89PNG')

  def test_errors_name_what_differs_and_write_nothing(self):
    workdir = os.path.join(self.tmp, 'errors')
    shutil.copytree(self.trained, workdir)
    before = snapshot(workdir)

    def edited(name, change):
      record = copy.deepcopy(self.record)
      change(record)
      return self.write(name, record)

    cases = (
        ({'search.latency_file': edited(
            'other_model.json',
            lambda r: r['model'].update({'model.name': 'vgg16_cifar'}))},
         "another model or device .*model.model.name: the file "
         "'vgg16_cifar', this run 'resnet20_cifar'"),
        ({'search.latency_file': edited(
            'other_device.json',
            lambda r: r['device'].update(device='NVIDIA H100'))},
         "device.device: the file 'NVIDIA H100'"),
        ({'search.latency_file': edited(
            'other_backend.json',
            lambda r: r['device'].update(backend='gpu'))},
         "device.backend: the file 'gpu', this run 'cpu'"),
        ({'search.latency_file': edited(
            'unfinished.json', lambda r: r.update(complete=False))},
         'is not finished: rerun'),
        ({'search.latency_budget_ms': self.high + 1},
         'above the full network\'s latency .* as predicted'),
        ({'search.latency_budget_ms': self.low - 1},
         'below the smallest network\'s latency'),
        ({'search.latency_file': None}, 'needs search.latency_file'),
    )
    for overrides, message in cases:
      with self.assertRaisesRegex(ValueError, message):
        search.run(self.config(**overrides), workdir)
    self.assertEqual(snapshot(workdir), before)
    out = subprocess.run(
        command('search', '--config=configs/testing.py',
                f'--workdir={workdir}',
                f'--config.search.latency_budget_ms={self.high + 1}',
                f'--config.search.latency_file={self.latency_path}'),
        cwd=ROOT, env=SUBPROCESS_ENV, capture_output=True, text=True)
    self.assertEqual(out.returncode, 2, out.stderr)
    self.assertEqual(len(out.stderr.strip().splitlines()), 1, out.stderr)
    self.assertIn('above the full network', out.stderr)
    self.assertEqual(snapshot(workdir), before)

  def test_a_search_finished_before_latency_is_left_as_it_was(self):
    workdir = os.path.join(self.tmp, 'finished_before')
    shutil.copytree(self.searched, workdir)
    for name in ('state.json', 'summary.json'):
      path = pathlib.Path(workdir, 'search', name)
      saved = json.loads(path.read_text())
      del saved['latency']
      path.write_text(json.dumps(saved))
    before = snapshot(workdir)
    summary = search.run(self.config(), workdir)
    self.assertNotIn('latency', summary)
    self.assertEqual(snapshot(workdir), before)

  def test_an_arch_of_format_1_is_still_read(self):
    arch = json.loads(pathlib.Path(self.searched, 'search',
                                   'arch.json').read_text())
    old = {k: v for k, v in arch.items()
           if k not in space_lib.LATENCY_FIELDS}
    old['format'] = 1
    space = models.get_space('resnet20_cifar')
    np.testing.assert_array_equal(space.widths_from_arch(old),
                                  space.widths_from_arch(arch))
    with self.assertRaisesRegex(ValueError, "unknown \\['latency_ms'\\]"):
      space.widths_from_arch(dict(old, latency_ms=1.0))
    with self.assertRaisesRegex(ValueError, "'latency_ms' must be a number"):
      space.widths_from_arch(dict(arch, latency_ms='fast'))
    with self.assertRaisesRegex(ValueError, "'uniform_widths' must be null "
                                'or an object with the groups'):
      space.widths_from_arch(dict(arch, uniform_widths={'stage1': 3}))
    with self.assertRaisesRegex(ValueError, 'allowed range is'):
      space.widths_from_arch(dict(arch, uniform_widths={
          g: 99 for g in space.groups}))

  def write(self, name, value) -> str:
    path = os.path.join(self.tmp, name)
    pathlib.Path(path).write_text(json.dumps(value))
    return path


if __name__ == '__main__':
  absltest.main()
