"""Width sampling by (seed, step) and channel-usage fairness per step."""

from absl.testing import absltest
from absl.testing import parameterized
import numpy as np

from bcnet_jax import models
from bcnet_jax.space import sampling


class SamplingTest(absltest.TestCase):

  def test_pure_function_of_seed_and_step(self):
    space = models.get_space('mobilenetv2')
    a = sampling.widths_for_step(space, seed=3, step=1000)
    np.testing.assert_array_equal(
        a, sampling.widths_for_step(space, seed=3, step=1000))
    self.assertFalse(np.array_equal(
        a, sampling.widths_for_step(space, seed=3, step=1001)))
    self.assertFalse(np.array_equal(
        a, sampling.widths_for_step(space, seed=4, step=1000)))
    space.validate_widths(a)


class FairnessTest(parameterized.TestCase):

  @parameterized.parameters('resnet20_cifar', 'efficientnet_b0',
                            'cbm_mobilenet')
  def test_bcnet_complementary_uses_every_channel_twice(self, model):
    space = models.get_space(model)
    for step in range(50):
      c = sampling.widths_for_step(space, seed=0, step=step)
      usage = sampling.channel_usage(space, c, objective='bcnet',
                                     complementary=True)
      for name, counts in usage.items():
        np.testing.assert_array_equal(counts, 2, f'{name} step {step}')

  def test_ua_favours_left_channels(self):
    space = models.get_space('resnet20_cifar')
    total = {d.name: 0 for d in space.dims}
    for step in range(400):
      c = sampling.widths_for_step(space, seed=0, step=step)
      usage = sampling.channel_usage(space, c, objective='ua',
                                     complementary=True)
      for name, counts in usage.items():
        self.assertTrue(np.all(np.diff(counts) <= 0), name)  # every step
        total[name] = total[name] + counts
    for d in space.dims:
      counts = total[d.name]
      self.assertTrue(np.all(np.diff(counts) <= 0))
      self.assertEqual(counts[0], 400)  # the first channel, always
      self.assertEqual(counts[-1], 0)  # beyond the nominal width, never
      self.assertLess(counts[d.nominal - 1], 0.2 * counts[0])

  def test_bcnet_without_complement_is_symmetric_not_uniform(self):
    space = models.get_space('cbm_resnet')
    c = np.array([1, 2, 3, 4, 1, 2, 3])
    usage = sampling.channel_usage(space, c, objective='bcnet',
                                   complementary=False)
    for name, counts in usage.items():
      np.testing.assert_array_equal(counts, counts[::-1])
      self.assertEqual(counts.sum(), 2 * space.channels(c)[name])


if __name__ == '__main__':
  absltest.main()
