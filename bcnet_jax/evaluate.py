"""BN-recalibrated accuracy of width vectors (docs/design.md §4), written once.

score(c) = ½[acc(L(c)) + acc(R(c))]. Running statistics gathered at mixed
widths fit no single sub-network, so before a path is scored its BatchNorm
statistics are re-estimated on calibration batches: the mean and variance
pooled over all their examples (E[x²] − E[x]² over the batches, not a mean
of per-batch variances), in train mode without dropout; then the path is
evaluated in inference mode. Widths are traced: one compiled program per
side serves every width vector. Training's periodic evaluation calls
`score`; the search will vmap `path_moments` and `path_correct`.

As a command, it scores a trained supernet without writing anything:

  python -m bcnet_jax.evaluate --config=configs/demo.py --workdir=DIR \
      [--widths=4,8,...] [--config.eval.split=eval]
"""

from __future__ import annotations

import functools
import json
from typing import Any, Callable, Iterable

from absl import flags
from flax import traverse_util
import jax
import jax.numpy as jnp
import numpy as np

from bcnet_jax import app
from bcnet_jax import models
from bcnet_jax import paths
from bcnet_jax.models import layers

SIDES = {'left': paths.left, 'right': paths.right}


def calibration_model(model: layers.WidthModel) -> layers.WidthModel:
  """The model with BN momentum 0 (stats := the batch's) and no dropout."""
  off = {k: 0.0 for k in ('dropout_rate', 'drop_path_rate')
         if hasattr(model, k)}
  return model.clone(bn_momentum=0.0, parent=None, **off)


@functools.partial(jax.jit, static_argnames=('model', 'side'))
def path_moments(params, batch_stats, images, widths, *, model, side: str):
  """This batch's per-channel mean and E[x²] at every BatchNorm of a path."""
  ids = SIDES[side](model.space, widths)
  _, new = calibration_model(model).apply(
      {'params': params, 'batch_stats': batch_stats}, images, ids,
      train=True, mutable=['batch_stats'])
  flat = traverse_util.flatten_dict(new['batch_stats'])

  def second_moment(key, var):  # E[x²] = var + mean²
    return var + jnp.square(flat[key[:-1] + ('mean',)])

  return {k: v if k[-1] == 'mean' else second_moment(k, v)
          for k, v in flat.items()}


@functools.partial(jax.jit, static_argnames=('model', 'side'))
def path_correct(params, batch_stats, batch, widths, *, model, side: str):
  """Correctly classified examples of `batch` (its mask applied)."""
  ids = SIDES[side](model.space, widths)
  logits, _ = model.apply({'params': params, 'batch_stats': batch_stats},
                          batch['image'], ids, train=False)
  hit = jnp.argmax(logits[0], axis=-1) == batch['label']
  return jnp.sum(hit & batch['mask']), jnp.sum(batch['mask'])


def recalibrate(model, params, batch_stats, widths, side: str,
                calibration: Iterable[dict[str, Any]]) -> Any:
  """batch_stats with the path's channels set to pooled calibration stats."""
  total, count = None, 0
  for batch in calibration:  # summed on the host, in float64
    moments = jax.device_get(path_moments(
        params, batch_stats, batch['image'], widths, model=model, side=side))
    moments = {k: np.asarray(v, np.float64) for k, v in moments.items()}
    total = moments if total is None else {
        k: v + moments[k] for k, v in total.items()}
    count += 1
  if not count:
    raise ValueError('BN recalibration needs at least one calibration batch')
  mean = {k: v / count for k, v in total.items()}
  out = {k: (v if k[-1] == 'mean'
             else np.maximum(v - np.square(mean[k[:-1] + ('mean',)]), 0.0))
         for k, v in mean.items()}
  return traverse_util.unflatten_dict(
      {k: v.astype(np.float32) for k, v in out.items()})


def score(model, params, batch_stats, widths, *,
          calibration: Callable[[], Iterable[dict[str, Any]]],
          eval_batches: Callable[[], Iterable[dict[str, Any]]]
          ) -> dict[str, float]:
  """{'left', 'right', 'score', 'examples'}: recalibrated accuracies of L(c),
  R(c), their mean, and how many eval examples each was scored on.

  `calibration` and `eval_batches` are callables returning fresh iterables
  of device batches (calibration: image, label; eval: also mask).
  """
  widths = jnp.asarray(widths, jnp.int32)
  out = {}
  for side in SIDES:
    stats = recalibrate(model, params, batch_stats, widths, side,
                        calibration())
    correct = total = 0
    for batch in eval_batches():
      c, n = path_correct(params, stats, batch, widths, model=model,
                          side=side)
      correct, total = correct + int(c), total + int(n)
    out[side] = correct / max(total, 1)
  out['score'] = (out['left'] + out['right']) / 2
  out['examples'] = total
  return out


def fixed_widths(space, num_random: int, seed: int) -> dict[str, np.ndarray]:
  """The width vectors periodic evaluation follows, by name: 'smallest'
  (m bins in every group), 'full' (B bins: the nominal network) and
  'random0', 'random1'... (uniform, fixed by the seed)."""
  rng = np.random.default_rng([seed, 0xE7A1])
  out = {'smallest': space.smallest(), 'full': space.full()}
  for i in range(num_random):
    out[f'random{i}'] = space.sample(rng)
  return out


def _main(argv: list[str]) -> None:
  """`python -m bcnet_jax.evaluate`: prints the scores as one JSON line."""
  del argv
  # Imported here, not above: supernet imports this module.
  from bcnet_jax import supernet  # pylint: disable=g-import-not-at-top
  config = app.CONFIG.value
  widths = None
  if _WIDTHS.value:
    space = models.get_space(config.model.name, config.model.bins,
                             config.model.min_bins)
    widths = {'given': space.parse_widths(_WIDTHS.value)}
  result = supernet.evaluate_workdir(config, app.WORKDIR.value, widths)
  if jax.process_index() == 0:
    print(json.dumps(result), flush=True)


if __name__ == '__main__':
  # Defined only when run: importing this module defines no flag.
  _WIDTHS = flags.DEFINE_string(
      'widths', None, 'bins per group, comma-separated (default: the fixed '
      'width vectors of training\'s evaluation)')
  app.run(_main)
