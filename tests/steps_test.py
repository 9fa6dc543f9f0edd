"""The supernet step: fused == reference on every model family, one trace,
the loss-record pool, bfloat16 compute."""

import functools

from absl.testing import absltest
from absl.testing import parameterized
import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax

from bcnet_jax import models
from bcnet_jax.learning import state as compact_lib
from bcnet_jax.learning import steps as learning_steps
from bcnet_jax.models import efficientnet
from bcnet_jax.models import mobilenet_v2
from bcnet_jax.models import ops
from bcnet_jax.models import resnet
from bcnet_jax.models import slicing
from bcnet_jax.space import sampling
from bcnet_jax.space import search_space as space_lib
from bcnet_jax.supernet import loss_pool
from bcnet_jax.supernet import state as state_lib
from bcnet_jax.supernet import steps
from tests import images
from tests import models_test


def shallow(module, groups, derived=(), **kwargs):
  """A shallow member of a deep family: its first stages, every block kind.

  The float64 fused and reference steps of the full MobileNetV2, ResNet-50
  and EfficientNet-B0 take 2 to 9.5 minutes each to compile here, and the
  full MobileNetV2's overflowed XLA's compiler stack; the blocks, and so the
  masking under test, are the same in these.
  """
  space = space_lib.SearchSpace.build(f'shallow_{module.__name__}', groups,
                                      derived)
  return module(space=space, resolution=32, **kwargs)


# Every model family (CBM MobileNet is built from MobileNetV2's blocks). The
# shallow members keep an unexpanded block, expanded ones, a residual add, a
# strided block, a projection shortcut, a 5x5 depthwise conv and
# squeeze-and-excitation with its derived dims.
MOBILENET_STAGES = ((1, 16, 1), (6, 24, 2), (6, 32, 1))
RESNET50_STAGES = ((16, 2, 1), (32, 2, 2))
EFFICIENTNET_STAGES = ((1, 3, 1, 16, 1), (6, 5, 2, 24, 2))
FAMILIES = {
    'resnet_cifar': lambda: models.get_model('resnet20_cifar'),
    'vgg': lambda: models.get_model('vgg16_cifar'),
    'cbm_resnet': lambda: models.get_model('cbm_resnet'),
    'mobilenet_v2': lambda: shallow(
        mobilenet_v2.MobileNetV2, mobilenet_v2.groups(MOBILENET_STAGES),
        stages=MOBILENET_STAGES, dropout_rate=0.0),
    'resnet50': lambda: shallow(
        resnet.ResNet50, resnet.groups(RESNET50_STAGES),
        stages=RESNET50_STAGES),
    'efficientnet': lambda: shallow(
        efficientnet.EfficientNetB0,
        efficientnet.groups(EFFICIENTNET_STAGES),
        efficientnet.derived_dims(EFFICIENTNET_STAGES),
        stages=EFFICIENTNET_STAGES, dropout_rate=0.0, drop_path_rate=0.0),
}


def float64_state(model, tx):
  """A train state with random float64 variables (see models_test)."""
  shapes = jax.eval_shape(functools.partial(
      state_lib.supernet_state, model, tx), jax.random.key(0))
  variables = models_test.random_variables(
      {'params': shapes.params, 'batch_stats': shapes.batch_stats})
  state = state_lib.supernet_state(model, tx, jax.random.key(0))
  return state.replace(params=variables['params'],
                       batch_stats=variables['batch_stats'],
                       opt_state=tx.init(variables['params']))


def float64_batch():
  batch = jax.tree.map(jnp.asarray, images.mnist_batch(4))
  batch['image'] = batch['image'].astype(jnp.float64)
  return batch


# Every memory mode (pass_by_pass) of both implementations and the ops of
# both kinds of platform (ops.py) meet on some family: (fused's, reference's
# pass_by_pass, accelerator ops). (Native float64 convolutions run slowly
# here: the small families take them.)
VARIANTS = {
    'resnet_cifar': (False, True, False),
    'vgg': (True, False, False),
    'cbm_resnet': (True, False, True),
    'mobilenet_v2': (False, True, True),
    'resnet50': (True, False, False),
    'efficientnet': (False, True, False),
}


class FusedEqualsReferenceTest(parameterized.TestCase):

  def setUp(self):
    super().setUp()
    self.enter_context(jax.enable_x64(True))

  @parameterized.named_parameters((name, name) for name in FAMILIES)
  def test_same_losses_gradients_and_batch_stats(self, family):
    # float64 and batch 4 for the reasons given in models_test.
    fused_by_pass, reference_by_pass, accelerator = VARIANTS[family]
    if accelerator:
      self.enter_context(ops.accelerator_ops())
    model = FAMILIES[family]()
    tx = optax.sgd(1.0)  # new params = params - gradients
    state, batch = float64_state(model, tx), float64_batch()
    c = model.space.sample(np.random.default_rng(0))
    out = {}
    for implementation, pass_by_pass in (('fused', fused_by_pass),
                                         ('reference', reference_by_pass)):
      step = jax.jit(functools.partial(steps.supernet_step, model=model,
                                       tx=tx,
                                       implementation=implementation,
                                       pass_by_pass=pass_by_pass,
                                       dtype=jnp.float64))
      out[implementation] = step(state, batch, c)
    (fused, fused_metrics), (ref, ref_metrics) = out['fused'], out['reference']
    tol = {'rtol': 1e-9, 'atol': 1e-11}
    np.testing.assert_allclose(fused_metrics['path_losses'],
                               ref_metrics['path_losses'], **tol)
    np.testing.assert_allclose(fused_metrics['objective'],
                               ref_metrics['objective'], **tol)
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, **tol),
                 fused.batch_stats, ref.batch_stats)
    # = params - gradients; measured: 3e-13 relative at most.
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, **tol),
                 fused.params, ref.params)
    # The gradients are not trivially zero, and the statistics did move.
    self.assertGreater(float(fused_metrics['grad_norm']), 1e-3)
    moved = jax.tree.map(lambda a, b: np.any(np.asarray(a) != b),
                         fused.batch_stats, state.batch_stats)
    self.assertTrue(all(jax.tree.leaves(moved)))


class CompactStepTest(absltest.TestCase):

  def test_compact_step_trains_the_left_path_of_a_ua_step(self):
    # The same step on the compact model of c, started from L(c)'s slice of
    # the supernet, gives ua's loss and L(c)'s slice of its updated state.
    with jax.enable_x64(True):
      supernet = models.get_model('resnet20_cifar')
      c = supernet.space.sample(np.random.default_rng(5))
      compact = models.compact_like(supernet, c)
      tx = optax.sgd(1.0)
      state, batch = float64_state(supernet, tx), float64_batch()
      new, metrics = jax.jit(functools.partial(
          steps.supernet_step, model=supernet, tx=tx, objective='ua',
          dtype=jnp.float64))(
              state, batch, c)

      def left(s):
        return slicing.slice_params(
            supernet, {'params': s.params, 'batch_stats': s.batch_stats}, c,
            'left')

      start = left(state)
      compact_state = compact_lib.compact_state(compact, tx,
                                              jax.random.key(0))
      self.assertIsNone(compact_state.pool)
      compact_state = compact_state.replace(
          params=start['params'], batch_stats=start['batch_stats'],
          opt_state=tx.init(start['params']))
      compact_new, compact_metrics = jax.jit(functools.partial(
          learning_steps.compact_step, model=compact, tx=tx,
          dtype=jnp.float64))(
              compact_state, batch)
    np.testing.assert_allclose(compact_metrics['path_losses'],
                               metrics['path_losses'], rtol=1e-12)
    jax.tree.map(  # measured: 4e-15
        lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-9, atol=1e-12),
        {'params': compact_new.params,
         'batch_stats': compact_new.batch_stats}, left(new))
    with self.assertRaisesRegex(ValueError, 'trains with compact_step'):
      steps.supernet_step(compact_state, batch, c, model=compact, tx=tx)
    with self.assertRaisesRegex(ValueError, 'trains with supernet_step'):
      learning_steps.compact_step(state, batch, model=supernet, tx=tx)


class TrainStepTest(parameterized.TestCase):

  @classmethod
  def setUpClass(cls):
    super().setUpClass()
    cls.model = models.get_model('resnet20_cifar')
    cls.tx = optax.sgd(0.05, 0.9)

    def train_step(*args, **kwargs):
      return steps.supernet_step(*args, **kwargs)

    # Every width vector runs the same program: a second trace raises.
    cls.jitted = [jax.jit(functools.partial(
        chex.assert_max_traces(train_step, n=1), model=cls.model, tx=cls.tx))]
    cls.batch = jax.tree.map(jnp.asarray, images.mnist_batch(8))

  def step(self, *args):
    return self.jitted[0](*args)

  def new_state(self, pool_size=100):
    return state_lib.supernet_state(self.model, self.tx, jax.random.key(0),
                                    pool_size=pool_size)

  def test_one_program_for_all_widths(self):
    state = self.new_state()
    for step in range(50):
      c = sampling.widths_for_step(self.model.space, seed=1, step=step)
      state, metrics = self.step(state, self.batch, c)  # one trace
    self.assertTrue(np.isfinite(metrics['loss']))
    pool = jax.device_get(state.pool)
    self.assertTrue(np.all(np.diff(pool.losses[np.isfinite(pool.losses)])
                           >= 0))
    self.assertEqual(np.isfinite(pool.losses).sum(), 100)  # 50 steps x 2

  def test_step_offers_c_and_complement_with_bilateral_losses(self):
    state = self.new_state()  # the pool size of the one traced program
    c = sampling.widths_for_step(self.model.space, seed=2, step=0)
    new, metrics = self.step(state, self.batch, c)
    l_c, r_c, l_cbar, r_cbar = np.asarray(metrics['path_losses'])
    want = sorted([((l_c + r_c) / 2, tuple(c)),
                   ((l_cbar + r_cbar) / 2, tuple(self.model.space.complement(
                       c)))])
    pool = jax.device_get(new.pool)
    np.testing.assert_allclose(pool.losses[:2], [w[0] for w in want],
                               rtol=1e-6)
    self.assertEqual([tuple(w) for w in pool.widths[:2]],
                     [w[1] for w in want])
    self.assertTrue(np.all(np.isinf(pool.losses[2:])))
    np.testing.assert_allclose(metrics['loss'], np.mean([l_c, r_c, l_cbar,
                                                          r_cbar]), rtol=1e-6)
    np.testing.assert_allclose(metrics['objective'],
                               (l_c + r_c + l_cbar + r_cbar) / 2, rtol=1e-6)

  @parameterized.named_parameters(
      ('ua', 'ua', True, 1), ('no_complement', 'bcnet', False, 2))
  def test_other_objectives(self, objective, complementary, paths_per_step):
    step = jax.jit(functools.partial(
        steps.supernet_step, model=self.model, tx=self.tx,
        objective=objective,
        complementary=complementary))
    c = sampling.widths_for_step(self.model.space, seed=3, step=0)
    new, metrics = step(self.new_state(pool_size=3), self.batch, c)
    losses = np.asarray(metrics['path_losses'])
    self.assertLen(losses, paths_per_step)
    weight = 1.0 if objective == 'ua' else 0.5
    np.testing.assert_allclose(metrics['objective'], weight * losses.sum(),
                               rtol=1e-6)
    pool = jax.device_get(new.pool)
    self.assertEqual(np.isfinite(pool.losses).sum(), 1)
    np.testing.assert_array_equal(pool.widths[0], c)

  def test_bfloat16_compute_keeps_float32_state(self):
    step = jax.jit(functools.partial(steps.supernet_step, model=self.model,
                                     tx=self.tx, dtype=jnp.bfloat16))
    c = sampling.widths_for_step(self.model.space, seed=4, step=0)
    state = self.new_state()
    new, metrics = step(state, self.batch, c)
    _, metrics32 = self.step(self.new_state(), self.batch, c)
    for leaf in jax.tree.leaves((new.params, new.batch_stats)):
      self.assertEqual(leaf.dtype, jnp.float32)
    np.testing.assert_allclose(metrics['loss'], metrics32['loss'], rtol=0.05)

  def test_bad_objective_and_implementation(self):
    with self.assertRaisesRegex(ValueError, "objective must be one of"):
      steps.passes(self.model.space, self.model.space.full(), objective='x',
                   complementary=True, implementation='fused')
    with self.assertRaisesRegex(ValueError, "implementation must be one of"):
      steps.passes(self.model.space, self.model.space.full(),
                   objective='bcnet', complementary=True,
                   implementation='x')

  def test_auto_is_each_platforms_measured_default(self):
    # Measured on the CPU (experiments/step_speed.md): fused.
    self.assertEqual(steps.implementation_for('auto', 'cpu'), 'fused')
    self.assertEqual(steps.implementation_for('reference', 'cpu'),
                     'reference')
    with self.assertRaisesRegex(ValueError, "'auto' or one of"):
      steps.implementation_for('fast', 'cpu')


class PassByPassMemoryTest(absltest.TestCase):

  def test_pass_by_pass_peaks_below_the_joint_backward(self):
    # Compiled only: XLA's buffer assignment gives each program's temporary
    # memory. Pass by pass holds one pass's activations, not both.
    model = models.get_model('resnet20_cifar')
    tx = optax.sgd(0.1)
    state = jax.eval_shape(functools.partial(
        state_lib.supernet_state, model, tx), jax.random.key(0))
    batch = {'image': jax.ShapeDtypeStruct((64, 32, 32, 3), jnp.float32),
             'label': jax.ShapeDtypeStruct((64,), jnp.int32)}
    widths = jax.ShapeDtypeStruct((model.space.num_groups,), jnp.int32)

    def temp_bytes(pass_by_pass: bool) -> int:
      step = jax.jit(functools.partial(steps.supernet_step, model=model,
                                       tx=tx, pass_by_pass=pass_by_pass))
      compiled = step.lower(state, batch, widths).compile()
      return compiled.memory_analysis().temp_size_in_bytes

    joint, by_pass = temp_bytes(False), temp_bytes(True)
    self.assertLess(by_pass, 0.8 * joint, (by_pass, joint))


class LossPoolTest(absltest.TestCase):

  def test_keeps_lowest_sorted_and_drops_non_finite(self):
    pool = loss_pool.create(3, 2)
    pool = loss_pool.offer(pool, jnp.array([[1, 1], [2, 2]]),
                           jnp.array([0.5, jnp.nan]))
    pool = loss_pool.offer(pool, jnp.array([[3, 3], [4, 4], [5, 5]]),
                           jnp.array([0.7, 0.1, 0.9]))
    np.testing.assert_allclose(pool.losses, [0.1, 0.5, 0.7])
    np.testing.assert_array_equal(pool.widths, [[4, 4], [1, 1], [3, 3]])
    with self.assertRaisesRegex(ValueError, 'pool size'):
      loss_pool.create(0, 2)


if __name__ == '__main__':
  absltest.main()
