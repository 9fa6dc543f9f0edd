"""Scalars to `workdir/metrics.jsonl` and TensorBoard event files.

Only process 0 writes. Event files come from tensorboardX, which needs no
TensorFlow. A resumed run redoes the steps after its checkpoint, so the
writer first drops what was recorded past that step (metrics.jsonl is
rewritten atomically; TensorBoard is told to hide those events with
`purge_step`): each step appears once.
"""

from __future__ import annotations

import json
import os
from typing import Any, Sequence

import jax
from tensorboardX import SummaryWriter

from bcnet_jax import files


def drop_records_after(path: str, step: int,
                       redone_at_step: Sequence[str] = ()) -> None:
  """Rewrites the JSONL file at `path` without records past `step`, nor
  records at `step` with a key starting with one of `redone_at_step`."""
  if not os.path.exists(path):
    return
  with open(path) as f:
    lines = f.read().splitlines()

  def kept(line: str) -> bool:
    record = json.loads(line)
    if record['step'] == step:
      return not any(k.startswith(p) for k in record for p in redone_at_step)
    return record['step'] < step

  out = [line for line in lines if line.strip() and kept(line)]
  if len(out) != len(lines):
    files.write_text_atomic(path, ''.join(f'{line}\n' for line in out))


def last_value(path: str, key: str) -> float | None:
  """The last value of `key` recorded in the JSONL file at `path`."""
  value = None
  if os.path.exists(path):
    with open(path) as f:
      for line in f:
        value = json.loads(line).get(key, value) if line.strip() else value
  return value


class MetricWriter:
  """Appends scalars per step; see the module docstring for resuming.

  Args:
    workdir: where metrics.jsonl and tensorboard/ live.
    start_step: the step training starts from (0, or the restored step).
    redone_at_start: key prefixes recorded at `start_step` that this run
      records again (the final evaluation, when resuming at the last step).
  """

  def __init__(self, workdir: str, start_step: int = 0,
               redone_at_start: Sequence[str] = ()):
    self.active = jax.process_index() == 0
    if not self.active:
      return
    path = os.path.join(workdir, 'metrics.jsonl')
    if start_step:
      drop_records_after(path, start_step, redone_at_start)
    self._jsonl = open(path, 'a')
    self._tb = SummaryWriter(os.path.join(workdir, 'tensorboard'),
                             purge_step=start_step + 1 if start_step else None)

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
