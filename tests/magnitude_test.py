"""The magnitude baseline: the widths a global BatchNorm |γ| ranking keeps."""

from absl.testing import absltest
from flax import traverse_util
import jax
import jax.numpy as jnp
import numpy as np

from bcnet_jax import models
from bcnet_jax.models import layout
from bcnet_jax.searching import magnitude
from bcnet_jax.space import paths
from bcnet_jax.space.costs import CostModel
from tests import traced_test


def supernet_params(model):
  if hasattr(model, 'structure'):
    return model.init(jax.random.key(0))['params']
  full = paths.pair(model.space, jnp.asarray(model.space.full()))
  return model.init(jax.random.key(0), model.dummy_input(1), full,
                    train=False)['params']


def with_scales(model, params, scale_of_group):
  """params with every BatchNorm scale of group g set to scale_of_group(g)."""
  flat = traverse_util.flatten_dict(dict(params))
  names = [d.name for d in model.space.dims]
  for layer in layout.layer_table(model):
    if layer.kind == 'bn':
      key = layer.path + ('scale',)
      flat[key] = np.full(flat[key].shape,
                          scale_of_group(names.index(layer.out_dim)),
                          np.float32)
  return traverse_util.unflatten_dict(flat)


class MagnitudeTest(absltest.TestCase):

  def test_the_important_group_keeps_its_width_within_budget(self):
    model = models.get_model('resnet20_cifar')
    costs = CostModel(model)
    space = model.space
    budget = 0.5 * costs.macs(space.full())
    important = space.groups.index('stage2_block1_mid')
    params = with_scales(model, supernet_params(model),
                         lambda g: 5.0 if g == important else 0.1 + 0.01 * g)
    c = magnitude.widths_within(model, params, costs.macs_cost(), budget)
    self.assertLessEqual(costs.macs(c), budget)
    self.assertEqual(c[important], space.bins)
    # One bin more in any group past the kept channels breaks the budget,
    # or that group is already full: the ranking spent the budget.
    self.assertTrue(any(
        costs.macs(np.where(np.arange(len(c)) == g, c + 1, c)) > budget
        for g in range(len(c)) if c[g] < space.bins))

  def test_ranking_follows_gamma_across_groups(self):
    model = models.get_model('resnet20_cifar')
    costs = CostModel(model)
    # The larger g's |γ|, the more of its channels are kept.
    params = with_scales(model, supernet_params(model),
                         lambda g: float(g + 1))
    c = magnitude.widths_within(model, params, costs.macs_cost(),
                                0.4 * costs.macs(model.space.full()))
    self.assertEqual(c[-1], model.space.bins)
    self.assertEqual(c[0], model.space.min_bins)

  def test_traced_models_rank_their_batchnorm_scales(self):
    model = traced_test.trace('ResNet20Twin')
    params = supernet_params(model)
    scales = magnitude.bn_scales(model, params)
    self.assertCountEqual(scales, range(model.space.num_groups))
    for g, v in scales.items():
      self.assertEqual(v.shape, (model.space.dims[g].nominal,))
    costs = CostModel(model)
    budget = 0.5 * costs.macs(model.space.full())
    self.assertLessEqual(
        costs.macs(magnitude.widths_within(model, params,
                                           costs.macs_cost(), budget)),
        budget)


if __name__ == '__main__':
  absltest.main()
