"""Your own CNN: groups found by tracing, exact costs, supernet == compact.

The models are plain Flax (tests/user_models.py, no bcnet_jax import). Twins
of built-in models must give the built-ins' groups and costs; small models
exercise one rule of the channel analysis each; for every one, a supernet
path (left or right, in its window, masked) gives the logits and BatchNorm
statistics of the compact network built from the trace, on real digits.
"""

import functools

from absl.testing import absltest
from absl.testing import parameterized
from flax import traverse_util
import flax.linen as flax_nn
import jax
import jax.numpy as jnp
import numpy as np

from bcnet_jax import models
from bcnet_jax.models import layers
from bcnet_jax.models import layout
from bcnet_jax.models import slicing
from bcnet_jax.models import traced
from bcnet_jax.run import errors
from bcnet_jax.space import paths
from bcnet_jax.space import search_space as space_lib
from bcnet_jax.space.costs import CostModel
from tests import images
from tests import user_models as um

RTOL = 1e-5  # float32: masked and sliced sums differ in order only


@functools.lru_cache(maxsize=None)
def trace(name: str, resolution: int = 16, batch_one: bool = False,
          **kwargs) -> traced.TracedModel:
  del batch_one  # part of the cache key only
  return traced.from_flax(getattr(um, name)(), (resolution, resolution, 3),
                          **kwargs)


def roles(model) -> dict[str, frozenset]:
  """Group -> its (layer, 'in'/'out') members, layer paths joined by _."""
  s = model.structure
  out = {}
  for name, members in zip(s.names, s.members):
    found = set()
    for leaf, axis in members:
      leaf = s.tracer.leaves[leaf]
      if leaf.collection == 'params':
        role = 'out' if axis == len(leaf.shape) - 1 else 'in'
        found.add(('_'.join(leaf.path[:-1]), role))
    out[name] = frozenset(found)
  return out


def builtin_roles(model) -> dict[str, frozenset]:
  out = {}
  for layer in layout.layer_table(model):
    path = '_'.join(layer.path)
    if layer.out_dim:
      out.setdefault(layer.out_dim, set()).add((path, 'out'))
    if layer.in_dim and layer.kind not in ('depthwise', 'bn'):
      out.setdefault(layer.in_dim, set()).add((path, 'in'))
  return {d: frozenset(v) for d, v in out.items()}


def compare(test, model, widths_list, *, train_modes=(False, True),
            batch: int = 4) -> None:
  """A supernet path == the compact network of its widths, both sides."""
  variables = model.init(jax.random.key(0))
  x = jnp.asarray(images.mnist_images(batch, model.resolution))
  rngs = {'dropout': jax.random.key(1)}

  @functools.partial(jax.jit, static_argnames=('side', 'train'))
  def supernet(variables, c, side, train):
    return model.apply(variables, x, paths.SIDES[side](model.space, c),
                       train=train, mutable=['batch_stats'] if train else [],
                       rngs=rngs)

  for c in widths_list:
    compact = models.compact_like(model, c)
    run_compact = jax.jit(functools.partial(compact.apply, rngs=rngs),
                          static_argnames=('train', 'mutable'))
    for side in ('left', 'right'):
      sliced = slicing.slice_params(model, variables, c, side)
      for train in train_modes:
        mutable = ('batch_stats',) if train else ()
        got, want = (supernet(variables, jnp.asarray(c), side, train),
                     run_compact(sliced, x, train=train, mutable=mutable))
        if train:
          (got, _), new = got
          (want, _), want_new = want
        else:
          got, want = got[0], want[0]
        test.assertEqual(got.shape, (1, batch, model.num_classes))
        scale = float(jnp.max(jnp.abs(want)))
        np.testing.assert_allclose(got[0], want, atol=RTOL * scale,
                                   rtol=RTOL,
                                   err_msg=f'{c} {side} train={train}')
        if train:  # the running statistics of the path's channels
          stats = slicing.slice_params(
              model, {'params': variables['params'], **new}, c, side)
          jax.tree.map(functools.partial(
              np.testing.assert_allclose, rtol=1e-4, atol=1e-5),
                       stats['batch_stats'], want_new['batch_stats'])


def widths(model, n: int = 2, seed: int = 0) -> list[np.ndarray]:
  space = model.space
  return [space.full(), space.smallest()] + list(
      space.sample(np.random.default_rng(seed), n))


class TwinsTest(parameterized.TestCase):
  """Plain-linen twins give the built-ins' groups and costs."""

  @parameterized.parameters(
      ('resnet20_cifar', 'ResNet20Twin', 32),
      ('mobilenetv2_cifar', 'MobileNetV2CifarTwin', 32),
      ('efficientnet_b0', 'EfficientNetB0Twin', 224))
  def test_groups_and_costs_equal_the_builtin(self, builtin, twin, res):
    model = trace(twin, res)
    reference = models.get_model(builtin)
    mine, theirs = roles(model), builtin_roles(reference)
    by_members = {members: name for name, members in mine.items()}
    self.assertCountEqual(by_members, theirs.values())
    to_mine = {d: model.space.dim(by_members[m]) for d, m in theirs.items()}
    for d in reference.space.dims:  # derived dims: the same parent group
      self.assertEqual(
          model.space.groups[to_mine[d.name].group],
          by_members[theirs[reference.space.groups[d.group]]])
    c = reference.space.sample(np.random.default_rng(0), 100)
    permuted = np.zeros_like(c)
    for g, name in enumerate(reference.space.groups):
      permuted[:, to_mine[name].group] = c[:, g]
    for cost in ('macs', 'params'):
      np.testing.assert_array_equal(
          getattr(CostModel(model), cost)(permuted),
          getattr(CostModel(reference), cost)(c), err_msg=cost)


class RulesTest(parameterized.TestCase):
  """One rule of the channel analysis per model."""

  def pieces(self, model, leaf_name, axis):
    s = model.structure
    i = next(i for i, leaf in enumerate(s.tracer.leaves)
             if leaf.collection == 'params' and leaf.name == leaf_name)
    return [None if g is None else s.names[g]
            for g, _ in s.leaf_pieces[i][axis]]

  def test_concatenation_is_one_segment_per_input(self):
    model = trace('DenseBlockNet')
    self.assertEqual(model.space.groups, (
        'stem_conv', 'layer0_conv', 'layer1_conv', 'layer2_conv',
        'transition_conv'))
    self.assertEqual(self.pieces(model, 'transition_conv/kernel', 2),
                     ['stem_conv', 'layer0_conv', 'layer1_conv',
                      'layer2_conv'])

  def test_flatten_into_dense_repeats_channels_fastest(self):
    model = trace('FlattenHeadNet')
    self.assertEqual(model.space.groups, ('conv1_conv', 'conv2_conv', 'fc1'))
    self.assertEqual(self.pieces(model, 'fc1/kernel', 0),
                     ['conv2_conv'] * 16)  # 4 x 4 pixels, C fastest
    c = model.space.sample(np.random.default_rng(0))
    ch = model.space.channels(c)
    expected = (9 * 64 * 3 * ch['conv1_conv'] +
                9 * 16 * ch['conv1_conv'] * ch['conv2_conv'] +
                16 * ch['conv2_conv'] * ch['fc1'] + ch['fc1'] * 10)
    self.assertEqual(CostModel(model).macs(c), expected)

  def test_a_jitted_activation_in_two_groups_keeps_them_apart(self):
    self.assertEqual(trace('SharedActivationNet').space.groups,
                     ('a_conv', 'b_conv'))

  def test_batch_one_traces_the_same_groups(self):
    model = trace('ShapeBranchNet')
    program = model.structure.program(1, 'train')
    self.assertLen(program.group_of, len(model.space.dims))
    compare(self, model, widths(model, 1), batch=1)

  def test_nnx_module(self):
    model = trace('nnx_net')
    self.assertEqual(model.space.groups, ('conv1', 'conv2'))
    self.assertEqual(self.pieces(model, 'conv3/kernel', 2), ['conv2'])

  def test_shape_dependent_branch_keeps_the_projection(self):
    model = trace('ShapeBranchNet')
    space = model.space
    self.assertEqual(space.groups, ('stem_conv', 'body_conv'))
    # 8 and 12 nominal channels narrowed to the same count: the user's
    # code would skip the projection here; the traced network keeps it.
    c = next(w for w in np.ndindex(*(space.bins,) * 2)
             if min(w) > 0 and len(set(space.channels(w).values())) == 1)
    compact = models.compact_like(model, c)
    variables = compact.init(jax.random.key(0))
    self.assertIn('projection_conv', variables['params'])
    compare(self, model, [np.asarray(c, np.int32)])

  def test_grouped_convolution_is_fixed(self):
    model = trace('GroupedConvNet')
    self.assertEqual(model.space.groups, ('b_conv',))

  def test_layer_norm_over_channels_is_fixed(self):
    self.assertEqual(trace('LayerNormNet').space.groups,
                     ('a_conv', 'c_conv'))

  def test_unknown_primitive_names_itself_and_the_way_out(self):
    with self.assertRaisesRegex(
        errors.InvalidInput,
        r'cumsum .* in UnknownOpNet \(shapes \(2, 16, 16, 8\).*'
        r"'a_conv'.*--config.model.fixed=a_conv"):
      trace('UnknownOpNet')
    model = trace('UnknownOpNet', fixed=('a_conv',))
    self.assertEqual(model.space.groups, ('b_conv',))
    compare(self, model, widths(model))

  @parameterized.parameters('sort', 'gather', 'loop', 'straight_through')
  def test_ops_over_channels_it_cannot_follow_are_named_errors(self, op):
    name = {'loop': 'scan', 'straight_through': 'custom_vjp_call'}.get(op,
                                                                      op)
    with self.assertRaisesRegex(
        errors.InvalidInput, rf"^{name}.* in ChannelOpNet \(shapes .*"
        r"touches the channels of group 'a_conv'.*"
        r'--config.model.fixed=a_conv'):
      traced.from_flax(um.ChannelOpNet(op), (16, 16, 3))
    fixed = traced.from_flax(um.ChannelOpNet(op), (16, 16, 3),
                             fixed=('a_conv',))
    self.assertEqual(fixed.space.groups, ('b_conv',))

  def test_an_unused_parameter_is_named(self):
    with self.assertRaisesRegex(errors.InvalidInput,
                                r"parameters \['spare/bias', 'spare/kernel'\]"):
      traced.from_flax(um.UnusedLayerNet(), (16, 16, 3))

  def test_dense_general_costs_its_output_axes(self):
    model = trace('DenseGeneralNet')
    # The last output axis is a group, the one before it fixed.
    self.assertEqual(model.space.groups, ('a_conv', 'general'))
    c = model.space.sample(np.random.default_rng(0))
    a, g = model.space.channels(c)['a_conv'], model.space.channels(c)[
        'general']
    self.assertEqual(CostModel(model).macs(c),
                     9 * 256 * 3 * a + a * 2 * g + 2 * g * 10)

  def test_train_switches(self):
    self.assertEqual(trace('MutableSwitchNet').structure.tracer.argument,
                     None)
    self.assertEqual(trace('DeterministicNet').structure.tracer.argument,
                     'deterministic')
    for name in ('MutableSwitchNet', 'DeterministicNet'):
      model = trace(name)
      variables = model.init(jax.random.key(0))
      x = jnp.asarray(images.mnist_images(4, 16))
      path = paths.left(model.space, jnp.asarray(model.space.full()))
      (_, _), new = model.apply(variables, x, path, train=True,
                                mutable=['batch_stats'],
                                rngs={'dropout': jax.random.key(0)})
      moved = jax.tree.map(lambda a, b: float(jnp.max(jnp.abs(a - b))),
                           new['batch_stats'], variables['batch_stats'])
      self.assertGreater(min(jax.tree.leaves(moved)), 0, name)
      eval_logits, _ = model.apply(variables, x, path, train=False)
      again, _ = model.apply(variables, x, path, train=False)
      np.testing.assert_array_equal(eval_logits, again)

  def test_fixed_path_that_holds_nothing_is_an_error(self):
    with self.assertRaisesRegex(errors.InvalidInput, 'no_such_layer'):
      trace('ResNet20Twin', fixed=('no_such_layer',))


class SupernetEqualsCompactTest(parameterized.TestCase):
  """Left and right paths == compact networks: eval and train-mode BN."""

  @parameterized.parameters(
      'DenseBlockNet', 'FlattenHeadNet', 'SharedActivationNet',
      'GroupedConvNet', 'LayerNormNet', 'nnx_net', 'MutableSwitchNet',
      'SqueezeExciteNet')
  def test_paths_equal_compact_networks(self, name):
    model = trace(name)
    compare(self, model, widths(model))

  def test_resnet20_twin(self):
    model = trace('ResNet20Twin')
    compare(self, model, widths(model, 1))

  def test_squeeze_excite_units_are_derived(self):
    space = trace('SqueezeExciteNet').space
    self.assertEqual(space.groups, (
        'stem_conv', 'block1_expand_conv', 'block2_expand_conv',
        'block2_project_conv'))
    derived = {d.name: space.groups[d.group]
               for d in space.dims[space.num_groups:]}
    # Each SE's hidden units follow its block's input (EfficientNet's rule).
    self.assertEqual(derived, {'block1_se/reduce': 'stem_conv',
                               'block2_se/reduce': 'stem_conv'})

  def test_with_dropout_in_eval_mode(self):
    # Dropout draws its mask at each network's own channels, so train-mode
    # logits differ by design; eval mode must agree.
    model = trace('DeterministicNet')
    compare(self, model, widths(model), train_modes=(False,))


class _PlainConvInside(layers.WidthModel):
  """A built-in-style model with a plain nn.Conv the layer table misses."""

  @flax_nn.compact
  def __call__(self, x, paths=None, *, train):
    ctx = self.context(paths)
    x = layers.conv_bn(x, ctx, None, 'a', name='a', train=train)
    x = flax_nn.Conv(x.shape[-1], (1, 1), name='plain')(x)
    return layers.classify(x, ctx, 'a', self.num_classes, train=train)


class CoverageTest(parameterized.TestCase):
  """Every variable of every model is in its layer table (or trace)."""

  @parameterized.parameters(*models.MODELS)
  def test_builtin_layer_tables_cover_every_variable(self, name):
    model = models.get_model(name)
    covered = {layer.path for layer in layout.layer_table(model)}
    variables = jax.eval_shape(lambda: model.init(
        jax.random.key(0), model.dummy_input(1),
        paths.pair(model.space, jnp.asarray(model.space.full())),
        train=False))
    for key in traverse_util.flatten_dict(dict(variables)):
      self.assertIn(key[1:-1], covered, key)

  def test_a_plain_layer_in_a_builtin_style_model_is_refused(self):
    space = space_lib.SearchSpace.build('plain', [('a', 8)])
    with self.assertRaisesRegex(errors.InvalidInput,
                                'variable params/plain/bias belongs to no'):
      layout.layer_table(_PlainConvInside(space=space, resolution=8))

  def test_traced_costs_count_every_parameter_of_the_compact_network(self):
    model = trace('SqueezeExciteNet')
    for c in widths(model, 3):
      compact = models.compact_like(model, c)
      variables = compact.init(jax.random.key(0))
      self.assertEqual(CostModel(model).params(c), sum(
          v.size for v in jax.tree.leaves(variables['params'])))


class MomentsTest(absltest.TestCase):

  def test_moments_are_taken_with_dropout_off(self):
    with_dropout = trace('DeterministicNet')
    without = traced.from_flax(um.DeterministicNet(rate=0.0), (16, 16, 3))
    variables = with_dropout.init(jax.random.key(0))
    x = jnp.asarray(images.mnist_images(8, 16))
    c = with_dropout.space.sample(np.random.default_rng(1))
    moments = [m.apply(variables, x, paths.left(m.space, jnp.asarray(c)),
                       train=False, mutable=['batch_moments'])[1]
               for m in (with_dropout, without)]
    jax.tree.map(functools.partial(np.testing.assert_allclose, rtol=1e-5,
                                   atol=1e-6), *moments)

  def test_the_compact_network_is_checked_when_built(self):
    model = trace('SqueezeExciteNet')
    model.check_compact(model.space.sample(np.random.default_rng(2)))

  def test_batch_moments_are_the_batch_statistics(self):
    model = trace('DenseBlockNet')
    variables = model.init(jax.random.key(0))
    x = jnp.asarray(images.mnist_images(8, 16))
    c = model.space.sample(np.random.default_rng(3))
    path = paths.right(model.space, jnp.asarray(c))
    _, moments = model.apply(variables, x, path, train=False,
                             mutable=['batch_moments'])
    # The stem's BatchNorm normalizes the stem conv's output: its batch
    # mean over the path's channels is the conv output's mean.
    sliced = slicing.slice_params(model, variables, c, 'right')
    kernel = sliced['params']['stem_conv']['kernel']
    y = jax.lax.conv_general_dilated(x, kernel, (1, 1), 'SAME',
                                     dimension_numbers=('NHWC', 'HWIO',
                                                        'NHWC'))
    got = slicing.slice_params(
        model, {'params': variables['params'],
                'batch_stats': moments['batch_moments']}, c, 'right')
    np.testing.assert_allclose(got['batch_stats']['stem_bn']['mean'],
                               jnp.mean(y, axis=(0, 1, 2)), rtol=1e-4,
                               atol=1e-5)
    np.testing.assert_allclose(got['batch_stats']['stem_bn']['var'],
                               jnp.var(y, axis=(0, 1, 2)), rtol=1e-3,
                               atol=1e-5)


if __name__ == '__main__':
  absltest.main()
