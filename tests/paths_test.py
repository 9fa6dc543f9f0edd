"""Path-id helpers agree with the channel sets that slice_params cuts."""

from absl.testing import absltest
from absl.testing import parameterized
import numpy as np

from bcnet_jax import models
from bcnet_jax.space import paths


def ids_of(space, indices, value):
  """Per dim: `value` on the given channels, -1 elsewhere."""
  out = {}
  for d in space.dims:
    ids = np.full(d.supernet_channels, -1)
    ids[indices[d.name]] = value
    out[d.name] = ids
  return out


class PathsTest(parameterized.TestCase):

  @parameterized.parameters('resnet20_cifar', 'efficientnet_b0', 'cbm_resnet')
  def test_helpers_match_channel_indices(self, model):
    space = models.get_space(model)
    rng = np.random.default_rng(0)
    for c in [space.smallest(), space.full(), *space.sample(rng, 5)]:
      cbar = space.complement(c)
      left, right = (space.channel_indices(c, s)
                     for s in ('left', 'right'))
      want_pair = ids_of(space, left, 0)
      for d, idx in space.channel_indices(cbar, 'right').items():
        want_pair[d][idx] = 1
      for helper, want in ((paths.left, ids_of(space, left, 0)),
                           (paths.right, ids_of(space, right, 0)),
                           (paths.pair, want_pair)):
        got = helper(space, c)
        self.assertEqual(got.kind, helper.__name__)
        self.assertEqual(got.single, helper is not paths.pair)
        self.assertEqual(set(got.ids()), {d.name for d in space.dims})
        for name, ids in got.ids().items():
          self.assertEqual(ids.dtype, np.int8)
          np.testing.assert_array_equal(ids, want[name], f'{name} {c}')
      self.assertTrue(all((v >= 0).all() for v in want_pair.values()))

  def test_a_kind_is_one_of_three(self):
    with self.assertRaisesRegex(ValueError, "one of .* got 'middle'"):
      paths.Paths(np.ones(1, np.int32), models.get_space('vgg16_cifar'),
                  'middle')


if __name__ == '__main__':
  absltest.main()
