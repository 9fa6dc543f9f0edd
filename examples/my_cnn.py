"""A CNN written with plain Flax linen, to search with bcnet_jax as it is.

  python -m bcnet_jax.train --config=configs/testing.py \
      --config.model.name=examples.my_cnn:MyCNN --workdir=/tmp/my_cnn

Nothing here knows about bcnet_jax: its channel groups are found by tracing
(README "Your own model").
"""

import flax.linen as nn
import jax.numpy as jnp


class ResidualBlock(nn.Module):
  features: int
  strides: int = 1

  @nn.compact
  def __call__(self, x, train: bool):
    norm = lambda name: nn.BatchNorm(use_running_average=not train, name=name)
    y = nn.Conv(self.features, (3, 3), self.strides, use_bias=False,
                name='conv1')(x)
    y = nn.relu(norm('bn1')(y))
    y = nn.Conv(self.features, (3, 3), use_bias=False, name='conv2')(y)
    y = norm('bn2')(y)
    if x.shape != y.shape:
      x = nn.Conv(self.features, (1, 1), self.strides, use_bias=False,
                  name='shortcut')(x)
      x = norm('shortcut_bn')(x)
    return nn.relu(x + y)


class MyCNN(nn.Module):
  """A small ResNet: a stem, two stages of residual blocks, a Dense head."""
  num_classes: int = 10
  widths: tuple[int, ...] = (16, 32)

  @nn.compact
  def __call__(self, x, train: bool = False):
    x = nn.Conv(self.widths[0], (3, 3), use_bias=False, name='stem')(x)
    x = nn.relu(nn.BatchNorm(use_running_average=not train,
                             name='stem_bn')(x))
    for i, features in enumerate(self.widths):
      x = ResidualBlock(features, 2 if i else 1, name=f'stage{i + 1}')(
          x, train)
    x = jnp.mean(x, axis=(1, 2))
    return nn.Dense(self.num_classes, name='head')(x)
