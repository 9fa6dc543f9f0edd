"""A training batch built inside the jitted step from examples held on the
devices: gathered, augmented, normalized (the device path, train_feed.py).

The augmentation draws from the same distribution as the host's
(augment.cifar_train: pad 4 with zeros, a crop offset uniform in 0..8 on
each axis, a horizontal flip with probability ½), with jax.random keys
instead of numpy Generators: example j of step s uses fold_in(fold_in(
fold_in(key(seed), AUGMENT_STREAM), s), j), so a batch is a pure function of
(seed, step) and resuming replays it exactly. The step comes from the train
state (`state.step`, which the training program keeps equal to the step it
runs).

  batch = device_augment.training_batch(examples, positions, step,
                                        seed=0, augment='cifar',
                                        mean=..., std=...)
"""

from __future__ import annotations

from typing import Sequence

import jax
import jax.numpy as jnp

AUGMENTATIONS = ('cifar', 'none')  # the host's 'imagenet' resizes crops
PAD = 4


def cifar_crop_flip(image: jax.Array, key: jax.Array) -> jax.Array:
  """One uint8 [R, R, C] image: zero-padded by 4, a random R x R crop, a
  random horizontal flip."""
  crop_key, flip_key = jax.random.split(key)
  y, x = jax.random.randint(crop_key, (2,), 0, 2 * PAD + 1)
  padded = jnp.pad(image, ((PAD, PAD), (PAD, PAD), (0, 0)))
  crop = jax.lax.dynamic_slice(padded, (y, x, 0), image.shape)
  return jnp.where(jax.random.bernoulli(flip_key), crop[:, ::-1], crop)


# A stream of its own: dropout folds the step and the pass into key(seed).
AUGMENT_STREAM = 0xA06


def example_keys(seed: int, step: jax.Array, count: int) -> jax.Array:
  """The keys of examples 0..count-1 of the global batch of `step`."""
  key = jax.random.fold_in(jax.random.fold_in(jax.random.key(seed),
                                              AUGMENT_STREAM), step)
  return jax.vmap(jax.random.fold_in, (None, 0))(key, jnp.arange(count))


def training_batch(examples: dict[str, jax.Array], positions: jax.Array,
                   step: jax.Array, *, seed: int, augment: str,
                   mean: Sequence[float], std: Sequence[float]
                   ) -> dict[str, jax.Array]:
  """{'image': float32 [B, R, R, C] normalized, 'label': [B]}: the examples
  at `positions` ([B] int32, the global batch) of `examples` ({'image':
  uint8 [N, R, R, C], 'label': [N]}), augmented for `step`."""
  if augment not in AUGMENTATIONS:
    raise ValueError(f'the device path augments {AUGMENTATIONS}, not '
                     f'{augment!r}')
  images = examples['image'][positions]
  if augment == 'cifar':
    keys = example_keys(seed, step, positions.shape[0])
    images = jax.vmap(cifar_crop_flip)(images, keys)
  mean = jnp.asarray(mean, jnp.float32)
  std = jnp.asarray(std, jnp.float32)
  return {'image': (images.astype(jnp.float32) / 255.0 - mean) / std,
          'label': examples['label'][positions]}
