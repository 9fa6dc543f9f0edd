"""The architectures a Channel-Bench-Macro run scores: every one of the
space's 4^7, or a seeded sample with equal counts per MACs quintile.

Keys are the benchmark's: one digit per layer, the bins of its width
(1..4 = 0.25..1.0 of the nominal channels), e.g. "4432214".
"""

from __future__ import annotations

import itertools

import numpy as np

from bcnet_jax import models
from bcnet_jax.run import errors
from bcnet_jax.space.costs import CostModel

SPACES = {'mobilenet': 'cbm_mobilenet', 'resnet': 'cbm_resnet'}
QUINTILES = 5


def benchmark_costs(space: str) -> CostModel:
  """The cost model of the space's network as the benchmark trains it
  (32x32 RGB, 10 classes): its MACs are the results file's "flops"."""
  return CostModel(models.get_model(SPACES[space]))


def all_keys(space: str) -> list[str]:
  """Every architecture of the space, in key order."""
  model_space = benchmark_costs(space).space
  digits = range(model_space.min_bins, model_space.bins + 1)
  return [''.join(map(str, c))
          for c in itertools.product(digits, repeat=model_space.num_groups)]


def widths(key: str) -> np.ndarray:
  return np.asarray([int(d) for d in key], np.int32)


def quintiles(space: str) -> dict[str, int]:
  """{key: 0..4}: the MACs quintile of every architecture of the space
  (ordered by MACs, ties by key; each quintile a fifth of the space)."""
  keys = all_keys(space)
  macs = benchmark_costs(space).macs(np.stack([widths(k) for k in keys]))
  order = sorted(range(len(keys)), key=lambda i: (macs[i], keys[i]))
  return {keys[i]: rank * QUINTILES // len(keys)
          for rank, i in enumerate(order)}


def draw(space: str, size: int | None, seed: int) -> list[str]:
  """Sorted keys: all of the space (size None), or size // 5 drawn
  uniformly without replacement from each MACs quintile, fixed by seed."""
  strata = quintiles(space)
  if size is None:
    return sorted(strata)
  if size < QUINTILES or size % QUINTILES:
    raise errors.InvalidInput(f'a sample size must be a positive multiple of '
                     f'{QUINTILES} (equal counts per MACs quintile), got '
                     f'{size}')
  rng = np.random.default_rng([seed, 0xCB3])
  out = []
  for q in range(QUINTILES):
    members = sorted(k for k, s in strata.items() if s == q)
    if size // QUINTILES > len(members):
      raise errors.InvalidInput(
          f'a sample of {size} needs {size // QUINTILES} per '
          f'quintile; the space has {len(members)}')
    out += list(rng.choice(members, size // QUINTILES, replace=False))
  return sorted(str(k) for k in out)
