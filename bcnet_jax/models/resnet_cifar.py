"""ResNet-20/56 for CIFAR (He et al., 2016) with projection shortcuts.

Groups: `stage1..3` (the stem and every block output of a stage, tied by the
identity shortcuts) and `stage{s}_block{b}_mid` (the inner conv of each block).
Shape-changing shortcuts are 1x1 conv + BN: zero-padding shortcuts would
misalign the right path (docs/design.md §7).
"""

from __future__ import annotations

import flax.linen as nn
import jax

from bcnet_jax.models import layers
from bcnet_jax.space.paths import Paths

WIDTHS = (16, 32, 64)


def blocks_per_stage(depth: int) -> int:
  if (depth - 2) % 6:
    raise ValueError(f'CIFAR ResNet depth must be 6n + 2, got {depth}')
  return (depth - 2) // 6


def groups(depth: int) -> list[tuple[str, int]]:
  out = []
  for s, width in enumerate(WIDTHS, 1):
    out.append((f'stage{s}', width))
    out += [(f'stage{s}_block{b}_mid', width)
            for b in range(1, blocks_per_stage(depth) + 1)]
  return out


def basic_block(x: jax.Array, ctx: layers.Widths, in_dim: str, mid: str,
                out: str, *, strides: int, name: str, train: bool
                ) -> jax.Array:
  """Two 3x3 conv-BN, shortcut (projected where the shape changes), ReLU."""
  y = layers.conv_bn(x, ctx, in_dim, mid, name=name, suffix='1',
                     strides=strides, train=train, act=nn.relu)
  y = layers.conv_bn(y, ctx, mid, out, name=name, suffix='2', train=train)
  if strides != 1 or in_dim != out:
    x = layers.conv_bn(x, ctx, in_dim, out, name=f'{name}_shortcut',
                       kernel_size=1, strides=strides, train=train)
  return nn.relu(x + y)


class ResNetCifar(layers.WidthModel):
  depth: int = 20

  @nn.compact
  def __call__(self, x: jax.Array, paths: Paths | None = None, *,
               train: bool):
    ctx = self.context(paths)
    x = layers.conv_bn(x, ctx, None, 'stage1', name='stem', train=train,
                       act=nn.relu)
    dim = 'stage1'
    for s in range(1, len(WIDTHS) + 1):
      for b in range(1, blocks_per_stage(self.depth) + 1):
        x = basic_block(x, ctx, dim, f'stage{s}_block{b}_mid', f'stage{s}',
                        strides=2 if s > 1 and b == 1 else 1,
                        name=f'stage{s}_block{b}', train=train)
        dim = f'stage{s}'
    return layers.classify(x, ctx, dim, self.num_classes, train=train)
