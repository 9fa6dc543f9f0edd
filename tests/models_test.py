"""Supernet mode equals the compact models cut by slice_params, every model.

For each registry model (ImageNet ones at 32x32, batch 2, real MNIST digits):
left(c) and right(c) (single paths, each in its N-channel window) and pair(c)
(kernels masked) supernet passes give the logits and updated BatchNorm
statistics of the compact models of their paths, in train and eval mode, and
one compiled supernet program serves every width and kind of paths.

The comparison runs in float64: masked and sliced convolutions sum the same
products in different orders, which in float32 alone moves deep logits by
~1e-6; in float64 any difference above rounding is a real one.
"""

import contextlib
import functools

from absl.testing import absltest
import chex
from flax import traverse_util
import jax
import jax.numpy as jnp
import numpy as np

from bcnet_jax import models
from bcnet_jax.models import layout
from bcnet_jax.models import ops
from bcnet_jax.models import slicing
from bcnet_jax.space import paths
from tests import images

BATCH, RESOLUTION = 4, 32
TOL = {'rtol': 1e-5, 'atol': 1e-6}
NO_DROPOUT = {
    'mobilenetv2': {'dropout_rate': 0.0},
    'mobilenetv2_cifar': {'dropout_rate': 0.0},
    'efficientnet_b0': {'dropout_rate': 0.0, 'drop_path_rate': 0.0},
}
HELPERS = {**paths.SIDES, 'pair': paths.pair}
# These run XLA's native convolutions (the GPU/TPU forms, ops.py), the
# others the CPU's. Native depthwise convolutions run 2-3x slower here;
# steps_test meets them (MobileNetV2 blocks) instead.
NATIVE = ('resnet56_cifar', 'vgg16_cifar', 'cbm_resnet')


def forward(model, variables, x, *ids):
  """Train-mode logits and BN statistics, and eval-mode logits, in one call."""
  (logits, _), updates = model.apply(variables, x, *ids, train=True,
                                     mutable=['batch_stats'])
  eval_logits, _ = model.apply(variables, x, *ids, train=False)
  return logits, updates['batch_stats'], eval_logits


def random_variables(shapes, seed: int = 0):
  """float64 variables of the given shapes, drawn with numpy.

  Kernels are He-normal; BN affine, biases and running statistics are random
  too (a fresh init has 1s and 0s there, which would hide a leaking bias).
  Cheaper than compiling each model's init, which costs up to 17 s here.
  """
  rng = np.random.default_rng(seed)
  out = {}
  for key, leaf in traverse_util.flatten_dict(shapes).items():
    shape = leaf.shape
    if key[-1] == 'kernel':
      v = rng.normal(0, np.sqrt(2 / np.prod(shape[:-1])), shape)
    elif key[-1] in ('scale', 'var'):
      v = rng.uniform(0.5, 1.5, shape)
    else:  # bias, mean
      v = rng.normal(0, 0.2, shape)
    out[key] = jnp.asarray(v, jnp.float64)
  return traverse_util.unflatten_dict(out)


class Harness:
  """One model's supernet, variables, images and jitted forward (one trace)."""

  def __init__(self, name: str):
    self.model = models.get_model(
        name, resolution=RESOLUTION, **NO_DROPOUT.get(name, {}))
    self.ops = (ops.accelerator_ops if name in NATIVE
                else contextlib.nullcontext)
    self.space = self.model.space
    self.x = jnp.asarray(images.mnist_images(BATCH, RESOLUTION), jnp.float64)
    ids = paths.pair(self.space, self.space.full())
    self.variables = random_variables(jax.eval_shape(
        functools.partial(self.model.init, train=False),
        jax.random.key(0), self.x, ids))

    def supernet(variables, x, widths, helper: int):
      return jax.lax.switch(helper, [
          lambda v, x, w, h=h: forward(self.model, v, x, h(self.space, w))
          for h in HELPERS.values()], variables, x, widths)

    # One trace for every width vector and helper: a second raises. chex
    # counts by name and definition site: one name per model.
    supernet.__name__ = f'{name}_supernet'
    self._supernet = jax.jit(chex.assert_max_traces(supernet, n=1))

  def supernet(self, widths, helper: str):
    with self.ops():
      return self._supernet(self.variables, self.x, jnp.asarray(widths),
                            list(HELPERS).index(helper))

  @functools.lru_cache(maxsize=None)  # noqa: B019 (one test object)
  def _compact_fn(self, widths: tuple[int, ...]):
    return jax.jit(functools.partial(
        forward, models.compact_like(self.model, widths)))

  def compact(self, widths, side: str):
    widths = tuple(int(w) for w in widths)
    variables = slicing.slice_params(self.model, self.variables, widths, side)
    with self.ops():
      return self._compact_fn(widths)(variables, self.x)

  def width_vectors(self, n_random: int, seed: int = 0):
    """All-m, all-B and n_random uniform ones."""
    rng = np.random.default_rng(seed)
    return [self.space.smallest(), self.space.full(),
            *self.space.sample(rng, n_random)]


@functools.lru_cache(maxsize=None)
def harness(name: str) -> Harness:
  return Harness(name)


def _sliced_stats(h: Harness, stats, widths, side: str):
  return slicing.slice_params(h.model, {'batch_stats': stats}, widths,
                              side)['batch_stats']


class _ModelTests:
  """Tests of one model; concrete classes below set MODEL."""
  MODEL: str

  def setUp(self):
    super().setUp()
    self.enter_context(jax.enable_x64(True))

  def assert_path_equals(self, h, out, path: int, widths, side: str):
    logits, stats, eval_logits = out
    want_logits, want_stats, want_eval = h.compact(widths, side)
    np.testing.assert_allclose(logits[path], want_logits, **TOL)
    np.testing.assert_allclose(eval_logits[path], want_eval, **TOL)
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, **TOL),
                 _sliced_stats(h, stats, widths, side), want_stats)

  def test_supernet_equals_compact(self):
    h = harness(self.MODEL)
    # All-m, all-B, a random c and its complement (also uniformly random):
    # closed under complement, so pair(c) needs no extra compact model.
    m, full, drawn = h.width_vectors(1)
    for c in (m, full, drawn, h.space.complement(drawn)):
      cbar = h.space.complement(c)
      with self.subTest(widths=c.tolist()):
        for side in ('left', 'right'):
          out = h.supernet(c, side)
          self.assert_path_equals(h, out, 0, c, side)
          # Channels off the path keep their running statistics.
          ids = HELPERS[side](h.space, c)
          for path, old in traverse_util.flatten_dict(
              h.variables['batch_stats']).items():
            new = traverse_util.flatten_dict(out[1])[path]
            off = np.asarray(ids.ids()[_layer_dim(h, path[:-1])]) < 0
            np.testing.assert_array_equal(np.asarray(new)[off],
                                          np.asarray(old)[off])
        out = h.supernet(c, 'pair')
        self.assert_path_equals(h, out, 0, c, 'left')
        self.assert_path_equals(h, out, 1, cbar, 'right')

  def test_supernet_traces_once(self):
    h = harness(self.MODEL)  # shared with the equivalence tests
    helpers = list(HELPERS) * 7
    for c, helper in zip(h.width_vectors(19, seed=1), helpers):
      jax.block_until_ready(h.supernet(c, helper))  # raises on a retrace


def _layer_dim(h: Harness, path) -> str:
  (layer,) = [l for l in layout.layer_table(h.model) if l.path == path]
  return layer.out_dim


for _name in models.MODELS:
  _cls = type(f'{_name}_test', (_ModelTests, absltest.TestCase),
              {'MODEL': _name})
  globals()[_cls.__name__] = _cls
del _name, _cls

if __name__ == '__main__':
  from tests import jax_setup  # pylint: disable=g-import-not-at-top
  jax_setup.configure()
  absltest.main()
