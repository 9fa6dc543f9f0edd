"""Every lowering of a layer computes what XLA's native convolution does."""

import functools

from absl.testing import absltest
from absl.testing import parameterized
import jax
import jax.numpy as jnp
import numpy as np

from bcnet_jax import paths
from bcnet_jax import space as space_lib
from bcnet_jax.models import layers

SPACE = space_lib.SearchSpace.build('toy', [('a', 12), ('b', 20)], bins=4)


def run_conv(lowering, x, ids, **conv):
  ctx = layers.Widths(SPACE, None, ids, lowering)
  module = layers.Conv(**conv)
  variables = module.init(jax.random.key(0), x, ctx)
  variables = jax.tree.map(
      lambda v: jax.random.normal(jax.random.key(1), v.shape), variables)
  return module.apply(variables, x, ctx)


class LoweringTest(parameterized.TestCase):

  @parameterized.product(kernel_size=[3, 5], strides=[1, 2], size=[7, 8],
                         helper=['left', 'pair'])
  def test_depthwise_shifted_equals_native(self, kernel_size, strides, size,
                                           helper):
    ids = getattr(paths, helper)(SPACE, np.array([2, 3]))
    x = jax.random.normal(jax.random.key(2), (2, size, size, 15))
    x = x * (ids['a'] >= 0)  # inactive channels arrive as zeros
    f = functools.partial(run_conv, x=x, ids=ids, in_dim='a', out_dim='a',
                          kernel_size=kernel_size, strides=strides,
                          depthwise=True)
    np.testing.assert_allclose(f('cpu'), f('native'), rtol=1e-5, atol=1e-5)

  @parameterized.product(strides=[1, 2], size=[7, 8], use_bias=[False, True])
  def test_1x1_einsum_equals_native(self, strides, size, use_bias):
    ids = paths.pair(SPACE, np.array([1, 3]))
    x = jax.random.normal(jax.random.key(3), (2, size, size, 15))
    f = functools.partial(run_conv, x=x, ids=ids, in_dim='a', out_dim='b',
                          kernel_size=1, strides=strides, use_bias=use_bias)
    native = f('native')
    out = (size - 1) // strides + 1
    self.assertEqual(native.shape, (2, out, out, 25))
    np.testing.assert_allclose(f('cpu'), native, rtol=1e-5, atol=1e-5)

  @parameterized.parameters((5, 7, 1), (9, 10, 1), (17, 34, 2), (33, 20, 1))
  def test_padded_3x3_equals_native_with_gradients(self, c_in, c_out,
                                                    strides):
    # Channels padded to 4s (from 8 up), the kernel gradient's outputs to 16s
    # below 32: values and both gradients as XLA's plain convolution.
    x = jax.random.normal(jax.random.key(4), (2, 7, 7, c_in))
    kernel = jax.random.normal(jax.random.key(5), (3, 3, c_in, c_out))
    probe = jax.random.normal(jax.random.key(6),
                              ((7 - 1) // strides + 1,) * 2 + (c_out,))

    def grads(conv):
      def f(x, kernel):
        y = conv(x, kernel, strides)
        return jnp.sum(y * probe), y
      return jax.grad(f, argnums=(0, 1), has_aux=True)(x, kernel)

    (cpu_dx, cpu_dk), cpu_y = grads(layers._conv_cpu)
    (dx, dk), y = grads(
        lambda x, k, s: layers._conv_native(x, k, s, groups=1))
    for got, want in ((cpu_y, y), (cpu_dx, dx), (cpu_dk, dk)):
      np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-4)

  def test_auto_is_cpu_lowering_on_cpu(self):
    ctx = layers.Widths(SPACE, None, None, 'auto')
    self.assertEqual(ctx.resolved_lowering(),
                     'cpu' if jax.default_backend() == 'cpu' else 'native')

  def test_masked_kernel_is_block_diagonal(self):
    """pair(c): output channels of path 1 see only path-1 inputs."""
    ids = paths.pair(SPACE, np.array([2, 3]))
    x = jnp.zeros((1, 4, 4, 15)).at[..., :6].set(1.0)  # path 0 of 'a' only
    y = run_conv('native', x, ids, in_dim='a', out_dim='b', kernel_size=3)
    path1 = np.asarray(ids['b']) == 1
    self.assertTrue(np.all(np.asarray(y)[..., path1] == 0))
    self.assertTrue(np.any(np.asarray(y)[..., ~path1] != 0))


if __name__ == '__main__':
  absltest.main()
