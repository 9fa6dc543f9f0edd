"""Building a latency file: the per-layer table, whole networks, the fit's
networks' segments, the fit and its validation, each saved as it is
measured, so that a rerun resumes.

The file is replaced atomically every few seconds of cells and after each
turn of whole networks or segments (those of up to 50 networks timed
together, in turns: an interrupted turn is measured again from its start);
a rerun with another model, device or batch is an error naming what
differs (predictor.check), never a file overwritten. Networks are drawn
from a fixed seed: a resumed build measures the ones an uninterrupted
build would.

  record = build.Build(config, model, path, batch=1, repeats=20, step=3,
                       fit_networks=100, networks=30).run()
"""

from __future__ import annotations

import itertools
import os
import time
from typing import Any, Callable, Iterator

import numpy as np
from tqdm import tqdm

from bcnet_jax.run import errors
from bcnet_jax.run import files
from bcnet_jax.space.costs import CostModel
from bcnet_jax.timing import clock
from bcnet_jax.timing import layers
from bcnet_jax.timing import predictor
from bcnet_jax.timing import segments

_SAVE_EVERY_S = 10.0
# Cells compiled at once, before they are timed one by one.
_CELLS_PER_COMPILE = 64
# Networks (whole, or their segments) compiled and held at once (timed in
# turns, then saved): an interrupted build measures at most these again.
_NETWORKS_PER_TURN = 50
# An unfinished file of these formats measured as this version does (all
# but format 3's segments): its build resumes (and times them), fitting
# this version's correction.
_RESUMABLE_FORMATS = ('bcnet_jax.latency/4', 'bcnet_jax.latency/3')


class Build:
  """One latency file, built or resumed."""

  def __init__(self, config: Any, model, path: str, *, batch: int,
               repeats: int, step: int, fit_networks: int, networks: int):
    for name, value, low in (('batch', batch, 1), ('repeats', repeats, 3),
                             ('step', step, 1),
                             ('fit_networks', fit_networks, 1),
                             ('networks', networks, 3)):
      if value < low:
        raise errors.InvalidInput(f'--{name}={value} must be >= {low}')
    layers.check_supported(model)
    self.model, self.path, self.repeats, self.step = (model, path, repeats,
                                                      step)
    identity = {'model': predictor.model_identity(config, model),
                'device': clock.device(), 'batch': batch}
    plan = {'repeats': repeats, 'step': step, 'fit_networks': fit_networks,
            'networks': networks}
    if os.path.exists(path):
      self.record = files.read_json(path)
      predictor.check(self.record, path, model=identity['model'],
                      device=identity['device'], batch=batch)
      if (self.record['format'] in _RESUMABLE_FORMATS and
          not self.record['complete']):
        self.record.setdefault('segments', [])
        self.record['format'] = predictor.FORMAT
      if self.record['format'] != predictor.FORMAT:
        raise errors.InvalidInput(
            f'{path} was made by an earlier version (format '
            f'{self.record["format"]!r}; this one writes '
            f'{predictor.FORMAT!r}, whose correction also has values per '
            'width of alike groups) and cannot be resumed or extended: give '
            'another --out (a search still reads the file as it is)')
      differing = [f'--{k}: the file {self.record["plan"].get(k)}, now {v}'
                   for k, v in plan.items()
                   if self.record['plan'].get(k) != v]
      if differing:
        raise errors.InvalidInput(
            f'{path} is being measured with other settings ('
            f'{"; ".join(differing)}): rerun with its settings to resume, '
            'or give another --out')
    else:
      self.record = {'format': predictor.FORMAT, **identity, 'plan': plan,
                     'complete': False, 'cells': {}, 'networks': [],
                     'segments': []}
    space = model.space
    rng = np.random.default_rng(0)
    random = space.sample(rng, fit_networks + networks)
    # (role, widths): the fit's networks, the held-out ones, then the
    # held-out ones again (compiled again): their mean is what predictions
    # are validated against, their difference how far a measurement here
    # repeats.
    held_out = random[fit_networks:]
    self.plan = ([('fit', space.full()), ('fit', space.smallest())] +
                 [('fit', c) for c in random[:fit_networks]] +
                 [('validation', c) for c in held_out] +
                 [('again', c) for c in held_out])

  def _save(self) -> None:
    files.write_json_atomic(self.path, self.record)

  def measure_cells(self) -> None:
    """Times the cells not in the file yet, each against a reference cell
    (clock.ratio): ms = ratio · the reference's."""
    record, space = self.record, self.model.space
    cells = layers.cells(self.model, self.step)
    todo = [k for k in cells if k not in record['cells']]
    # The reference: a middling cell (by MACs per pixel), long enough that
    # its launch jitter does not swamp the ratios.
    ranked = sorted(cells, key=lambda k: (cells[k].in_channels *
                                          cells[k].out_channels))
    reference = layers.runner(cells[ranked[len(ranked) // 2]], space,
                              batch=record['batch'])
    if 'reference_ms' not in record:
      record['reference_ms'] = clock.median_ms(
          *reference, repeats=self.repeats)[0]
    saved = time.monotonic()
    bar = tqdm(total=len(todo), desc='layers', unit='cell',
               dynamic_ncols=True)
    for start in range(0, len(todo), _CELLS_PER_COMPILE):
      keys = todo[start:start + _CELLS_PER_COMPILE]
      runners = [layers.runner(cells[key], space, batch=record['batch'])
                 for key in keys]
      clock.compile_all(runners)
      for key, runner in zip(keys, runners):
        times, _ = clock.ratio(*runner, *reference, repeats=self.repeats)
        record['cells'][key] = times * record['reference_ms']
        bar.update()
        if time.monotonic() - saved > _SAVE_EVERY_S:
          self._save()
          saved = time.monotonic()
    bar.close()
    self._save()

  def measure_networks(self) -> None:
    """Times the whole networks of the plan not in the file yet against the
    full network (clock.ratios): ms = ratio · full_ms. The networks of one
    role (the fit's, the held-out ones, their second measurement) are
    timed in turns, up to _NETWORKS_PER_TURN at a time (in turns of equal
    size), and saved together."""
    record = self.record
    reference = clock.network_runner(self.model, self.plan[0][1],
                                     batch=record['batch'])
    if 'full_ms' not in record:
      record['full_ms'] = clock.median_ms(*reference,
                                          repeats=self.repeats)[0]
    todo = self.plan[len(record['networks']):]
    for role, group in itertools.groupby(todo, key=lambda entry: entry[0]):
      for chunk, times, noise in self._in_turns(
          [w for _, w in group], reference, f'networks ({role})',
          lambda w: [clock.network_runner(self.model, w,
                                          batch=record['batch'])]):
        record['networks'].extend(
            {'role': role, 'widths': [int(x) for x in w],
             'ms': float(t[0]) * record['full_ms'], 'noise': float(n[0])}
            for w, t, n in zip(chunk, times, noise))
        self._save()

  def measure_segments(self) -> None:
    """Times each segment of the fit's networks alone (segments.py), in
    turns like the networks, against the smallest network's first segment
    (short: its calls between theirs cost little): ms = ratio · its ms. A
    model of one segment (no residual stream, or one) has nothing to time
    apart from its networks."""
    record, model = self.record, self.model
    fitted = [w for role, w in self.plan if role == 'fit']
    todo = fitted[len(record['segments']):]
    if layers.streams(model)[1].max() == 0 or not todo:
      return
    batch = record['batch']
    reference = segments.runners(model, model.space.smallest(),
                                 batch=batch)[0]
    if 'segment_reference_ms' not in record:
      record['segment_reference_ms'] = clock.median_ms(
          *reference, repeats=self.repeats)[0]
    for chunk, times, _ in self._in_turns(
        todo, reference, 'segments (fit)',
        lambda w: segments.runners(model, w, batch=batch)):
      record['segments'].extend(
          {'widths': [int(x) for x in w],
           'ms': (t * record['segment_reference_ms']).tolist()}
          for w, t in zip(chunk, times))
      self._save()

  def _in_turns(self, widths: list[Any], reference, desc: str,
                runners_of: Callable[[Any], list[Any]]
                ) -> Iterator[tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """(width vectors, [their runners' ratios to the reference], [noise]),
    of `widths` in turns of equal size, up to _NETWORKS_PER_TURN width
    vectors each: their runners (runners_of) compiled together and timed in
    turns (clock.ratios), then let go before the next turn's."""
    turns = -(-len(widths) // _NETWORKS_PER_TURN)
    for chunk in np.array_split(np.array(widths), turns):
      runners = [runners_of(w) for w in chunk]
      times, noise = clock.ratios([r for each in runners for r in each],
                                  *reference, repeats=self.repeats,
                                  desc=desc)
      shape = (len(chunk), len(runners[0]))
      del runners  # not alive beside the next ones
      yield chunk, times.reshape(shape), noise.reshape(shape)

  def finish(self) -> None:
    """The correction, the validation and the figures a search reads."""
    record = self.record
    nets = record['networks']
    widths = np.array([n['widths'] for n in nets])
    measured = np.array([n['ms'] for n in nets])
    role = np.array([n['role'] for n in nets])
    fitted, held_out = role == 'fit', role == 'validation'
    again = role == 'again'
    if not np.array_equal(widths[held_out], widths[again]):
      raise errors.InvalidInput(
          f'{self.path}: its held-out networks and their second measurements '
          'are not the same width vectors (the file was edited?): measure '
          'again with another --out')
    first, second = measured[held_out], measured[again]
    truth = 0.5 * (first + second)

    def validated(cost):
      """(scale, offset) fitted on the fit's networks; the errors of
      scale·cost + offset on the held-out ones."""
      x = cost(widths)
      scale, offset = predictor.fit(x[fitted], measured[fitted])
      return scale, offset, predictor.errors_of(
          scale * x[held_out] + offset, truth)

    scale, _, table_errors = validated(
        predictor.table_cost(self.model, record['cells'], self.step))
    if scale <= 0:
      raise errors.InvalidInput(
          f'{self.path}: whole networks\' latency does not grow with the '
          f'layers\' (fitted scale {scale:.3g}): the measurements are '
          'noise. Measure again (another --out) with a larger --batch or '
          'more --repeats')
    *_, macs_errors = validated(CostModel(self.model).macs_cost())
    segments_ms = None  # one segment: the network, fitted as such
    count = layers.streams(self.model)[1].max() + 1
    if count > 1:
      if not (np.array_equal([n['widths'] for n in record['segments']],
                             widths[fitted]) and
              all(len(n['ms']) == count for n in record['segments'])):
        raise errors.InvalidInput(
            f'{self.path}: its segments timed alone are not the fit\'s '
            f'networks\' {count} segments (the file was edited?): measure '
            'again with another --out')
      segments_ms = np.array([n['ms'] for n in record['segments']])
    record['correction'], record['cross_validation'] = (
        predictor.choose_correction(self.model, record['cells'], self.step,
                                    widths[fitted], measured[fitted],
                                    segments_ms))
    errors_ = predictor.errors_of(
        predictor.cost_of(self.model, record)(widths[held_out]), truth)
    # The first measurement as a prediction of the second.
    repeat_errors = predictor.errors_of(first, second)
    record['validation'] = {
        **errors_, **{f'table_{k}': v for k, v in table_errors.items()},
        **{f'macs_{k}': v for k, v in macs_errors.items()},
        **{f'repeat_{k}': v for k, v in repeat_errors.items()},
        'networks': int(held_out.sum())}
    record['smallest_ms'] = nets[1]['ms']
    record['noise'] = float(np.median([n['noise'] for n in nets]))
    record['complete'] = True
    self._save()

  def run(self) -> dict[str, Any]:
    if not self.record['complete']:
      self.measure_cells()
      self.measure_networks()
      self.measure_segments()
      self.finish()
    return self.record
