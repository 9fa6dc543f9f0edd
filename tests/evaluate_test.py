"""BN recalibration pools statistics over all calibration examples."""

from absl.testing import absltest
from flax import traverse_util
import jax
import numpy as np

from bcnet_jax import models
from bcnet_jax.run import parallel
from bcnet_jax.space import paths
from bcnet_jax.supernet import evaluator as evaluator_lib
from tests import images


class RecalibrateTest(absltest.TestCase):

  def test_pooled_statistics_over_calibration_batches(self):
    model = models.get_model('resnet20_cifar')
    space = model.space
    variables = model.init(jax.random.key(0), model.dummy_input(1),
                           paths.pair(space, space.full()), train=False)
    params, stats = variables['params'], variables['batch_stats']
    c = space.sample(np.random.default_rng(0))
    evaluator = evaluator_lib.Evaluator(model, parallel.create_mesh(), 1)
    right = evaluator_lib.SIDES.index('right')

    def recalibrated(*batches):
      k = evaluator.call_size
      candidates = {'widths': np.repeat(c[None], k, axis=0),
                    'valid': np.arange(k) < 1}
      pooled = evaluator.recalibrate(params, stats, candidates,
                                     [{'image': b} for b in batches])
      return traverse_util.flatten_dict(jax.tree.map(
          lambda v: np.asarray(v)[0, right],
          evaluator_lib.pooled_stats(pooled)))

    a, b = images.mnist_batch(8)['image'], images.mnist_batch(8, offset=8)[
        'image']
    got = recalibrated(a, b)
    # The stem BN sees the image through one conv only, so its recalibrated
    # statistics are those of one pass over both batches together...
    union = recalibrated(np.concatenate([a, b]))
    for leaf in ('mean', 'var'):
      np.testing.assert_allclose(got[('stem_bn', leaf)],
                                 union[('stem_bn', leaf)], rtol=1e-4,
                                 atol=1e-6)
    # ... which is not the mean of the per-batch variances.
    per_batch_var = np.mean([recalibrated(x)[('stem_bn', 'var')]
                             for x in (a, b)], axis=0)
    on = np.asarray(paths.right(space, c).ids()['stage1']) >= 0
    self.assertGreater(np.max(np.abs(got[('stem_bn', 'var')] -
                                     per_batch_var)[on]), 1e-3)
    # Channels off the path keep their statistics (init: var 1).
    key = ('stage3_block3_bn2', 'var')
    off = np.asarray(paths.right(space, c).ids()['stage3']) < 0
    self.assertTrue(off.any())
    np.testing.assert_allclose(np.asarray(got[key])[off], 1.0, rtol=1e-5)
    self.assertFalse(np.allclose(np.asarray(got[key])[~off], 1.0))


if __name__ == '__main__':
  absltest.main()
