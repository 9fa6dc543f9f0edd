"""Every platform form of an op computes what its default form does; the
lowering for a platform keeps that platform's forms and no other's."""

import functools

from absl.testing import absltest
from absl.testing import parameterized
import jax
import jax.numpy as jnp
import numpy as np

from bcnet_jax import models
from bcnet_jax.models import layers
from bcnet_jax.models import ops
from bcnet_jax.retrain import export
from bcnet_jax.space import paths
from bcnet_jax.space import search_space as space_lib

SPACE = space_lib.SearchSpace.build('toy', [('a', 12), ('b', 20)], bins=4)
CONV_TABLES = {'CONV': ops.CONV, 'CONV_1X1': ops.CONV_1X1,
               'DEPTHWISE': ops.DEPTHWISE}
# Every (table, platform) form: a new form is tested by being listed.
FORMS = [(name, platform) for name, table in CONV_TABLES.items()
         for platform in table]


def conv_case(table: str, strides: int, size: int, c_in: int, c_out: int):
  """(x, kernel) for a conv of `table`'s kind."""
  k = {'CONV': 3, 'CONV_1X1': 1, 'DEPTHWISE': 5}[table]
  x = jax.random.normal(jax.random.key(2), (2, size, size, c_in))
  kernel = jax.random.normal(jax.random.key(3), (
      k, k, 1 if table == 'DEPTHWISE' else c_in,
      c_in if table == 'DEPTHWISE' else c_out))
  return x, kernel


def defaults(table: str):
  return {'CONV': ops.conv_native, 'CONV_1X1': ops.conv_native,
          'DEPTHWISE': ops._depthwise_native}[table]


class FormsTest(parameterized.TestCase):

  @parameterized.product(form=FORMS, strided=[(1, 7), (2, 8)],
                         channels=[(5, 7), (17, 34), (33, 20)])
  def test_form_equals_default_with_gradients(self, form, strided, channels):
    table, platform = form
    strides, size = strided
    x, kernel = conv_case(table, strides, size, *channels)

    def grads(conv):
      def f(x, kernel):
        y = conv(x, kernel, strides)
        return jnp.sum(jnp.sin(y)), y
      return jax.grad(f, argnums=(0, 1), has_aux=True)(x, kernel)

    (dx, dk), y = grads(CONV_TABLES[table][platform])
    (want_dx, want_dk), want_y = grads(defaults(table))
    for got, want in ((y, want_y), (dx, want_dx), (dk, want_dk)):
      np.testing.assert_allclose(got, want, rtol=1e-5,
                                 atol=1e-5 * np.abs(want).max())

  @parameterized.parameters(*[(p,) for p in ops.MATERIALIZED])
  def test_materialized_ids_are_the_ids(self, platform):
    ids = paths.pair(SPACE, np.array([2, 3])).ids()
    got = ops.MATERIALIZED[platform](ids)
    for name in ids:
      np.testing.assert_array_equal(got[name], ids[name])

  @parameterized.parameters(*[(p,) for p in ops.MAP_PATHS])
  def test_mapped_paths_equal_vmapped_and_skip_padding(self, platform):
    valid = jnp.array([True, True, False])
    values = jnp.arange(6.0).reshape(3, 2)
    fn = lambda p: {'sum': jnp.sum(p[1]) + 1}
    got = ops.MAP_PATHS[platform](fn, (valid, values))
    want = jax.vmap(fn)((valid, values))
    np.testing.assert_array_equal(got['sum'][:2], want['sum'][:2])
    self.assertEqual(float(got['sum'][2]), 0.0)  # skipped: not fn's 10


class ChoiceTest(absltest.TestCase):

  def hlo(self, *, accelerator: bool) -> str:
    x, kernel = conv_case('CONV_1X1', 1, 8, 12, 16)
    f = jax.jit(functools.partial(ops.conv, strides=1))
    if accelerator:
      with ops.accelerator_ops():
        return f.lower(x, kernel).as_text()
    return f.lower(x, kernel).as_text()

  def test_the_cpu_takes_its_forms_and_accelerator_ops_the_native(self):
    on_cpu = self.hlo(accelerator=False)
    self.assertIn('dot_general', on_cpu)  # the einsum form
    self.assertNotIn('convolution', on_cpu)
    native = self.hlo(accelerator=True)
    self.assertIn('convolution', native)
    self.assertNotIn('dot_general', native)

  def test_the_export_for_cuda_holds_no_cpu_form(self):
    model = models.get_model('resnet20_cifar', widths=[3] * 12)
    variables = model.init(jax.random.key(0), model.dummy_input(),
                           train=False)
    kernels = [k for k in jax.tree_util.tree_flatten_with_path(
        variables['params'])[0] if k[1].ndim == 4]

    def text(platform):
      return export.exported_inference(model, variables, (platform,)
                                       ).mlir_module()

    cuda, cpu = text('cuda'), text('cpu')
    # Native: one convolution per conv kernel, no padded channels, no dots
    # but the classifier's; the CPU's forms: einsum 1x1 convs, padding.
    self.assertEqual(cuda.count('stablehlo.convolution'), len(kernels))
    self.assertEqual(cuda.count('stablehlo.dot_general'), 1)
    self.assertNotIn('stablehlo.pad', cuda)
    self.assertGreater(cpu.count('stablehlo.dot_general'), 1)
    self.assertIn('stablehlo.pad', cpu)


class TypedPathsTest(absltest.TestCase):

  def setUp(self):
    super().setUp()
    self.model = models.get_model('resnet20_cifar')
    self.x = self.model.dummy_input()

  def test_ids_without_their_kind_are_an_error(self):
    ids = paths.pair(self.model.space, self.model.space.full()).ids()
    with self.assertRaisesRegex(TypeError, 'paths.left/right/pair'):
      self.model.init(jax.random.key(0), self.x, ids, train=False)

  def test_paths_of_another_space_are_an_error(self):
    other = models.get_space('resnet20_cifar', bins=10)
    with self.assertRaisesRegex(ValueError, 'not of this model'):
      self.model.init(jax.random.key(0), self.x,
                      paths.pair(other, other.full()), train=False)

  def test_a_supernet_needs_paths_and_a_compact_model_none(self):
    with self.assertRaisesRegex(ValueError, 'takes paths'):
      self.model.init(jax.random.key(0), self.x, train=False)
    compact = models.compact_like(self.model, self.model.space.full())
    with self.assertRaisesRegex(ValueError, 'takes none'):
      compact.init(jax.random.key(0), self.x,
                   paths.left(self.model.space, self.model.space.full()),
                   train=False)

  def test_pairs_mask_kernels_to_blocks(self):
    """pair(c): output channels of path 1 see only path-1 inputs."""
    pair = paths.pair(SPACE, np.array([2, 3]))
    ctx = layers.Widths(SPACE, None, pair, pair.ids())
    conv = layers.Conv('a', 'b', kernel_size=3)
    x = jnp.zeros((1, 4, 4, 15)).at[..., :6].set(1.0)  # path 0 of 'a' only
    variables = conv.init(jax.random.key(0), x, ctx)
    y = np.asarray(conv.apply(variables, x, ctx))
    path1 = np.asarray(pair.ids()['b']) == 1
    self.assertTrue(np.all(y[..., path1] == 0))
    self.assertTrue(np.any(y[..., ~path1] != 0))


if __name__ == '__main__':
  absltest.main()
