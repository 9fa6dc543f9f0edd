"""MobileNetV2 (Sandler et al., 2018), ImageNet and CIFAR variants.

Groups: `stem` (the stem conv and the first block's depthwise conv), one per
stage output `stage1..7` (tied by the residual adds), one per expanded block
`stage{s}_block{b}_expand`, and `head` (the last 1x1 conv): 25 in all. The
CIFAR variant keeps every layer and only changes strides.
"""

from __future__ import annotations

from typing import Callable

import flax.linen as nn
import jax

from bcnet_jax.models import layers
from bcnet_jax.space.paths import Paths

# (expansion t, output channels c, blocks n) per stage.
STAGES = ((1, 16, 1), (6, 24, 2), (6, 32, 3), (6, 64, 4), (6, 96, 3),
          (6, 160, 3), (6, 320, 1))
IMAGENET_STRIDES = (1, 2, 2, 2, 1, 2, 1)
CIFAR_STRIDES = (1, 1, 1, 2, 1, 2, 1)
STEM, HEAD = 32, 1280


def groups(stages=STAGES) -> list[tuple[str, int]]:
  out = [('stem', STEM)]
  in_ch = STEM
  for s, (t, c, n) in enumerate(stages, 1):
    for b in range(1, n + 1):
      if t != 1:
        out.append((f'stage{s}_block{b}_expand', in_ch * t))
      if b == 1:
        out.append((f'stage{s}', c))
      in_ch = c
  return out + [('head', HEAD)]


def inverted_residual(
    x: jax.Array, ctx: layers.Widths, in_dim: str, hidden_dim: str,
    out_dim: str, *, strides: int, name: str, train: bool,
    act: Callable[[jax.Array], jax.Array], kernel_size: int = 3,
    se: Callable[[jax.Array], jax.Array] | None = None,
    residual: Callable[[jax.Array, jax.Array], jax.Array] | None = None,
    bn_kwargs: dict | None = None) -> jax.Array:
  """1x1 expand (skipped if hidden_dim == in_dim), depthwise, [SE], project.

  The block adds its input back when stride is 1 and in and out are one dim;
  `residual(x, y)` replaces the plain add (EfficientNet's drop path).
  """
  y = x
  if hidden_dim != in_dim:
    y = layers.conv_bn(y, ctx, in_dim, hidden_dim, name=f'{name}_expand',
                       kernel_size=1, train=train, act=act,
                       bn_kwargs=bn_kwargs)
  y = layers.conv_bn(y, ctx, hidden_dim, hidden_dim, name=f'{name}_dw',
                     kernel_size=kernel_size, strides=strides, depthwise=True,
                     train=train, act=act, bn_kwargs=bn_kwargs)
  if se is not None:
    y = se(y)
  y = layers.conv_bn(y, ctx, hidden_dim, out_dim, name=f'{name}_project',
                     kernel_size=1, train=train, bn_kwargs=bn_kwargs)
  if strides == 1 and in_dim == out_dim:
    return x + y if residual is None else residual(x, y)
  return y


class MobileNetV2(layers.WidthModel):
  stages: tuple[tuple[int, int, int], ...] = STAGES  # the space's groups(...)
  strides: tuple[int, ...] = IMAGENET_STRIDES
  stem_strides: int = 2
  dropout_rate: float = 0.2

  @nn.compact
  def __call__(self, x: jax.Array, paths: Paths | None = None, *,
               train: bool):
    ctx = self.context(paths)
    x = layers.conv_bn(x, ctx, None, 'stem', name='stem',
                       strides=self.stem_strides, train=train, act=nn.relu6)
    dim = 'stem'
    for s, ((t, _, n), stride) in enumerate(zip(self.stages, self.strides), 1):
      for b in range(1, n + 1):
        name = f'stage{s}_block{b}'
        x = inverted_residual(
            x, ctx, dim, dim if t == 1 else f'{name}_expand', f'stage{s}',
            strides=stride if b == 1 else 1, name=name, train=train,
            act=nn.relu6)
        dim = f'stage{s}'
    x = layers.conv_bn(x, ctx, dim, 'head', name='head', kernel_size=1,
                       train=train, act=nn.relu6)
    return layers.classify(x, ctx, 'head', self.num_classes, train=train,
                           dropout_rate=self.dropout_rate)
