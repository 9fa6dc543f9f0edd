"""Scalars to `workdir/metrics.jsonl` and TensorBoard event files.

Only process 0 writes. Event files come from tensorboardX, which needs no
TensorFlow. A run that starts again (from its last checkpoint, or from
scratch) redoes the steps after its start, so the writer first drops what
was recorded past that step: metrics.jsonl is rewritten atomically and holds
each step once; TensorBoard is told to hide the older events of those steps
(`purge_step`).
"""

from __future__ import annotations

import json
import os
from typing import Any, Iterator, Sequence

import jax
from tensorboardX import SummaryWriter

from bcnet_jax.run import files


def read_records(path: str) -> Iterator[dict[str, Any]]:
  """The records of a metrics.jsonl file; a line cut short by a killed
  process (the last one) is skipped."""
  if not os.path.exists(path):
    return
  with open(path) as f:
    for line in f:
      try:
        yield json.loads(line)
      except json.JSONDecodeError:
        continue


def drop_records_after(path: str, step: int,
                       redone_at_step: Sequence[str] = ()) -> None:
  """Rewrites the JSONL file at `path` without records past `step`, nor
  records at `step` with a key starting with one of `redone_at_step`."""
  if not os.path.exists(path):
    return

  def kept(record: dict[str, Any]) -> bool:
    if record['step'] == step:
      return not any(k.startswith(p) for k in record for p in redone_at_step)
    return record['step'] < step

  files.write_text_atomic(path, ''.join(
      json.dumps(r) + '\n' for r in read_records(path) if kept(r)))


def last_value(path: str, key: str) -> float | None:
  """The last value of `key` in the JSONL file at `path`, or None."""
  values = [r[key] for r in read_records(path) if key in r]
  return values[-1] if values else None


class MetricWriter:
  """Appends scalars per step; see the module docstring for restarts.

  Args:
    workdir: where metrics.jsonl and tensorboard/ live.
    start_step: the step training starts from (0, or the restored step).
    redone_at_start: key prefixes recorded at `start_step` that this run
      records again (an evaluation owed at the restored step).
  """

  def __init__(self, workdir: str, start_step: int = 0,
               redone_at_start: Sequence[str] = ()):
    self.active = jax.process_index() == 0
    if not self.active:
      return
    path = os.path.join(workdir, 'metrics.jsonl')
    drop_records_after(path, start_step, redone_at_start)
    self._jsonl = open(path, 'a')
    self._tb = SummaryWriter(os.path.join(workdir, 'tensorboard'),
                             purge_step=start_step + 1)

  def write(self, step: int, scalars: dict[str, Any]) -> None:
    if not self.active:
      return
    scalars = {k: float(v) for k, v in scalars.items()}
    self._jsonl.write(json.dumps({'step': step, **scalars}) + '\n')
    self._jsonl.flush()
    for name, value in scalars.items():
      self._tb.add_scalar(name, value, step)

  def close(self) -> None:
    if self.active:
      self._jsonl.close()
      self._tb.close()
