"""Per-example preprocessing in numpy: uint8 [H, W, C] in, float32 out.

CIFAR: pad 4 and random 32x32 crop, horizontal flip. ImageNet: Inception
crop (random area 8-100 %, aspect ratio 3/4-4/3) resized to the resolution,
flip; eval: resize the short side to resolution / 0.875, centre crop. Then
per-channel normalization. Randomness comes from the Generator passed in.
"""

from __future__ import annotations

import math

import numpy as np
from PIL import Image

from bcnet_jax.run import errors

AUGMENTATIONS = ('cifar', 'imagenet', 'none')


def resize(image: np.ndarray, height: int, width: int) -> np.ndarray:
  if image.shape[:2] == (height, width):
    return image
  mode = 'L' if image.shape[-1] == 1 else 'RGB'
  out = Image.fromarray(image.squeeze(-1) if mode == 'L' else image, mode)
  out = np.asarray(out.resize((width, height), Image.BILINEAR))
  return out.reshape(height, width, image.shape[-1])


def _flip(image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
  return image[:, ::-1] if rng.random() < 0.5 else image


def cifar_train(image: np.ndarray, resolution: int,
                rng: np.random.Generator) -> np.ndarray:
  image = resize(image, resolution, resolution)
  padded = np.pad(image, ((4, 4), (4, 4), (0, 0)))
  y, x = rng.integers(0, 9, size=2)
  return _flip(padded[y:y + resolution, x:x + resolution], rng)


def inception_crop(image: np.ndarray, resolution: int,
                   rng: np.random.Generator) -> np.ndarray:
  height, width = image.shape[:2]
  area = height * width
  for _ in range(10):
    target = area * rng.uniform(0.08, 1.0)
    ratio = math.exp(rng.uniform(math.log(3 / 4), math.log(4 / 3)))
    w = int(round(math.sqrt(target * ratio)))
    h = int(round(math.sqrt(target / ratio)))
    if 0 < w <= width and 0 < h <= height:
      y = rng.integers(0, height - h + 1)
      x = rng.integers(0, width - w + 1)
      break
  else:  # fall back to the central crop of the whole image
    h, w, y, x = height, width, 0, 0
  crop = image[y:y + h, x:x + w]
  return _flip(resize(crop, resolution, resolution), rng)


def center_crop(image: np.ndarray, resolution: int) -> np.ndarray:
  height, width = image.shape[:2]
  short = resolution / 0.875
  scale = short / min(height, width)
  h, w = max(resolution, round(height * scale)), max(resolution,
                                                      round(width * scale))
  image = resize(image, h, w)
  y, x = (h - resolution) // 2, (w - resolution) // 2
  return image[y:y + resolution, x:x + resolution]


def preprocess(image: np.ndarray, *, augment: str, train: bool,
               resolution: int, mean: np.ndarray, std: np.ndarray,
               rng: np.random.Generator | None) -> np.ndarray:
  """One example: augmented (train) or resized (eval), then normalized."""
  if augment not in AUGMENTATIONS:
    raise errors.InvalidInput(
        f'input.augment must be one of {AUGMENTATIONS}, got '
        f'{augment!r}')
  if augment == 'imagenet':
    image = (inception_crop(image, resolution, rng) if train
             else center_crop(image, resolution))
  elif augment == 'cifar' and train:
    image = cifar_train(image, resolution, rng)
  else:
    image = resize(image, resolution, resolution)
  return (image.astype(np.float32) / 255.0 - mean) / std
