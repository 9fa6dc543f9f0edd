"""EfficientNet-B0 (Tan & Le, 2019) with squeeze-and-excitation.

Groups: `stem` (also the first block's depthwise width), stage outputs
`stage1..7`, expanded widths `stage{s}_block{b}_expand`, and `head`. The SE
hidden units of every block are a derived dim `stage{s}_block{b}_se` with
nominal int(0.25 x block input channels) and their own edge table, indexed by
the block input group's bins: left and right paths stay disjoint through the
SE, and a compact net's SE width is e_se[c_in] (docs/design.md §7).
"""

from __future__ import annotations

import functools

import flax.linen as nn
import jax
import jax.numpy as jnp

from bcnet_jax.models import layers
from bcnet_jax.models.mobilenet_v2 import inverted_residual
from bcnet_jax.space.paths import Paths

# (expansion t, kernel k, stride s, output channels c, blocks n) per stage.
STAGES = ((1, 3, 1, 16, 1), (6, 3, 2, 24, 2), (6, 5, 2, 40, 2),
          (6, 3, 2, 80, 3), (6, 5, 1, 112, 3), (6, 5, 2, 192, 4),
          (6, 3, 1, 320, 1))
STEM, HEAD, SE_RATIO = 32, 1280, 0.25
BN = {'epsilon': 1e-3, 'momentum': 0.99}


def _blocks(stages):
  """Yields (name, stage, t, k, stride, in group, in ch, hidden, out group)."""
  in_group, in_ch = 'stem', STEM
  for s, (t, k, stride, c, n) in enumerate(stages, 1):
    for b in range(1, n + 1):
      name = f'stage{s}_block{b}'
      hidden = in_group if t == 1 else f'{name}_expand'
      yield (name, s, t, k, stride if b == 1 else 1, in_group, in_ch, hidden,
             f'stage{s}')
      in_group, in_ch = f'stage{s}', c


def groups(stages=STAGES) -> list[tuple[str, int]]:
  out = [('stem', STEM)]
  for name, s, t, _, _, _, in_ch, _, _ in _blocks(stages):
    if t != 1:
      out.append((f'{name}_expand', in_ch * t))
    if name.endswith('_block1'):
      out.append((f'stage{s}', stages[s - 1][3]))
  return out + [('head', HEAD)]


def derived_dims(stages=STAGES) -> list[tuple[str, str, int]]:
  return [(f'{name}_se', in_group, max(1, int(SE_RATIO * in_ch)))
          for name, _, _, _, _, in_group, in_ch, _, _ in _blocks(stages)]


class SqueezeExcite(nn.Module):
  """Gate of `dim` from pooled features through `se_dim` hidden units."""
  dim: str
  se_dim: str

  @nn.compact
  def __call__(self, x: jax.Array, ctx: layers.Widths) -> jax.Array:
    s = jnp.mean(x, axis=(1, 2), keepdims=True)
    s = layers.Conv(self.dim, self.se_dim, 1, use_bias=True, name='reduce')(
        s, ctx)
    s = layers.Conv(self.se_dim, self.dim, 1, use_bias=True, name='expand')(
        nn.swish(s), ctx)
    return x * nn.sigmoid(s)


class EfficientNetB0(layers.WidthModel):
  # The space's groups(...) and derived_dims(...) must use the same stages.
  stages: tuple[tuple[int, int, int, int, int], ...] = STAGES
  dropout_rate: float = 0.2
  drop_path_rate: float = 0.2

  def _drop_path(self, x: jax.Array, y: jax.Array, rate: float,
                 train: bool) -> jax.Array:
    """x + y, with y dropped per example at `rate` while training."""
    if not train or rate == 0:
      return x + y
    keep = jax.random.bernoulli(self.make_rng('dropout'), 1 - rate,
                                (y.shape[0], 1, 1, 1))
    return x + y * keep / (1 - rate)

  @nn.compact
  def __call__(self, x: jax.Array, paths: Paths | None = None, *,
               train: bool):
    ctx = self.context(paths)
    x = layers.conv_bn(x, ctx, None, 'stem', name='stem', strides=2,
                       train=train, act=nn.swish, bn_kwargs=BN)
    blocks = list(_blocks(self.stages))
    for i, (name, _, _, k, stride, in_group, _, hidden, out) in enumerate(
        blocks):
      x = inverted_residual(
          x, ctx, in_group, hidden, out, strides=stride, name=name,
          train=train, act=nn.swish, kernel_size=k, bn_kwargs=BN,
          se=functools.partial(SqueezeExcite(hidden, f'{name}_se',
                                             name=f'{name}_se'), ctx=ctx),
          residual=functools.partial(
              self._drop_path, rate=self.drop_path_rate * i / len(blocks),
              train=train))
    x = layers.conv_bn(x, ctx, blocks[-1][-1], 'head', name='head',
                       kernel_size=1, train=train, act=nn.swish, bn_kwargs=BN)
    return layers.classify(x, ctx, 'head', self.num_classes, train=train,
                           dropout_rate=self.dropout_rate)
