"""Classifies images with a retrained network (a retrain workdir).

  python -m bcnet_jax.predict --workdir=DIR cat.jpg ship.png [--json]

Each image is resized and normalized as in evaluation, then the top-5
classes are printed with their probabilities; with --json, one JSON object
per image: {"file", "top5": [[class, probability], ...]}. A file that is not
a readable image is reported on stderr, the others are still classified,
and the exit status is then 2.
"""

from __future__ import annotations

from typing import Any

import jax
import numpy as np
from PIL import Image
from PIL import UnidentifiedImageError

from bcnet_jax.retrain import export
from bcnet_jax.run import errors
from bcnet_jax.run.data import augment


def read_image(path: str, channels: int) -> np.ndarray:
  """[H, W, channels] uint8 from an image file."""
  try:
    with Image.open(path) as image:
      image = image.convert('L' if channels == 1 else 'RGB')
      pixels = np.asarray(image)
  except (UnidentifiedImageError, OSError) as e:
    raise errors.InvalidInput(f'{path}: not a readable image ({e})') from None
  return pixels[..., None] if pixels.ndim == 2 else pixels


def predict(workdir: str, paths: list[str], top: int = 5
            ) -> list[dict[str, Any]]:
  """Per image, in order: {'file', 'top5': [[class, probability], ...]}, or
  {'file', 'error'} for a file that is not a readable image (the others are
  still classified)."""
  model, variables, info = export.load(workdir)
  out, readable = [], {}
  for path in paths:
    try:
      readable[path] = augment.preprocess(
          read_image(path, info['channels']), augment=info['augment'],
          train=False, resolution=model.resolution,
          mean=np.asarray(info['mean'], np.float32),
          std=np.asarray(info['std'], np.float32), rng=None)
      out.append({'file': path})
    except errors.InvalidInput as e:
      out.append({'file': path, 'error': str(e)})
  if readable:
    logits, _ = jax.jit(lambda v, x: model.apply(v, x, train=False))(
        variables, np.stack(list(readable.values())))
    probs = dict(zip(readable, np.asarray(jax.nn.softmax(logits, axis=-1))))
    for result in out:
      if 'error' not in result:
        p = probs[result['file']]
        best = np.argsort(-p, kind='stable')[:top]
        result['top5'] = [[info['classes'][k], float(p[k])] for k in best]
  return out
