"""What a run shows its user: lines, a step bar, a table (process 0 only).

Lines go to stdout through tqdm, so they never break a bar on stderr. The
step bar says "compiling" until the first step is done and counts its rate
and ETA from then: a first step that includes compilation would otherwise
predict hours for a run of minutes.
"""

from __future__ import annotations

import time
from typing import Sequence

import jax
from tqdm import tqdm


def say(line: str = '') -> None:
  if jax.process_index() == 0:
    tqdm.write(line)


class StepBar:
  """A tqdm bar over training steps that knows about compilation."""

  def __init__(self, total: int, first_step: int):
    self._compiled = False
    self._bar = tqdm(total=total, initial=first_step, unit='step',
                     desc='compiling', mininterval=2.0, dynamic_ncols=True,
                     disable=jax.process_index() != 0)

  def step_done(self, done: int) -> None:
    if self._compiled:
      self._bar.update(1)
      return
    self._compiled = True  # time and rate from here, not from the start
    self._bar.reset()
    self._bar.initial = self._bar.n = self._bar.last_print_n = done
    self.status('training')

  def status(self, text: str) -> None:
    """Replaces the bar's description: what the run is doing now."""
    self._bar.set_description_str(text)

  def metrics(self, **values: str) -> None:
    self._bar.set_postfix(values)

  def close(self) -> None:
    self._bar.close()


def duration(seconds: float) -> str:
  """'45 s', '12 min', '3.2 h'."""
  if seconds < 90:
    return f'{max(seconds, 1):.0f} s'
  if seconds < 90 * 60:
    return f'{seconds / 60:.0f} min'
  return f'{seconds / 3600:.1f} h'


def plural(count: float, noun: str, nouns: str | None = None) -> str:
  """'1 batch', '2 batches', '1 generation', '3 generations'; `nouns`
  where the rule is wrong ('epoch', 'epochs'). A fraction keeps two
  significant digits below 1 ('0.042 epochs', never '0.0 epochs') and one
  decimal above ('2.5 epochs')."""
  if float(count).is_integer():
    figure = str(int(count))
  else:
    figure = f'{count:.2g}' if abs(count) < 1 else f'{count:.1f}'
  if figure == '1':
    return f'1 {noun}'
  if nouns is None:
    nouns = noun + ('es' if noun.endswith(('s', 'sh', 'ch', 'x')) else 's')
  return f'{figure} {nouns}'


class ScoringProgress:
  """How far scoring `total` width vectors has come: a tqdm bar (unless
  `bar` is False: the caller has its own) and two lines with the time the
  rest will take and what to lower to go faster (`faster`): after the first
  progress (its time includes compiling and the first BN calibration: an
  upper bound) and after the third (the rate since the second).

  Pass it as the evaluator's `status`: it is called with (scored, n) of
  each call, `scored` fractional within a call where the evaluator reports
  its batches, and counts the calls' width vectors towards `total`.
  """

  def __init__(self, total: int, faster: str, *, bar: bool = True):
    self.total, self.faster = total, faster
    self._base = 0.0  # scored by the calls before this one
    self._last = 0.0  # scored by this call so far
    self._times = [(0.0, time.perf_counter())]
    self._bar = tqdm(total=total, unit='width vector', dynamic_ncols=True,
                     bar_format='{l_bar}{bar}| {percentage:.0f}% '
                     '[{elapsed}<{remaining}]',
                     disable=not bar or jax.process_index() != 0)

  def __call__(self, done: float, n: int) -> None:
    del n  # of this call; self.total is of the whole work
    if done < self._last:  # a new call starts from 0
      self._base += self._last
    self._last = done
    scored = self._base + done
    self._bar.update(scored - self._bar.n)
    if scored > self._times[-1][0] and len(self._times) < 4:
      self._times.append((scored, time.perf_counter()))
      if len(self._times) in (2, 4):
        self._say_estimate()

  def _say_estimate(self) -> None:
    (first, start), (scored, now) = self._times[-2], self._times[-1]
    left = self.total - scored
    if left <= 0:
      return
    upper = len(self._times) == 2
    seconds = (now - start) / (scored - first) * left
    say(f'Scoring {self.total} width vectors: {scored / self.total:.0%} done '
        f'in {duration(now - self._times[0][1])}; '
        + ('at most ' if upper else '') + f'about {duration(seconds)} for '
        'the rest' + (' (compiling included)' if upper else '') +
        f'. {self.faster}')

  def close(self) -> None:
    self._bar.close()


def table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
  """Columns padded to their widest cell, the first left-aligned."""
  cells = [list(header)] + [list(r) for r in rows]
  widths = [max(len(r[i]) for r in cells) for i in range(len(header))]
  return '\n'.join(
      '  '.join(c.ljust(w) if i == 0 else c.rjust(w)
                for i, (c, w) in enumerate(zip(r, widths))).rstrip()
      for r in cells)
