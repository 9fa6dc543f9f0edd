"""The latency predictor: the per-layer table, corrected on whole networks.

predicted(c) = Σ_layers a_seg(l) · T_l[c] + Σ_streams δ_s[c[g_s]] + offset_ms

The table (layers.py) times each layer alone; a whole network runs them in
one program, with launch costs, fusions and memory traffic the layers alone
do not show. On a CPU most of that lives inside a stage of residual blocks
and follows the exact width of the stage's residual stream, not smoothly
(experiments/README.md, "Where the table's error lives"): so the
correction has a scale a_s for each stream's segment of layers
(layers.streams) and a value δ_s for each width of its stream group g_s,
fitted by ridge regression (on the δ only) to whole networks measured on
the same device (the full and smallest width vectors and random ones). The
penalty, or one scale and offset for every layer instead (the only choice
of a model without residual streams), is the one whose predictions of
each fitted network from the others rank them best (choose_correction).
Random networks measured apart from those, never fitted, give the
validation: the mean absolute percentage error and Kendall τ of the
predictions against the mean of two measurements of each, beside the same
figures for the table with one scale and offset, for MACs scaled by its own
fit and for the first measurement as a prediction of the second (how far
this device's timings repeat).

The latency file (`python -m bcnet_jax.latency`) holds the measurements and
the fitted correction; a file of another device, backend, thread setting or
model (or, resuming a build, batch or an earlier format) is an error naming
what differs (jax versions differing is said, not refused).

  cost, record = predictor.load(path, config, model)  # a Cost, the file
"""

from __future__ import annotations

from typing import Any

import numpy as np
from scipy import stats

from bcnet_jax.run import console
from bcnet_jax.run import errors
from bcnet_jax.run import files
from bcnet_jax.run import identity as identity_lib
from bcnet_jax.space.costs import Cost
from bcnet_jax.timing import clock
from bcnet_jax.timing import layers

# 2: layers timed one call each; the held-out networks measured twice.
# 3: the correction per stream segment (a scale and a value per width).
FORMAT = 'bcnet_jax.latency/3'
# A finished file of an earlier format still predicts (its cells and its
# one scale and offset were measured and fitted together), so a search
# reads it; a build resumes only a file of FORMAT.
READ_FORMATS = (FORMAT, 'bcnet_jax.latency/2', 'bcnet_jax.latency/1')
# The corrections a build tries (choose_correction): None, one scale and
# offset for every layer; a number, a scale per segment and a value per
# width of each stream with this ridge penalty on the values (latencies in
# units of the slowest fitted network: a value of a width few fitted
# networks have stays near 0). Each is scored by predicting each of the
# fit's networks from the others, in FOLDS folds.
RIDGES = (None, 1.0, 10.0, 100.0)
FOLDS = 5
# The config fields that make a model's networks what they are.
MODEL_FIELDS = ('model.name', 'model.bins', 'model.min_bins', 'model.kwargs',
                'model.round_to', 'input.resolution', 'input.channels')


def model_identity(config: Any, model) -> dict[str, Any]:
  """What the measured networks are: the config's model fields and the
  number of classes."""
  return identity_lib.of_config(config, MODEL_FIELDS,
                                num_classes=int(model.num_classes))


def fit(table_sums: np.ndarray, measured: np.ndarray
        ) -> tuple[float, float]:
  """(scale, offset) minimizing Σ (scale·sum + offset − measured)²."""
  design = np.stack([table_sums, np.ones_like(table_sums)], 1)
  (scale, offset), *_ = np.linalg.lstsq(design, measured, rcond=None)
  return float(scale), float(offset)


def errors_of(predicted: np.ndarray, measured: np.ndarray
              ) -> dict[str, float]:
  """{'mape': mean |predicted − measured| / measured, 'kendall_tau'}."""
  return {'mape': float(np.mean(np.abs(predicted - measured) / measured)),
          'kendall_tau': float(stats.kendalltau(predicted, measured)[0])}


def table_cost(model, cells: dict[str, float], step: int) -> Cost:
  """Σ the layers' tables (layers.tables of the measured cells), as a
  Cost."""
  return Cost(model.space, 'latency_ms', *layers.tables(model, cells, step))


def corrected_cost(model, cells: dict[str, float], step: int,
                   correction: dict[str, Any]) -> Cost:
  """The predictor: each layer's table times its segment's scale, plus each
  stream's δ at its group's width (a table of that group and none), plus
  the offset."""
  space = model.space
  tables, group_a, group_b = layers.tables(model, cells, step)
  stream_groups, segment = layers.streams(model)
  scales = np.asarray(correction['scales'])[segment]
  deltas = np.zeros((len(stream_groups), *tables.shape[1:]))
  deltas[:, :, 0] = np.asarray(correction['corrections_ms'],
                               float).reshape(deltas.shape[:2])
  return Cost(space, 'latency_ms',
              np.concatenate([scales[:, None, None] * tables, deltas]),
              np.concatenate([group_a, stream_groups]).astype(int),
              np.concatenate([group_b, [space.num_groups] *
                              len(stream_groups)]).astype(int),
              correction['offset_ms'])


def _one_scale(model, scale: float, offset_ms: float) -> dict[str, Any]:
  """One scale for every layer, no stream's value: the table's sum times
  scale plus offset, as a correction."""
  stream_groups, segment = layers.streams(model)
  space = model.space
  return {'scales': [float(scale)] * int(segment.max() + 1),
          'corrections_ms': np.zeros(
              (len(stream_groups), space.bins - space.min_bins + 1)).tolist(),
          'offset_ms': float(offset_ms)}


def fit_correction(model, cells: dict[str, float], step: int,
                   widths: np.ndarray, measured: np.ndarray,
                   ridge: float | None) -> dict[str, Any]:
  """The correction (corrected_cost's) minimizing Σ (predicted −
  measured)² + ridge · Σ δ², latencies in units of the slowest measured;
  ridge None: one scale and offset (no stream's own)."""
  space = model.space
  tables, group_a, group_b = layers.tables(model, cells, step)
  stream_groups, segment = layers.streams(model)
  if ridge is None:
    return {**_one_scale(model, *fit(
        Cost(space, 'latency_ms', tables, group_a, group_b)(widths),
        measured)), 'ridge': None}
  unit = float(np.max(measured))
  segment_sums = [
      Cost(space, 'latency_ms', tables[segment == s], group_a[segment == s],
           group_b[segment == s])(widths) / unit
      for s in range(segment.max() + 1)]
  bins = np.arange(space.min_bins, space.bins + 1)
  one_hots = [(widths[:, g, None] == bins).astype(float)
              for g in stream_groups]
  design = np.column_stack([*segment_sums, *one_hots,
                            np.ones(len(widths))])
  penalized = np.zeros(design.shape[1], bool)
  penalized[len(segment_sums):-1] = True
  penalty = np.sqrt(ridge) * np.eye(design.shape[1])[penalized]
  beta, *_ = np.linalg.lstsq(
      np.concatenate([design, penalty]),
      np.concatenate([measured / unit, np.zeros(len(penalty))]), rcond=None)
  return {'scales': beta[:len(segment_sums)].tolist(),
          'corrections_ms': (unit * beta[penalized]).reshape(
              len(stream_groups), len(bins)).tolist(),
          'offset_ms': unit * float(beta[-1]), 'ridge': ridge}


def choose_correction(model, cells: dict[str, float], step: int,
                      widths: np.ndarray, measured: np.ndarray
                      ) -> tuple[dict[str, Any], list[dict[str, Any]]]:
  """(the correction, fitted to all the networks, of the RIDGES candidate
  whose predictions of each network from the others (FOLDS folds) rank them
  best; [{'ridge', 'kendall_tau'} of each candidate]). The first best wins
  a tie: one scale before a correction per stream."""
  fold = np.random.default_rng(0).permutation(len(widths)) % FOLDS
  scores = []
  for ridge in RIDGES:
    predicted = np.empty(len(widths))
    for k in np.unique(fold):
      out = fold == k
      correction = fit_correction(model, cells, step, widths[~out],
                                  measured[~out], ridge)
      predicted[out] = corrected_cost(model, cells, step,
                                      correction)(widths[out])
    scores.append({'ridge': ridge, 'kendall_tau':
                   errors_of(predicted, measured)['kendall_tau']})
  best = max(scores, key=lambda score: score['kendall_tau'])['ridge']
  return fit_correction(model, cells, step, widths, measured, best), scores


def cost_of(model, record: dict[str, Any]) -> Cost:
  """The predictor of a latency record (its cells and correction)."""
  correction = record['correction']
  if 'scale' in correction:  # formats 1 and 2: one scale for every layer
    correction = _one_scale(model, correction['scale'],
                            correction['offset_ms'])
  return corrected_cost(model, record['cells'], record['plan']['step'],
                        correction)


def check(record: Any, path: str, *, model: dict[str, Any],
          device: dict[str, str], batch: int | None = None) -> None:
  """A latency file of another format, model, device or batch is an error
  naming what differs; another jax version is said."""
  found = record.get('format') if isinstance(record, dict) else None
  if found not in READ_FORMATS:
    raise errors.InvalidInput(
        f'{path} is not a latency file of format {FORMAT!r} (found '
        f'{found!r}): make one with python -m bcnet_jax.latency')
  wanted = {'model': model, 'device': {k: v for k, v in device.items()
                                       if k != 'jax'}}
  if batch is not None:
    wanted['batch'] = batch
  saved = {k: record.get(k) for k in wanted}
  saved['device'] = {k: v for k, v in (saved['device'] or {}).items()
                     if k != 'jax'}
  differing = identity_lib.differences(saved, wanted, saved_as='the file')
  if differing:
    raise errors.InvalidInput(
        f'{path} was measured for another model or device '
        f'({identity_lib.describe(differing)}): measure this one with '
        'python -m bcnet_jax.latency on the device the network is for')
  if record['device'].get('jax') != device['jax']:
    console.say(f'{path} was measured under jax {record["device"]["jax"]}; '
                f'this is jax {device["jax"]}: compiled programs may differ')


def load(path: str, config: Any, model) -> tuple[Cost, dict[str, Any]]:
  """(the predictor as a Cost, the file's record) of a finished latency
  file, checked against this model and this device."""
  record = files.read_json(path)
  check(record, path, model=model_identity(config, model),
        device=clock.device())
  if not record.get('complete'):
    raise errors.InvalidInput(
        f'{path} is not finished: rerun the python -m bcnet_jax.latency '
        'command that makes it (it resumes)')
  return cost_of(model, record), record
