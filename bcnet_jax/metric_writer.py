"""Scalars to `workdir/metrics.jsonl` and TensorBoard event files.

Only process 0 writes. Event files come from tensorboardX, which needs no
TensorFlow.
"""

from __future__ import annotations

import json
import os
from typing import Any

import jax
from tensorboardX import SummaryWriter


class MetricWriter:

  def __init__(self, workdir: str):
    self.active = jax.process_index() == 0
    if self.active:
      self._jsonl = open(os.path.join(workdir, 'metrics.jsonl'), 'a')
      self._tb = SummaryWriter(os.path.join(workdir, 'tensorboard'))

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
