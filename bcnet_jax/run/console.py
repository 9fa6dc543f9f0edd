"""What a run shows its user: lines, a step bar, a table (process 0 only).

Lines go to stdout through tqdm, so they never break a bar on stderr. The
step bar says "compiling" until the first step is done and counts its rate
and ETA from then: a first step that includes compilation would otherwise
predict hours for a run of minutes.
"""

from __future__ import annotations

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


def table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
  """Columns padded to their widest cell, the first left-aligned."""
  cells = [list(header)] + [list(r) for r in rows]
  widths = [max(len(r[i]) for r in cells) for i in range(len(header))]
  return '\n'.join(
      '  '.join(c.ljust(w) if i == 0 else c.rjust(w)
                for i, (c, w) in enumerate(zip(r, widths))).rstrip()
      for r in cells)
