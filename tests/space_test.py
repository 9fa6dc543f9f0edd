"""Search space: channel edges, complements, width vectors and arch JSON."""

import json
import math
import os

from absl.testing import absltest
from absl.testing import parameterized
import numpy as np

from bcnet_jax import models
from bcnet_jax.space import search_space as space_lib


def assert_edge_requirements(test, e, nominal, bins, min_bins):
  top = bins + min_bins
  test.assertLen(e, top + 1)
  test.assertEqual(e[0], 0)
  test.assertEqual(e[bins], nominal)
  test.assertGreaterEqual(e[min_bins], 1)
  test.assertTrue(all(b >= a for a, b in zip(e, e[1:])), e)
  for k in range(top + 1):
    test.assertEqual(e[top - k], e[top] - e[k])


class EdgesTest(parameterized.TestCase):

  @parameterized.product(model=list(models.MODELS), min_bins=[1, 2, 4])
  def test_every_group_partitions_exactly(self, model, min_bins):
    bins = models.MODELS[model].bins
    space = models.get_space(model, min_bins=min_bins)
    for c in range(min_bins, bins + 1):
      widths = np.full(space.num_groups, c)
      cbar = space.complement(widths)
      left, right = (space.channel_indices(widths, s)
                     for s in ('left', 'right'))
      left_bar, right_bar = (space.channel_indices(cbar, s)
                             for s in ('left', 'right'))
      for d in space.dims:
        assert_edge_requirements(self, d.edges, d.nominal, bins, min_bins)
        self.assertEqual(d.supernet_channels, d.nominal + d.edges[min_bins])
        everything = list(range(d.supernet_channels))
        for a, b in ((left, right_bar), (right, left_bar)):
          joined = np.concatenate([a[d.name], b[d.name]])
          self.assertEqual(sorted(joined.tolist()), everything,
                           f'{d.name} c={c}')

  def test_construction_covers_documented_range(self):
    for min_bins in (1, 2, 4, 5, 8):
      for nominal in range(1, 2049):
        e = space_lib.channel_edges(nominal, 20, min_bins)
        assert_edge_requirements(self, e, nominal, 20, min_bins)

  def test_examples(self):
    self.assertEqual(space_lib.channel_edges(16, 4, 1),
                     (0, 4, 8, 12, 16, 20))
    self.assertEqual(space_lib.channel_edges(5, 4, 2),
                     (0, 1, 3, 4, 5, 7, 8))
    # B' = 6 even and N + e[m] = 9 odd: both grow by one, e[B'/2] = C'/2.
    self.assertEqual(space_lib.channel_edges(6, 4, 2),
                     (0, 2, 4, 5, 6, 8, 10))

  @parameterized.parameters((8, 1), (8, 2), (128, 1), (16, 3))
  def test_rounded_edges_keep_the_mirror_and_the_nominal(self, round_to,
                                                        min_bins):
    for nominal in (16, 24, 96, 144, 1280, 3, 320):
      e = space_lib.channel_edges(nominal, 20, min_bins, 'g', round_to)
      r = math.gcd(round_to, nominal)
      self.assertEqual(e[20], nominal)
      self.assertTrue(all(v % r == 0 for v in e), (nominal, e))
      top = 20 + min_bins
      self.assertTrue(all(e[top - k] == e[top] - e[k]
                          for k in range(top + 1)))  # L(c) ⊔ R(c̄) = C'
      self.assertEqual(list(e), sorted(e))

  def test_round_to_one_is_the_unrounded_space(self):
    for nominal in (16, 24, 96, 144, 1280, 3, 320):
      for min_bins in (1, 2, 5):
        self.assertEqual(
            space_lib.channel_edges(nominal, 20, min_bins, 'g', 1),
            space_lib.channel_edges(nominal, 20, min_bins, 'g'))

  def test_unbuildable_edges_name_the_group(self):
    with self.assertRaisesRegex(ValueError, "group 'tiny'.*min_bins=7"):
      space_lib.SearchSpace.build('toy', [('tiny', 4)], min_bins=7)

  @parameterized.parameters((21, 20), (0, 20), (1, 0), (2.5, 20))
  def test_bad_granularity(self, min_bins, bins):
    with self.assertRaisesRegex(ValueError, 'min_bins|bins'):
      space_lib.SearchSpace.build('toy', [('a', 16)], bins=bins,
                                  min_bins=min_bins)


class WidthVectorTest(parameterized.TestCase):

  def setUp(self):
    super().setUp()
    self.space = models.get_space('resnet20_cifar')

  def test_sample_is_uniform_in_range_and_complement_stays(self):
    c = self.space.sample(np.random.default_rng(0), 20000)
    self.assertEqual(c.shape, (20000, 12))
    self.assertEqual((c.min(), c.max()), (1, 20))
    counts = np.bincount(c.ravel(), minlength=21)[1:]
    self.assertLess(np.abs(counts / counts.mean() - 1).max(), 0.05)
    cbar = self.space.complement(c)
    np.testing.assert_array_equal(cbar + c, 21)

  def test_wrong_length(self):
    with self.assertRaisesRegex(ValueError,
                                '12 entries.*stage1.*shape \\(3,\\)'):
      self.space.validate_widths([1, 2, 3])

  def test_out_of_range_names_group_and_range(self):
    c = self.space.full()
    c[4] = 21
    with self.assertRaisesRegex(
        ValueError, "'stage2' has width 21, allowed range is \\[1, 20\\]"):
      self.space.validate_widths(c)
    c[4] = 0
    with self.assertRaisesRegex(ValueError, "'stage2' has width 0"):
      self.space.validate_widths(c)

  def test_non_integer(self):
    with self.assertRaisesRegex(ValueError, 'integer bins in \\[1, 20\\]'):
      self.space.validate_widths([2.5] * 12)
    with self.assertRaisesRegex(ValueError, 'comma-separated integer'):
      self.space.parse_widths('1,2,x')
    np.testing.assert_array_equal(self.space.validate_widths([3.0] * 12), 3)

  def test_channels_of_derived_dims_follow_their_group(self):
    space = models.get_space('efficientnet_b0')
    c = space.full()
    c[space.groups.index('stage2')] = 10
    chans = space.channels(c)
    se = space.dim('stage3_block1_se')  # input of stage3_block1 is stage2
    self.assertEqual(chans['stage3_block1_se'], se.edges[10])
    self.assertEqual(se.nominal, 6)  # int(0.25 * 24)
    self.assertEqual(chans['stage2_block2_se'], se.edges[10])


class ArchTest(parameterized.TestCase):

  def setUp(self):
    super().setUp()
    self.space = models.get_space('resnet20_cifar')
    self.c = self.space.sample(np.random.default_rng(1))
    self.arch = self.space.arch(self.c, resolution=32, macs=1, params=2)

  def test_round_trip_through_file(self):
    path = os.path.join(self.create_tempdir().full_path, 'a', 'arch.json')
    space_lib.write_arch(path, self.arch)
    self.assertEqual(os.listdir(os.path.dirname(path)), ['arch.json'])
    got = space_lib.read_arch(path)
    self.assertEqual(got, json.loads(json.dumps(self.arch)))
    np.testing.assert_array_equal(self.space.widths_from_arch(got), self.c)

  def _mutated(self, **changes):
    arch = json.loads(json.dumps(self.arch))
    arch.update(changes)
    return arch

  @parameterized.named_parameters(
      ('other_model', {'model': 'resnet56_cifar'}, 'for model .resnet56'),
      ('other_bins', {'bins': 10}, 'bins=10'),
      ('other_format', {'format': 3}, 'format 3 is not supported'),
  )
  def test_rejects_other_space(self, changes, message):
    with self.assertRaisesRegex(ValueError, message):
      self.space.widths_from_arch(self._mutated(**changes))

  def test_rejects_unknown_and_missing_groups(self):
    arch = self._mutated()
    arch['widths']['stage9'] = arch['widths'].pop('stage1')
    with self.assertRaisesRegex(ValueError,
                                "missing groups \\['stage1'\\].*'stage9'"):
      self.space.widths_from_arch(arch)

  def test_rejects_disagreeing_channels(self):
    arch = self._mutated()
    arch['channels']['stage3'] += 1
    with self.assertRaisesRegex(ValueError, 'stage3: .* channels but its bins'):
      self.space.widths_from_arch(arch)

  def test_rejects_missing_and_unknown_fields(self):
    arch = self._mutated(flops=3)
    del arch['macs']
    with self.assertRaisesRegex(ValueError, "missing \\['macs'\\].*'flops'"):
      self.space.widths_from_arch(arch)

  def test_rejects_bad_json_file(self):
    path = self.create_tempfile(content='{"format": 1,').full_path
    with self.assertRaisesRegex(ValueError, 'not valid JSON'):
      space_lib.read_arch(path)


if __name__ == '__main__':
  absltest.main()
