"""Optimizer from config: schedules, weight-decay mask, label smoothing."""

from absl.testing import absltest
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax

from bcnet_jax.learning import optim
from bcnet_jax.learning import steps


def config(**changes):
  c = ml_collections.ConfigDict({
      'name': 'sgd', 'learning_rate': 0.1, 'momentum': 0.9, 'nesterov': True,
      'weight_decay': 5e-4, 'schedule': 'cosine', 'warmup_steps': 10,
      'step_milestones': [50, 80], 'step_factor': 0.1})
  c.update(changes)
  return c


class OptimTest(absltest.TestCase):

  def test_cosine_with_warmup(self):
    schedule = optim.create_schedule(config(), 110)
    np.testing.assert_allclose(
        [schedule(0), schedule(5), schedule(10), schedule(60), schedule(110)],
        [0.0, 0.05, 0.1, 0.05, 0.0], atol=1e-7)

  def test_step_schedule(self):
    schedule = optim.create_schedule(config(schedule='step'), 100)
    np.testing.assert_allclose(
        [schedule(10), schedule(49), schedule(50), schedule(80)],
        [0.1, 0.1, 0.01, 0.001], rtol=1e-6)

  def test_bad_config(self):
    with self.assertRaisesRegex(ValueError, "schedule must be one of"):
      optim.create_schedule(config(schedule='linear'), 100)
    with self.assertRaisesRegex(ValueError, 'warmup_steps must be in'):
      optim.create_schedule(config(warmup_steps=100), 100)
    with self.assertRaisesRegex(ValueError, "optim.name must be 'sgd'"):
      optim.create_optimizer(config(name='adam'), 100)

  def test_weight_decay_only_on_kernels(self):
    params = {'conv': {'kernel': jnp.ones(3)},
              'bn': {'scale': jnp.ones(3), 'bias': jnp.ones(3)},
              'classifier': {'kernel': jnp.ones(3), 'bias': jnp.ones(3)}}
    tx, _ = optim.create_optimizer(
        config(warmup_steps=0, momentum=0.0, nesterov=False), 100)
    zeros = {k: {n: jnp.zeros(3) for n in v} for k, v in params.items()}
    updates, _ = tx.update(zeros, tx.init(params), params)
    self.assertTrue(np.all(updates['conv']['kernel'] < 0))
    self.assertTrue(np.all(updates['classifier']['kernel'] < 0))
    for k, n in (('bn', 'scale'), ('bn', 'bias'), ('classifier', 'bias')):
      np.testing.assert_array_equal(updates[k][n], 0.0)

  def test_label_smoothing(self):
    logits = jnp.array([[2.0, 0.0, -1.0]])
    labels = jnp.array([0])
    want = optax.softmax_cross_entropy(logits, jnp.array([[0.9, 0.05, 0.05]]))
    np.testing.assert_allclose(steps.cross_entropy(logits, labels, 0.15),
                               want[0], rtol=1e-6)


if __name__ == '__main__':
  absltest.main()
