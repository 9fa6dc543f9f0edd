"""The latency predictor: the per-layer table, corrected on networks.

predicted(c) = Σ_layers a_seg(l) · T_l[c] + Σ_streams δ_s[c[g_s]]
               + Σ_classes Σ_{g in class} δ_class[c[g]] + offset_ms

The table (layers.py) times each layer alone; a whole network runs them in
one program, with launch costs, fusions and memory traffic the layers alone
do not show. On the CPU measured (ResNet-20 on an Intel Xeon) most of
that lives inside a stage of residual blocks and follows the exact width of
the stage's residual stream, not smoothly (experiments/README.md, "Where
the table's error lives"): so the
correction has a scale a_s for each stream's segment of layers
(layers.streams), a value δ_s for each width of its stream group g_s and
one for each width of each class of alike groups of the segment (the mid
widths of a stage, whose layers repeat one shape: layers.alike_groups),
fitted by ridge regression (on the δ only) to networks measured on the
same device (the full and smallest width vectors and random ones), either
whole or by segment timed alone (segments.py; then scaled to the whole
networks). The fit and its penalty, or one scale and offset for every layer
instead (the only choice of a model without residual streams), are the
CANDIDATES candidate whose predictions of each fitted network from the
others rank them best (choose_correction).
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
# 4: the fit's networks' segments timed alone too; that correction fitted
#    to them or to the whole networks, whichever cross-validates better.
# 5: the correction's values per width of alike groups too.
FORMAT = 'bcnet_jax.latency/5'
# A finished file of an earlier format still predicts (its cells and its
# correction were measured and fitted together), so a search reads it; a
# build resumes a file of FORMAT (or an unfinished one of format 3 or 4).
READ_FORMATS = (FORMAT, 'bcnet_jax.latency/4', 'bcnet_jax.latency/3',
                'bcnet_jax.latency/2', 'bcnet_jax.latency/1')
# The corrections a build tries (choose_correction), as (fitted to, ridge):
# ('networks', None), one scale and offset for every layer; a ridge, a
# scale per segment and a value per width of each stream and each class of
# alike groups with this penalty on the values (latencies in units of the
# slowest fitted network: a value of a width few fitted networks have stays
# near 0), fitted to the whole networks or to their segments timed alone
# (then scaled to the networks).
# Each is scored by predicting each of the fit's networks from the others,
# in FOLDS folds.
CANDIDATES = (('networks', None),
              *((fitted_to, ridge) for fitted_to in ('networks', 'segments')
                for ridge in (0.1, 1.0, 10.0, 100.0)))
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


def table_cost(model, cells: dict[str, float], step: int, *,
               scale: float = 1.0, offset_ms: float = 0.0) -> Cost:
  """scale · Σ the layers' tables (layers.tables of the measured cells) +
  offset_ms, as a Cost: the predictor with one scale (every format's)."""
  tables, group_a, group_b = layers.tables(model, cells, step)
  return Cost(model.space, 'latency_ms', scale * tables, group_a, group_b,
              offset_ms)


def stream_cost(model, cells: dict[str, float], step: int,
                correction: dict[str, Any]) -> Cost:
  """The predictor with a correction per stream: each layer's table times
  its segment's scale, plus each stream's δ at its group's width and each
  alike group's class's δ at its width (a table of that group and none),
  plus the offset. Streams or classes other than the correction's (another
  version's layers.streams or alike_groups) are an error; a correction of
  format 3 or 4 has no classes."""
  space = model.space
  tables, group_a, group_b = layers.tables(model, cells, step)
  stream_groups, segment = layers.streams(model)
  names = lambda groups: [space.groups[g] for g in groups]  # noqa: E731
  found = f'{names(stream_groups)} ({segment.max() + 1} segments of layers)'
  saved = (f'{correction["streams"]} ({len(correction["scales"])} segments '
           'of layers)')
  alike = layers.alike_groups(model)
  classes = [names(groups) for _, groups in alike]
  # Formats 3 and 4 have no classes (and no values of theirs).
  saved_classes = correction.get('alike', 'none (an earlier format)')
  class_values = correction.get('alike_ms', [])
  if saved != found or saved_classes not in (classes,
                                             'none (an earlier format)'):
    raise errors.InvalidInput(
        f'the latency file\'s correction is for the residual streams '
        f'{saved} and alike groups {saved_classes} of {space.model}, and '
        f'this version finds {found} and {classes}: measure again with '
        'python -m bcnet_jax.latency (another --out)')
  if len(class_values) != len(correction.get('alike', [])):
    raise errors.InvalidInput(
        f'the latency file\'s correction has values for '
        f'{len(class_values)} classes of alike groups, not its '
        f'{len(correction.get("alike", []))} (the file was edited?): '
        'measure again with python -m bcnet_jax.latency (another --out)')
  scales = np.asarray(correction['scales'])[segment]
  valued = list(stream_groups)
  values = [np.asarray(row, float) for row in correction['corrections_ms']]
  for (_, groups), row in zip(alike, class_values):
    valued += groups
    values += [np.asarray(row, float)] * len(groups)
  deltas = np.zeros((len(valued), *tables.shape[1:]))
  deltas[:, :, 0] = np.reshape(values, deltas.shape[:2])
  return Cost(space, 'latency_ms',
              np.concatenate([scales[:, None, None] * tables, deltas]),
              np.concatenate([group_a, valued]).astype(int),
              np.concatenate([group_b,
                              [space.num_groups] * len(valued)]).astype(int),
              correction['offset_ms'])


def cost_of(model, record: dict[str, Any]) -> Cost:
  """The predictor of a latency record (its cells and correction)."""
  cells, step = record['cells'], record['plan']['step']
  correction = record['correction']
  if 'streams' in correction:
    return stream_cost(model, cells, step, correction)
  if 'scale' not in correction:
    raise errors.InvalidInput(
        f'the latency file\'s correction has neither one scale nor a '
        f'correction per stream (its keys: {sorted(correction)}): measure '
        'again with python -m bcnet_jax.latency (another --out)')
  return table_cost(model, cells, step, scale=correction['scale'],
                    offset_ms=correction['offset_ms'])


class _Features:
  """What the corrections are fitted on, for a set of networks: each
  segment's table sum, each stream group's width and each alike class's
  widths as one-hot columns (a class's: the sum of its groups'), the
  networks' latencies and (with streams) their segments' timed alone, in
  units of the slowest network (so that one ridge penalty suits any
  device)."""

  def __init__(self, model, cells: dict[str, float], step: int,
               widths: np.ndarray, measured: np.ndarray,
               segments_ms: np.ndarray | None):
    space = model.space
    tables, group_a, group_b = layers.tables(model, cells, step)
    stream_groups, segment = layers.streams(model)
    self.unit = float(np.max(measured))
    self.target = measured / self.unit
    self.segments = (None if segments_ms is None
                     else np.asarray(segments_ms) / self.unit)
    if (self.segments is not None and
        self.segments.shape != (len(widths), segment.max() + 1)):
      raise ValueError(f'segments timed alone of shape '
                       f'{self.segments.shape}, not (networks, segments) = '
                       f'{(len(widths), segment.max() + 1)}')
    self.sums = np.stack(
        [Cost(space, 'latency_ms', tables[segment == s],
              group_a[segment == s], group_b[segment == s])(widths)
         for s in range(segment.max() + 1)], 1) / self.unit
    bins = np.arange(space.min_bins, space.bins + 1)
    one_hot = lambda groups: sum(  # noqa: E731
        (widths[:, g, None] == bins).astype(float) for g in groups)
    classes = layers.alike_groups(model)
    # (columns, segment) per stream (stream s begins segment s), then per
    # class: what a value per width multiplies.
    self.one_hots = ([(one_hot([g]), s)
                      for s, g in enumerate(stream_groups)] +
                     [(one_hot(groups), s) for s, groups in classes])
    self.streams = [space.groups[g] for g in stream_groups]
    self.classes = [[space.groups[g] for g in groups] for _, groups in classes]
    self.bins = len(bins)

  def design(self, ridge: float | None) -> np.ndarray:
    """The design matrix a candidate's coefficients multiply: the table's
    sum and 1 (ridge None); per stream, each segment's sum, the one-hot
    widths of each stream and class and 1."""
    ones = np.ones((len(self.sums), 1))
    if ridge is None:
      return np.concatenate([self.sums.sum(1, keepdims=True), ones], 1)
    return np.concatenate([self.sums, *(c for c, _ in self.one_hots), ones],
                          1)

  def solve(self, candidate: tuple[str, float | None], rows: np.ndarray
            ) -> np.ndarray:
    """The coefficients of a CANDIDATES candidate fitted to `rows` (a
    boolean mask): least squares, plus ridge · Σ values² (in the unit)."""
    fitted_to, ridge = candidate
    if ridge is None:
      return np.array(fit(self.sums.sum(1)[rows], self.target[rows]))
    if fitted_to == 'networks':
      return _ridge(self.design(ridge)[rows], self.target[rows], ridge,
                    penalized=slice(self.sums.shape[1], -1))
    return self._solve_by_segment(ridge, rows)

  def _solve_by_segment(self, ridge: float, rows: np.ndarray) -> np.ndarray:
    """Each segment timed alone as its table's sum times a scale, plus the
    values of its stream's and classes' widths, plus a constant; then the
    networks as one scale times the segments' sum plus an offset,
    multiplied into the coefficients."""
    if self.segments is None:
      raise ValueError('a correction per stream fitted to segments needs '
                       'the networks\' segments timed alone: none given')
    count = self.sums.shape[1]
    beta = np.zeros(count + self.bins * len(self.one_hots) + 1)
    predicted = np.zeros(len(self.sums))
    for s in range(count):
      mine = [i for i, (_, segment) in enumerate(self.one_hots)
              if segment == s]
      design = np.concatenate([self.sums[:, s:s + 1],
                               *(self.one_hots[i][0] for i in mine),
                               np.ones((len(self.sums), 1))], 1)
      part = _ridge(design[rows], self.segments[rows, s], ridge,
                    penalized=slice(1, -1))
      predicted += design @ part
      # Its scale, its values (where design() has them), its constant.
      columns = np.concatenate(
          [[s], *(count + self.bins * i + np.arange(self.bins)
                  for i in mine)])
      beta[columns] = part[:-1]
      beta[-1] += part[-1]
    scale, offset = fit(predicted[rows], self.target[rows])
    beta *= scale
    beta[-1] += offset
    return beta

  def correction(self, candidate: tuple[str, float | None]
                 ) -> dict[str, Any]:
    """The candidate fitted to every network, as a latency file keeps it."""
    beta = self.solve(candidate, np.ones(len(self.sums), bool))
    fitted_to, ridge = candidate
    if ridge is None:
      return {'ridge': None, 'scale': float(beta[0]),
              'offset_ms': self.unit * float(beta[1])}
    segments = self.sums.shape[1]
    values = (self.unit * beta[segments:-1]).reshape(len(self.one_hots),
                                                     self.bins).tolist()
    return {'ridge': ridge, 'fitted_to': fitted_to, 'streams': self.streams,
            'scales': beta[:segments].tolist(),
            'corrections_ms': values[:len(self.streams)],
            'alike': self.classes, 'alike_ms': values[len(self.streams):],
            'offset_ms': self.unit * float(beta[-1])}


def _ridge(design: np.ndarray, target: np.ndarray, ridge: float, *,
           penalized: slice) -> np.ndarray:
  """The coefficients minimizing |design·β − target|² +
  ridge·|β[penalized]|²."""
  penalty = np.sqrt(ridge) * np.eye(design.shape[1])[penalized]
  return np.linalg.lstsq(np.concatenate([design, penalty]),
                         np.concatenate([target, np.zeros(len(penalty))]),
                         rcond=None)[0]


def fit_correction(model, cells: dict[str, float], step: int,
                   widths: np.ndarray, measured: np.ndarray,
                   segments_ms: np.ndarray | None,
                   candidate: tuple[str, float | None]) -> dict[str, Any]:
  """The correction (cost_of's) of a CANDIDATES candidate fitted to
  networks of `widths` measured whole (`measured`) and by segment
  (`segments_ms`, [networks, segments]; needed for a fit to segments
  only)."""
  return _Features(model, cells, step, widths, measured,
                   segments_ms).correction(candidate)


def choose_correction(model, cells: dict[str, float], step: int,
                      widths: np.ndarray, measured: np.ndarray,
                      segments_ms: np.ndarray | None
                      ) -> tuple[dict[str, Any], list[dict[str, Any]]]:
  """(the correction, fitted to all the networks, of the CANDIDATES
  candidate whose predictions of each network from the others (FOLDS
  folds) rank them best; [{'fitted_to', 'ridge', 'kendall_tau'} of each
  candidate, None if not tried, and 'dropped': why, if it ranked better but
  was not kept]).

  One scale wins a tie. A correction per stream is not tried for a model
  without streams, nor where a fold leaves no more than twice as many
  networks as it has scales and offset (too few to estimate them), nor
  fitted to segments without segments timed; it is not kept if a scale it
  fits is not positive."""
  features = _Features(model, cells, step, widths, measured, segments_ms)
  fold = np.random.default_rng(0).permutation(len(widths)) % FOLDS
  fewest = min(np.sum(fold != k) for k in np.unique(fold))
  per_stream = bool(features.streams) and fewest > 2 * (
      features.sums.shape[1] + 1)
  scores = []
  for fitted_to, ridge in CANDIDATES:
    score = {'fitted_to': fitted_to, 'ridge': ridge, 'kendall_tau': None}
    scores.append(score)
    unfit = ridge is not None and not per_stream
    untimed = fitted_to == 'segments' and segments_ms is None
    if unfit or untimed:
      continue
    design = features.design(ridge)
    predicted = np.empty(len(widths))
    for k in np.unique(fold):
      predicted[fold == k] = (design[fold == k] @ features.solve(
          (fitted_to, ridge), fold != k))
    score['kendall_tau'] = errors_of(predicted,
                                     features.target)['kendall_tau']
  ranked = sorted((s for s in scores if s['kendall_tau'] is not None),
                  key=lambda s: -np.nan_to_num(s['kendall_tau'], nan=-2))
  for score in ranked:  # one scale among them: the last to fall back on
    correction = features.correction((score['fitted_to'], score['ridge']))
    if score['ridge'] is None or min(correction['scales']) > 0:
      break
    score['dropped'] = 'a scale not positive'
  return correction, scores


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
