"""CNNs written the way a user writes them: plain Flax, no bcnet_jax.

Twins of built-in models (the same layers under the same names, so their
traced groups can be compared with the built-ins') and small models that
exercise one rule of the channel analysis each.
"""

from __future__ import annotations

from flax import nnx
import flax.linen as nn
import jax
import jax.numpy as jnp

# ---- twins of the built-ins ------------------------------------------------


def conv_bn(x, features, name, train, kernel=3, strides=1, groups=1,
            act=None, bn=None):
  x = nn.Conv(features, (kernel, kernel), strides, use_bias=False,
              feature_group_count=groups, name=f'{name}_conv')(x)
  x = nn.BatchNorm(use_running_average=not train, name=f'{name}_bn',
                   **(bn or {}))(x)
  return x if act is None else act(x)


class ResNet20Twin(nn.Module):
  """resnet20_cifar: projection shortcuts where the shape changes."""
  num_classes: int = 10

  @nn.compact
  def __call__(self, x, train: bool = False):
    x = conv_bn(x, 16, 'stem', train, act=nn.relu)
    for s, width in enumerate((16, 32, 64), 1):
      for b in range(1, 4):
        name = f'stage{s}_block{b}'
        strides = 2 if s > 1 and b == 1 else 1
        y = nn.Conv(width, (3, 3), strides, use_bias=False,
                    name=f'{name}_conv1')(x)
        y = nn.relu(nn.BatchNorm(use_running_average=not train,
                                 name=f'{name}_bn1')(y))
        y = nn.Conv(width, (3, 3), use_bias=False, name=f'{name}_conv2')(y)
        y = nn.BatchNorm(use_running_average=not train, name=f'{name}_bn2')(y)
        if x.shape != y.shape:  # a shape-dependent branch, as users write
          x = conv_bn(x, width, f'{name}_shortcut', train, kernel=1,
                      strides=strides)
        x = nn.relu(x + y)
    x = jnp.mean(x, axis=(1, 2))
    return nn.Dense(self.num_classes, name='classifier')(x)


MOBILENET_STAGES = ((1, 16, 1), (6, 24, 2), (6, 32, 3), (6, 64, 4),
                    (6, 96, 3), (6, 160, 3), (6, 320, 1))


def inverted_residual(x, in_ch, t, out, strides, name, train, act, kernel=3,
                      se=None, residual=None, bn=None):
  hidden = in_ch * t
  y = x
  if t != 1:
    y = conv_bn(y, hidden, f'{name}_expand', train, kernel=1, act=act, bn=bn)
  y = conv_bn(y, hidden, f'{name}_dw', train, kernel=kernel,
              strides=strides, groups=hidden, act=act, bn=bn)
  if se is not None:
    y = se(y)
  y = conv_bn(y, out, f'{name}_project', train, kernel=1, bn=bn)
  if strides == 1 and in_ch == out:
    return x + y if residual is None else residual(x, y)
  return y


class MobileNetV2CifarTwin(nn.Module):
  """mobilenetv2_cifar: CIFAR strides, stem stride 1."""
  num_classes: int = 10
  dropout_rate: float = 0.2

  @nn.compact
  def __call__(self, x, train: bool = False):
    x = conv_bn(x, 32, 'stem', train, act=nn.relu6)
    in_ch = 32
    for s, ((t, c, n), stride) in enumerate(
        zip(MOBILENET_STAGES, (1, 1, 1, 2, 1, 2, 1)), 1):
      for b in range(1, n + 1):
        x = inverted_residual(x, in_ch, t, c, stride if b == 1 else 1,
                              f'stage{s}_block{b}', train, nn.relu6)
        in_ch = c
    x = conv_bn(x, 1280, 'head', train, kernel=1, act=nn.relu6)
    x = jnp.mean(x, axis=(1, 2))
    x = nn.Dropout(self.dropout_rate, deterministic=not train)(x)
    return nn.Dense(self.num_classes, name='classifier')(x)


def mobilenet_v2_cifar_without_dropout() -> MobileNetV2CifarTwin:
  return MobileNetV2CifarTwin(dropout_rate=0.0)


class SqueezeExcite(nn.Module):
  hidden: int

  @nn.compact
  def __call__(self, x):
    s = jnp.mean(x, axis=(1, 2), keepdims=True)
    s = nn.swish(nn.Conv(self.hidden, (1, 1), name='reduce')(s))
    s = nn.Conv(x.shape[-1], (1, 1), name='expand')(s)
    return x * nn.sigmoid(s)


EFFICIENTNET_STAGES = ((1, 3, 1, 16, 1), (6, 3, 2, 24, 2), (6, 5, 2, 40, 2),
                       (6, 3, 2, 80, 3), (6, 5, 1, 112, 3), (6, 5, 2, 192, 4),
                       (6, 3, 1, 320, 1))


class EfficientNetB0Twin(nn.Module):
  """efficientnet_b0: squeeze-excite, drop path, dropout."""
  num_classes: int = 1000

  @nn.compact
  def __call__(self, x, train: bool = False):
    bn = {'epsilon': 1e-3, 'momentum': 0.99}
    x = conv_bn(x, 32, 'stem', train, strides=2, act=nn.swish, bn=bn)
    in_ch, count = 32, sum(n for *_, n in EFFICIENTNET_STAGES)
    i = 0
    for s, (t, k, stride, c, n) in enumerate(EFFICIENTNET_STAGES, 1):
      for b in range(1, n + 1):
        name = f'stage{s}_block{b}'
        rate = 0.2 * i / count

        def drop_path(x, y, rate=rate):
          if not train or rate == 0:
            return x + y
          keep = jax.random.bernoulli(self.make_rng('dropout'), 1 - rate,
                                      (y.shape[0], 1, 1, 1))
          return x + y * keep / (1 - rate)

        x = inverted_residual(
            x, in_ch, t, c, stride if b == 1 else 1, name, train, nn.swish,
            kernel=k, bn=bn, residual=drop_path,
            se=SqueezeExcite(max(1, int(0.25 * in_ch)), name=f'{name}_se'))
        in_ch, i = c, i + 1
    x = conv_bn(x, 1280, 'head', train, kernel=1, act=nn.swish, bn=bn)
    x = jnp.mean(x, axis=(1, 2))
    x = nn.Dropout(0.2, deterministic=not train)(x)
    return nn.Dense(self.num_classes, name='classifier')(x)


# ---- one rule each ----------------------------------------------------------


class DenseBlockNet(nn.Module):
  """DenseNet-style: each layer's input is the concat of all before it."""

  @nn.compact
  def __call__(self, x, train: bool = False):
    x = conv_bn(x, 8, 'stem', train, act=nn.relu)
    features = [x]
    for i in range(3):
      y = conv_bn(jnp.concatenate(features, axis=-1), 6, f'layer{i}', train,
                  act=nn.relu)
      features.append(y)
    x = conv_bn(jnp.concatenate(features, axis=-1), 12, 'transition', train,
                kernel=1, act=nn.relu)
    return nn.Dense(10, name='head')(jnp.mean(x, axis=(1, 2)))


class FlattenHeadNet(nn.Module):
  """A VGG-style head: flatten NHWC features into Dense layers."""

  @nn.compact
  def __call__(self, x, train: bool = False):
    x = conv_bn(x, 8, 'conv1', train, act=nn.relu, strides=2)
    x = conv_bn(x, 12, 'conv2', train, act=nn.relu, strides=2)
    x = x.reshape((x.shape[0], -1))
    x = nn.relu(nn.Dense(16, name='fc1')(x))
    return nn.Dense(10, name='fc2')(x)


@jax.jit
def shared_activation(x):
  """One jitted function called in two groups: they must stay two."""
  return jnp.maximum(x, 0.1 * x)


class SharedActivationNet(nn.Module):

  @nn.compact
  def __call__(self, x, train: bool = False):
    x = shared_activation(conv_bn(x, 8, 'a', train))
    x = shared_activation(conv_bn(x, 8, 'b', train))
    return nn.Dense(10, name='head')(jnp.mean(x, axis=(1, 2)))


class GroupedConvNet(nn.Module):
  """A grouped (not depthwise) conv: its channels stay as they are."""

  @nn.compact
  def __call__(self, x, train: bool = False):
    x = conv_bn(x, 8, 'a', train, act=nn.relu)
    x = conv_bn(x, 8, 'grouped', train, groups=2, act=nn.relu)
    x = conv_bn(x, 12, 'b', train, act=nn.relu)
    return nn.Dense(10, name='head')(jnp.mean(x, axis=(1, 2)))


class UnknownOpNet(nn.Module):
  """A cumulative sum over channels: an op the analysis does not know."""
  fixed_too: bool = False

  @nn.compact
  def __call__(self, x, train: bool = False):
    x = conv_bn(x, 8, 'a', train, act=nn.relu)
    x = jnp.cumsum(x, axis=-1)
    x = conv_bn(x, 12, 'b', train, act=nn.relu)
    return nn.Dense(10, name='head')(jnp.mean(x, axis=(1, 2)))


class LayerNormNet(nn.Module):
  """LayerNorm over channels: its group stays fixed, the others search."""

  @nn.compact
  def __call__(self, x, train: bool = False):
    x = conv_bn(x, 8, 'a', train, act=nn.relu)
    x = nn.LayerNorm(name='norm')(nn.Conv(12, (3, 3), name='b')(x))
    x = conv_bn(x, 16, 'c', train, act=nn.relu)
    return nn.Dense(10, name='head')(jnp.mean(x, axis=(1, 2)))


class MutableSwitchNet(nn.Module):
  """BatchNorm switched by whether batch_stats is mutable, no argument."""

  @nn.compact
  def __call__(self, x):
    use_running = not self.is_mutable_collection('batch_stats')
    x = nn.relu(nn.BatchNorm(use_running, name='bn1')(
        nn.Conv(8, (3, 3), name='conv1')(x)))
    x = nn.relu(nn.BatchNorm(use_running, name='bn2')(
        nn.Conv(8, (3, 3), strides=2, name='conv2')(x)))
    return nn.Dense(10, name='head')(jnp.mean(x, axis=(1, 2)))


class DeterministicNet(nn.Module):
  """Switched by an inverted argument, with dropout inside."""
  rate: float = 0.3

  @nn.compact
  def __call__(self, x, deterministic: bool = True):
    x = nn.Conv(8, (3, 3), name='conv1')(x)
    x = nn.BatchNorm(use_running_average=deterministic, name='bn1')(x)
    x = nn.Dropout(self.rate, deterministic=deterministic)(nn.relu(x))
    x = nn.Conv(12, (3, 3), name='conv2')(x)
    x = nn.relu(nn.BatchNorm(use_running_average=deterministic,
                             name='bn2')(x))
    return nn.Dense(10, name='head')(jnp.mean(x, axis=(1, 2)))


class NnxNet(nnx.Module):
  """A Flax NNX CNN with a residual block."""

  def __init__(self, rngs: nnx.Rngs, num_classes: int = 10):
    self.conv1 = nnx.Conv(3, 8, (3, 3), use_bias=False, rngs=rngs)
    self.bn1 = nnx.BatchNorm(8, rngs=rngs)
    self.conv2 = nnx.Conv(8, 12, (3, 3), use_bias=False, rngs=rngs)
    self.bn2 = nnx.BatchNorm(12, rngs=rngs)
    self.conv3 = nnx.Conv(12, 12, (3, 3), use_bias=False, rngs=rngs)
    self.bn3 = nnx.BatchNorm(12, rngs=rngs)
    self.head = nnx.Linear(12, num_classes, rngs=rngs)

  def __call__(self, x):
    x = nnx.relu(self.bn1(self.conv1(x)))
    x = nnx.relu(self.bn2(self.conv2(x)))
    x = nnx.relu(x + self.bn3(self.conv3(x)))
    return self.head(jnp.mean(x, axis=(1, 2)))


def nnx_net(num_classes: int = 10) -> NnxNet:
  return NnxNet(nnx.Rngs(0), num_classes)



class ShapeBranchNet(nn.Module):
  """A projection shortcut taken only where the shapes differ (a channel
  change at stride 1): re-running this code at equal narrower widths
  would skip it."""

  @nn.compact
  def __call__(self, x, train: bool = False):
    x = conv_bn(x, 8, 'stem', train, act=nn.relu)
    y = conv_bn(x, 12, 'body', train)
    if x.shape != y.shape:
      x = conv_bn(x, 12, 'projection', train, kernel=1)
    x = nn.relu(x + y)
    return nn.Dense(10, name='head')(jnp.mean(x, axis=(1, 2)))


class SqueezeExciteNet(nn.Module):
  """Two inverted residual blocks with squeeze-excite (EfficientNet's)."""

  @nn.compact
  def __call__(self, x, train: bool = False):
    x = conv_bn(x, 8, 'stem', train, act=nn.swish)
    x = inverted_residual(x, 8, 3, 8, 1, 'block1', train, nn.swish,
                          se=SqueezeExcite(2, name='block1_se'))
    x = inverted_residual(x, 8, 3, 12, 2, 'block2', train, nn.swish,
                          se=SqueezeExcite(2, name='block2_se'))
    return nn.Dense(10, name='head')(jnp.mean(x, axis=(1, 2)))


@jax.custom_vjp
def straight_through_round(x):
  return jnp.round(x)


straight_through_round.defvjp(lambda x: (jnp.round(x), None),
                              lambda _, g: (g,))


class ChannelOpNet(nn.Module):
  """An op over channels the channel analysis cannot follow."""
  op: str = 'sort'

  @nn.compact
  def __call__(self, x, train: bool = False):
    x = conv_bn(x, 8, 'a', train, act=nn.relu)
    if self.op == 'sort':
      x = jnp.sort(x, axis=-1)
    elif self.op == 'gather':
      x = x[..., jnp.array([1, 0, 3, 2, 5, 4, 7, 6])]
    elif self.op == 'loop':
      x = jax.lax.fori_loop(0, 2, lambda i, y: 0.5 * y + x, x)
    elif self.op == 'straight_through':
      x = straight_through_round(x)
    x = conv_bn(x, 12, 'b', train, act=nn.relu)
    return nn.Dense(10, name='head')(jnp.mean(x, axis=(1, 2)))


class UnusedLayerNet(nnx.Module):
  """An NNX layer built in __init__ but never called."""

  def __init__(self, seed: int = 0):
    rngs = nnx.Rngs(seed)
    self.conv = nnx.Conv(3, 8, (3, 3), rngs=rngs)
    self.spare = nnx.Linear(8, 4, rngs=rngs)
    self.head = nnx.Linear(8, 10, rngs=rngs)

  def __call__(self, x):
    return self.head(jnp.mean(nnx.relu(self.conv(x)), axis=(1, 2)))


class DenseGeneralNet(nn.Module):
  """A Dense layer with two output axes, flattened into the head."""

  @nn.compact
  def __call__(self, x, train: bool = False):
    x = jnp.mean(conv_bn(x, 8, 'a', train, act=nn.relu), axis=(1, 2))
    x = nn.relu(nn.DenseGeneral((2, 6), name='general')(x))
    return nn.Dense(10, name='head')(x.reshape((x.shape[0], -1)))
