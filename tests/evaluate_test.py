"""BN recalibration pools statistics over all calibration examples."""

from absl.testing import absltest
from flax import traverse_util
import jax
import jax.numpy as jnp
import numpy as np

from bcnet_jax import evaluate
from bcnet_jax import models
from bcnet_jax import paths
from tests import images


class RecalibrateTest(absltest.TestCase):

  def test_pooled_statistics_over_calibration_batches(self):
    model = models.get_model('resnet20_cifar')
    space = model.space
    variables = model.init(jax.random.key(0), model.dummy_input(1),
                           paths.pair(space, space.full()), train=False)
    params, stats = variables['params'], variables['batch_stats']
    c = jnp.asarray(space.sample(np.random.default_rng(0)))
    a, b = images.mnist_batch(8), images.mnist_batch(8, offset=8)
    got = traverse_util.flatten_dict(evaluate.recalibrate(
        model, params, stats, c, 'right',
        [{'image': a['image']}, {'image': b['image']}]))

    def moments(x):
      return evaluate.path_moments(params, stats, x, c, model=model,
                                   side='right')

    # The stem BN sees the image through one conv only, so its recalibrated
    # statistics are those of one pass over both batches together...
    union = moments(np.concatenate([a['image'], b['image']]))
    mean, sq = union[('stem_bn', 'mean')], union[('stem_bn', 'var')]
    np.testing.assert_allclose(got[('stem_bn', 'mean')], mean, rtol=1e-4,
                               atol=1e-6)
    np.testing.assert_allclose(got[('stem_bn', 'var')], sq - mean**2,
                               rtol=1e-4, atol=1e-6)
    # ... which is not the mean of the per-batch variances.
    per_batch_var = np.mean([m[('stem_bn', 'var')] - m[('stem_bn', 'mean')]**2
                             for m in (moments(a['image']),
                                       moments(b['image']))], axis=0)
    on = np.asarray(paths.right(space, c)['stage1']) >= 0
    self.assertGreater(np.max(np.abs(got[('stem_bn', 'var')] -
                                     per_batch_var)[on]), 1e-3)
    # Channels off the path keep their statistics (init: var 1).
    key = ('stage3_block3_bn2', 'var')
    off = np.asarray(paths.right(space, c)['stage3']) < 0
    self.assertTrue(off.any())
    np.testing.assert_allclose(np.asarray(got[key])[off], 1.0, rtol=1e-5)
    self.assertFalse(np.allclose(np.asarray(got[key])[~off], 1.0))


if __name__ == '__main__':
  absltest.main()
