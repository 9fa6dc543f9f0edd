"""The analytic cost model: published anchors and a walk over the jaxpr."""

import functools
import math

from absl.testing import absltest
from absl.testing import parameterized
import jax
import numpy as np

from bcnet_jax import models
from bcnet_jax.models import ops
from bcnet_jax.space.costs import CostModel

# model: [(widths: 'full' or one digit for every group, MACs, params)]
ANCHORS = {
    'resnet20_cifar': [('full', 40_813_184, 272_474)],
    'resnet56_cifar': [('full', 125_747_840, 855_770)],
    'vgg16_cifar': [('full', 313_201_664, 14_724_042)],
    'mobilenetv2_cifar': [('full', 296_473_088, 2_236_682)],
    'mobilenetv2': [('full', 300_774_272, 3_504_872)],
    'resnet50': [('full', 4_089_184_256, 25_557_032)],
    'efficientnet_b0': [('full', 385_814_752, 5_288_548)],
    'cbm_mobilenet': [(4, 211_281_920, 1_804_170), (1, 14_285_312, 125_418)],
    'cbm_resnet': [(4, 1_436_226_560, 15_356_170), (1, 90_096_896, 963_658)],
}


def jaxpr_macs(jaxpr) -> int:
  """Multiply-accumulates of every conv and dot_general in a jaxpr, nested."""
  total = 0
  for eqn in jaxpr.eqns:
    out = eqn.outvars[0].aval.shape
    if eqn.primitive.name == 'conv_general_dilated':
      _, rhs_spec, _ = eqn.params['dimension_numbers']
      rhs = eqn.invars[1].aval.shape
      # Per output element: kernel taps x input channels of its group.
      taps = math.prod(rhs[i] for i in rhs_spec[2:]) * rhs[rhs_spec[1]]
      total += math.prod(out) * taps
    elif eqn.primitive.name == 'dot_general':
      (contract, _), _ = eqn.params['dimension_numbers']
      lhs = eqn.invars[0].aval.shape
      total += math.prod(out) * math.prod(lhs[i] for i in contract)
    for param in eqn.params.values():
      for sub in param if isinstance(param, (list, tuple)) else [param]:
        if hasattr(sub, 'eqns'):
          total += jaxpr_macs(sub)
        elif hasattr(sub, 'jaxpr') and hasattr(sub.jaxpr, 'eqns'):
          total += jaxpr_macs(sub.jaxpr)
  return total


class CostModelTest(parameterized.TestCase):

  @parameterized.named_parameters((name, name) for name in ANCHORS)
  def test_anchors(self, name):
    costs = CostModel(models.get_model(name))
    for widths, macs, params in ANCHORS[name]:
      c = (costs.space.full() if widths == 'full'
           else np.full(costs.space.num_groups, widths))
      self.assertEqual(costs.macs(c), macs)
      self.assertEqual(costs.params(c), params)

  @parameterized.named_parameters((name, name) for name in models.MODELS)
  def test_equals_walk_over_compact_jaxpr(self, name):
    supernet = models.get_model(name)
    costs = CostModel(supernet)
    space = supernet.space
    rng = np.random.default_rng(0)
    widths = [space.smallest(), *space.sample(rng, 3)]
    batch_macs, batch_params = costs.macs(widths), costs.params(widths)
    for i, c in enumerate(widths):
      compact = models.compact_like(supernet, c)
      x = jax.ShapeDtypeStruct(compact.dummy_input(1).shape, np.float32)
      variables = jax.eval_shape(
          functools.partial(compact.init, train=False), jax.random.key(0), x)
      with ops.accelerator_ops():  # XLA's convolutions, one form per op
        jaxpr = jax.make_jaxpr(functools.partial(compact.apply,
                                                 train=False))(variables, x)
      self.assertEqual(costs.macs(c), jaxpr_macs(jaxpr.jaxpr), c)
      self.assertEqual(costs.params(c), sum(
          math.prod(v.shape) for v in jax.tree.leaves(variables['params'])))
      self.assertEqual(batch_macs[i], costs.macs(c))
      self.assertEqual(batch_params[i], costs.params(c))

  def test_resolution_scales_spatial_layers(self):
    c = models.get_space('resnet20_cifar').full()
    at32 = CostModel(models.get_model('resnet20_cifar')).macs(c)
    at64 = CostModel(models.get_model('resnet20_cifar', resolution=64)).macs(c)
    fc = 64 * 10  # the classifier does not grow with the image
    self.assertEqual(at64 - fc, 4 * (at32 - fc))

  def test_rejects_bad_widths(self):
    costs = CostModel(models.get_model('cbm_resnet'))
    with self.assertRaisesRegex(ValueError, "'ch3' has width 5.*\\[1, 4\\]"):
      costs.macs([4, 4, 4, 5, 4, 4, 4])


if __name__ == '__main__':
  absltest.main()
