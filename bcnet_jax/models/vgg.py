"""VGG-16 for CIFAR: 13 bias-free 3x3 conv + BN + ReLU, one FC layer.

Groups `layer1..13`, one per conv (no shortcuts tie them). Global average
pooling before the classifier equals VGG-CIFAR's flatten at 32x32 and keeps
the classifier's size fixed at other resolutions.
"""

from __future__ import annotations

import flax.linen as nn
import jax

from bcnet_jax.models import layers
from bcnet_jax.space.paths import Paths

# Channels per conv; 'M' = 2x2 max pool.
CFG = (64, 64, 'M', 128, 128, 'M', 256, 256, 256, 'M', 512, 512, 512, 'M',
       512, 512, 512, 'M')


def groups() -> list[tuple[str, int]]:
  widths = [c for c in CFG if c != 'M']
  return [(f'layer{i}', c) for i, c in enumerate(widths, 1)]


class VGG16Cifar(layers.WidthModel):

  @nn.compact
  def __call__(self, x: jax.Array, paths: Paths | None = None, *,
               train: bool):
    ctx = self.context(paths)
    dim, i = None, 0
    for c in CFG:
      if c == 'M':
        x = nn.max_pool(x, (2, 2), (2, 2))
        continue
      i += 1
      x = layers.conv_bn(x, ctx, dim, f'layer{i}', name=f'layer{i}',
                         train=train, act=nn.relu)
      dim = f'layer{i}'
    return layers.classify(x, ctx, dim, self.num_classes, train=train)
