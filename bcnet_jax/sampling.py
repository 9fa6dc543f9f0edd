"""Host-side width sampling and per-step channel usage (fairness).

The width vector of a step is a pure function of (seed, step): the same on
every host and after a resume, with no state to checkpoint (docs/design.md §3).

Synopsis:

  c = sampling.widths_for_step(space, seed=0, step=1234)   # [G] int32
  usage = sampling.channel_usage(space, c, objective='bcnet',
                                 complementary=True)       # dim -> [C'] counts
"""

from __future__ import annotations

import numpy as np

from bcnet_jax.space import SearchSpace

OBJECTIVES = ('bcnet', 'ua')


def widths_for_step(space: SearchSpace, seed: int, step: int) -> np.ndarray:
  """Uniform bins per group, drawn from a Generator seeded by (seed, step)."""
  return space.sample(np.random.default_rng([seed, step]))


def subnetworks(space: SearchSpace, widths, *, objective: str,
                complementary: bool) -> list[tuple[str, np.ndarray]]:
  """The (side, widths) sub-networks one step trains (docs/design.md §3).

  bcnet: L(c), R(c̄), R(c), L(c̄) (the last two only with complementary);
  without complementary: L(c), R(c); ua: L(c).
  """
  check_objective(objective)
  c = space.validate_widths(widths)
  if objective == 'ua':
    return [('left', c)]
  if not complementary:
    return [('left', c), ('right', c)]
  cbar = space.complement(c)
  return [('left', c), ('right', cbar), ('right', c), ('left', cbar)]


def check_objective(objective: str) -> None:
  if objective not in OBJECTIVES:
    raise ValueError(f'objective must be one of {OBJECTIVES}, got '
                     f'{objective!r}')


def channel_usage(space: SearchSpace, widths, *, objective: str,
                  complementary: bool) -> dict[str, np.ndarray]:
  """Per dim, how many sub-networks of one step used each supernet channel."""
  counts = {d.name: np.zeros(d.supernet_channels, np.int64)
            for d in space.dims}
  for side, c in subnetworks(space, widths, objective=objective,
                             complementary=complementary):
    for name, index in space.channel_indices(c, side).items():
      counts[name][index] += 1
  return counts
