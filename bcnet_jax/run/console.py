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
    return f'{seconds:.0f} s'
  if seconds < 90 * 60:
    return f'{seconds / 60:.0f} min'
  return f'{seconds / 3600:.1f} h'


def plural(count: int, noun: str) -> str:
  """'1 batch', '2 batches', '1 generation', '3 generations'."""
  if count == 1:
    return f'1 {noun}'
  return f'{count} {noun}es' if noun.endswith(('s', 'sh', 'ch', 'x')) else (
      f'{count} {noun}s')


class Estimate:
  """Says how long scoring `total` width vectors will take: after the first
  scored set (its time includes compiling, so an upper bound) and again
  after the second (the steady rate), with what to lower to go faster.

  Call it with (scored so far, total) as the evaluator's `status`; `offset`
  counts width vectors scored by earlier calls towards `total`.
  """

  def __init__(self, total: int, what: str, faster: str):
    self.total, self.what, self.faster = total, what, faster
    self.offset = 0
    self._times: list[tuple[int, float]] = [(0, time.perf_counter())]

  def __call__(self, done: int, total: int) -> None:
    del total  # of this call; self.total is of the whole work
    done += self.offset
    if done <= self._times[-1][0] or len(self._times) > 2:
      return
    self._times.append((done, time.perf_counter()))
    (first, start), (last, now) = self._times[-2], self._times[-1]
    left = self.total - last
    if left <= 0:
      return
    rate = (now - start) / (last - first)
    bound = 'at most ' if len(self._times) == 2 else ''
    when = ('compiling included' if len(self._times) == 2 else
            'at the rate since')
    say(f'  {last}/{self.total} {self.what} scored in '
        f'{duration(now - self._times[0][1])}: {bound}about '
        f'{duration(rate * left)} for the other {left} ({when}); '
        f'{self.faster}')


def table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
  """Columns padded to their widest cell, the first left-aligned."""
  cells = [list(header)] + [list(r) for r in rows]
  widths = [max(len(r[i]) for r in cells) for i in range(len(header))]
  return '\n'.join(
      '  '.join(c.ljust(w) if i == 0 else c.rjust(w)
                for i, (c, w) in enumerate(zip(r, widths))).rstrip()
      for r in cells)
