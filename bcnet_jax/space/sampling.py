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

from bcnet_jax.run import errors
from bcnet_jax.space.search_space import SearchSpace

OBJECTIVES = ('bcnet', 'ua')


def widths_for_step(space: SearchSpace, seed: int, step: int) -> np.ndarray:
  """Uniform bins per group, drawn from a Generator seeded by (seed, step)."""
  return space.sample(np.random.default_rng([seed, step]))


def subnetwork_table(objective: str, complementary: bool
                     ) -> tuple[tuple[str, bool], ...]:
  """The sub-networks a step trains, in the order of its path losses, as
  (side, whether of the complement) (docs/design.md §3).

  bcnet: L(c), R(c), L(c̄), R(c̄) (the last two only with complementary);
  ua: L(c).
  """
  check_objective(objective)
  if objective == 'ua':
    return (('left', False),)
  if not complementary:
    return (('left', False), ('right', False))
  return (('left', False), ('right', False), ('left', True), ('right', True))


def subnetworks(space: SearchSpace, widths, *, objective: str,
                complementary: bool) -> list[tuple[str, np.ndarray]]:
  """The (side, widths) sub-networks one step trains, as in
  `subnetwork_table`."""
  c = space.validate_widths(widths)
  cbar = space.complement(c)
  return [(side, cbar if of_complement else c) for side, of_complement in
          subnetwork_table(objective, complementary)]


def check_objective(objective: str) -> None:
  if objective not in OBJECTIVES:
    raise errors.InvalidInput(f'objective must be one of {OBJECTIVES}, got '
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
