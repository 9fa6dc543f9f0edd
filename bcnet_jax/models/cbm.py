"""The two Channel-Bench-Macro search spaces (docs/design.md §8).

Seven groups `ch0..ch6` each; nominal = the published max channels, so width
d of a group is round(d x max / 4) channels and an arch is named by its seven
digits (e.g. '4444444').
"""

from __future__ import annotations

import flax.linen as nn
import jax

from bcnet_jax.models import layers
from bcnet_jax.models.mobilenet_v2 import inverted_residual
from bcnet_jax.models.resnet_cifar import basic_block
from bcnet_jax.space.paths import Paths

MOBILENET_MAX = (128, 768, 768, 768, 256, 1536, 1024)
RESNET_MAX = (256, 256, 256, 512, 512, 512, 512)


def mobilenet_groups() -> list[tuple[str, int]]:
  return [(f'ch{i}', c) for i, c in enumerate(MOBILENET_MAX)]


def resnet_groups() -> list[tuple[str, int]]:
  return [(f'ch{i}', c) for i, c in enumerate(RESNET_MAX)]


class CbmMobileNet(layers.WidthModel):
  """Stem, IR(ch0-ch1-ch0), IR(ch0-ch2-ch0), IR(ch0-ch3-ch4, s2),
  IR(ch4-ch5-ch4), 1x1 conv ch4-ch6, pool, FC."""

  @nn.compact
  def __call__(self, x: jax.Array, paths: Paths | None = None, *,
               train: bool):
    ctx = self.context(paths)
    x = layers.conv_bn(x, ctx, None, 'ch0', name='stem', strides=2,
                       train=train, act=nn.relu)
    for i, (src, hidden, dst, stride) in enumerate(
        (('ch0', 'ch1', 'ch0', 1), ('ch0', 'ch2', 'ch0', 1),
         ('ch0', 'ch3', 'ch4', 2), ('ch4', 'ch5', 'ch4', 1)), 1):
      x = inverted_residual(x, ctx, src, hidden, dst, strides=stride,
                            name=f'block{i}', train=train, act=nn.relu)
    x = layers.conv_bn(x, ctx, 'ch4', 'ch6', name='head', kernel_size=1,
                       train=train, act=nn.relu)
    return layers.classify(x, ctx, 'ch6', self.num_classes, train=train)


class CbmResNet(layers.WidthModel):
  """Stem, 2 basic blocks on ch0 (inner ch1, ch2), plain 3x3 s2 ch0-ch3 and
  3x3 ch3-ch4, 2 basic blocks on ch4 (inner ch5, ch6), pool, FC."""

  @nn.compact
  def __call__(self, x: jax.Array, paths: Paths | None = None, *,
               train: bool):
    ctx = self.context(paths)
    x = layers.conv_bn(x, ctx, None, 'ch0', name='stem', strides=2,
                       train=train, act=nn.relu)
    x = basic_block(x, ctx, 'ch0', 'ch1', 'ch0', strides=1, name='block1',
                    train=train)
    x = basic_block(x, ctx, 'ch0', 'ch2', 'ch0', strides=1, name='block2',
                    train=train)
    x = layers.conv_bn(x, ctx, 'ch0', 'ch3', name='block3', suffix='1',
                       strides=2, train=train, act=nn.relu)
    x = layers.conv_bn(x, ctx, 'ch3', 'ch4', name='block3', suffix='2',
                       train=train, act=nn.relu)
    x = basic_block(x, ctx, 'ch4', 'ch5', 'ch4', strides=1, name='block4',
                    train=train)
    x = basic_block(x, ctx, 'ch4', 'ch6', 'ch4', strides=1, name='block5',
                    train=train)
    return layers.classify(x, ctx, 'ch4', self.num_classes, train=train)

