"""The latency predictor: the per-layer table, corrected on whole networks.

predicted(c) = scale · Σ_layers T_l[c] + offset_ms

The table (layers.py) times each layer alone; a whole network runs them in
one program, with launch costs, fusions and memory traffic the layers alone
do not show. `scale` and `offset_ms` are fitted by least squares to whole
networks measured on the same device (the full and smallest width vectors
and random ones); random networks measured apart from those, never fitted,
give the validation: the mean absolute percentage error and Kendall τ of
the predictions against the mean of two measurements of each, beside the
same figures for MACs scaled by its own fit and for the first measurement
as a prediction of the second (how far this device's timings repeat).

The latency file (`python -m bcnet_jax.latency`) holds the measurements,
not the predictor: the predictor is rebuilt from them, and a file of
another device, backend, thread setting or model (or, resuming a build,
batch or an earlier format) is an error naming what differs (jax versions
differing is said, not refused).

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
FORMAT = 'bcnet_jax.latency/2'
# A finished file of an earlier format still predicts (its cells and its
# correction were measured and fitted together), so a search reads it; a
# build resumes only a file of FORMAT.
READ_FORMATS = (FORMAT, 'bcnet_jax.latency/1')
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


def table_cost(model, cells: dict[str, float], step: int, *,
               scale: float = 1.0, offset_ms: float = 0.0) -> Cost:
  """scale · Σ the layers' tables (layers.tables of the measured cells) +
  offset_ms, as a Cost."""
  tables, group_a, group_b = layers.tables(model, cells, step)
  return Cost(model.space, 'latency_ms', scale * tables, group_a, group_b,
              offset_ms)


def cost_of(model, record: dict[str, Any]) -> Cost:
  """The predictor of a latency record (its cells and correction)."""
  return table_cost(model, record['cells'], record['plan']['step'],
                    **record['correction'])


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
