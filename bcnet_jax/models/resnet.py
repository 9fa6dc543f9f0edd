"""ResNet-50 v1.5 for ImageNet (stride on the 3x3 conv of the bottleneck).

Groups: `stem`, the four stage outputs `stage1..4` (tied by the residual
adds), and two inner groups per bottleneck `stage{s}_block{b}_mid1/2`: 37.
"""

from __future__ import annotations

import flax.linen as nn
import jax

from bcnet_jax.models import layers
from bcnet_jax.space.paths import Paths

# (bottleneck width, blocks, stride) per stage; the output is 4x the width.
STAGES = ((64, 3, 1), (128, 4, 2), (256, 6, 2), (512, 3, 2))
STEM, EXPANSION = 64, 4


def groups(stages=STAGES) -> list[tuple[str, int]]:
  out = [('stem', STEM)]
  for s, (width, n, _) in enumerate(stages, 1):
    for b in range(1, n + 1):
      out += [(f'stage{s}_block{b}_mid1', width),
              (f'stage{s}_block{b}_mid2', width)]
      if b == 1:
        out.append((f'stage{s}', width * EXPANSION))
  return out


def bottleneck(x: jax.Array, ctx: layers.Widths, in_dim: str, out_dim: str, *,
               strides: int, name: str, train: bool) -> jax.Array:
  y = layers.conv_bn(x, ctx, in_dim, f'{name}_mid1', name=name, suffix='1',
                     kernel_size=1, train=train, act=nn.relu)
  y = layers.conv_bn(y, ctx, f'{name}_mid1', f'{name}_mid2', name=name,
                     suffix='2', strides=strides, train=train, act=nn.relu)
  y = layers.conv_bn(y, ctx, f'{name}_mid2', out_dim, name=name, suffix='3',
                     kernel_size=1, train=train)
  if strides != 1 or in_dim != out_dim:
    x = layers.conv_bn(x, ctx, in_dim, out_dim, name=f'{name}_shortcut',
                       kernel_size=1, strides=strides, train=train)
  return nn.relu(x + y)


class ResNet50(layers.WidthModel):
  stages: tuple[tuple[int, int, int], ...] = STAGES  # the space's groups(...)

  @nn.compact
  def __call__(self, x: jax.Array, paths: Paths | None = None, *,
               train: bool):
    ctx = self.context(paths)
    x = layers.conv_bn(x, ctx, None, 'stem', name='stem', kernel_size=7,
                       strides=2, train=train, act=nn.relu)
    x = nn.max_pool(x, (3, 3), (2, 2), padding=((1, 1), (1, 1)))
    dim = 'stem'
    for s, (_, n, stride) in enumerate(self.stages, 1):
      for b in range(1, n + 1):
        x = bottleneck(x, ctx, dim, f'stage{s}',
                       strides=stride if b == 1 else 1,
                       name=f'stage{s}_block{b}', train=train)
        dim = f'stage{s}'
    return layers.classify(x, ctx, dim, self.num_classes, train=train)
