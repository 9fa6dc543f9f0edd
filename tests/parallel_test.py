"""Data parallelism over 8 fake CPU devices equals one device."""

import functools

from absl.testing import absltest
import jax
import numpy as np
import optax

from bcnet_jax import models
from bcnet_jax.models import ops
from bcnet_jax.run import parallel
from bcnet_jax.space import sampling
from bcnet_jax.supernet import state as state_lib
from bcnet_jax.supernet import steps
from tests import images


class DataParallelTest(absltest.TestCase):

  def run_steps(self, mesh, n_steps=3, **variant):
    model = models.get_model('resnet20_cifar')
    tx = optax.sgd(0.05, 0.9)
    state = parallel.create_state(functools.partial(
        state_lib.supernet_state, model, tx, jax.random.key(0)), mesh)
    step = parallel.jit_train_step(
        functools.partial(steps.supernet_step, model=model, tx=tx, **variant),
        mesh)
    losses = []
    for i in range(n_steps):
      batch = parallel.global_batch(images.mnist_batch(16, offset=16 * i),
                                    mesh)
      donated = jax.tree.leaves(state.params)[0]
      state, metrics = step(state, batch,
                            sampling.widths_for_step(model.space, 0, i))
      self.assertTrue(donated.is_deleted())  # the state was donated
      losses.append(np.asarray(metrics['path_losses']))
    return np.array(losses), jax.device_get(state)

  def test_eight_devices_equal_one(self):
    self.assertEqual(jax.device_count(), 8, 'conftest sets 8 CPU devices')
    losses1, state1 = self.run_steps(parallel.create_mesh(jax.devices()[:1]))
    # The other memory mode and ops on 8 devices: with two compiled steps,
    # 8 devices = 1, pass by pass = all passes, native = the CPU's ops (each
    # also checked alone: steps_test, ops_test; the default step runs on 8
    # devices in every training test).
    with ops.accelerator_ops():
      losses8, state8 = self.run_steps(parallel.create_mesh(),
                                       pass_by_pass=True)
    # Per-device BN statistics or gradients would move the losses by >1e-2.
    np.testing.assert_allclose(losses8, losses1, rtol=1e-5)
    # float32 sums in another order, through 3 momentum steps: up to ~1e-4
    # on weights of barely trained channels (those only small widths reach).
    jax.tree.map(
        lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-3, atol=1e-3),
        (state8.params, state8.batch_stats), (state1.params,
                                              state1.batch_stats))
    self.assertFalse(np.allclose(losses1[0], losses1[-1]))  # it trained

  def test_batch_must_divide_by_devices(self):
    mesh = parallel.create_mesh()
    with self.assertRaisesRegex(ValueError,
                                '12 examples does not divide by the 8 '
                                'devices; use a multiple of 8'):
      parallel.global_batch(images.mnist_batch(12), mesh)


if __name__ == '__main__':
  absltest.main()
