"""Evolution of width vectors (docs/design.md §5.4): numpy, seeded, legal.

Each generation the top-k width vectors scored so far are the parents of
the next population: mutations (every gene redrawn from the prior with a
small probability) and uniform crossovers of two parents. Every child is
legal: its cost (MACs or predicted latency) within the band [lo, hi], and
channels unlike every width vector already evaluated or drawn, so no
candidate is scored twice.

Near-identical parents (a peaked prior) or a small band can leave too few
new children. The generation is then filled as the initial population is
(prior.fill: prior draws, then uniform ones), and the counts say so; it is
short only when the band has no unscored width vector left.

Synopsis:

  rules = evolution.Rules(cost, probs, band=(lo, hi), top_k=10,
                          mutations=25, crossovers=25, mutation_prob=0.1)
  children, counts = rules.next_population(scores, seen, rng)
  # counts: {'bred': 50, 'prior': 0, 'uniform': 0} when breeding suffices
"""

from __future__ import annotations

import dataclasses

import numpy as np

from bcnet_jax.searching import prior
from bcnet_jax.space.costs import Cost

# Tries per wanted child before breeding gives way to prior.fill.
_TRIES_PER_CHILD = 200


@dataclasses.dataclass(frozen=True)
class Rules:
  """How a generation breeds the next, and the constants it does it by."""
  cost: Cost  # the constrained one
  probs: np.ndarray  # [G, B - m + 1]: the prior, for mutations
  band: tuple[float, float]
  top_k: int
  mutations: int
  crossovers: int
  mutation_prob: float

  def _legal(self, child: np.ndarray, seen: set[bytes]) -> bool:
    value = self.cost(child)
    key = self.cost.space.channel_key(child)
    if self.band[0] <= value <= self.band[1] and key not in seen:
      seen.add(key)
      return True
    return False

  def _mutant(self, parents: np.ndarray, rng: np.random.Generator
              ) -> np.ndarray:
    parent = parents[rng.integers(len(parents))]
    space = self.cost.space
    redraw = rng.random(space.num_groups) < self.mutation_prob
    drawn = prior.sample(space, self.probs, 1, rng)[0]
    return np.where(redraw, drawn, parent).astype(np.int32)

  def _cross(self, parents: np.ndarray, rng: np.random.Generator
             ) -> np.ndarray:
    a, b = parents[rng.choice(len(parents), 2, replace=len(parents) < 2)]
    return np.where(rng.random(len(a)) < 0.5, a, b).astype(np.int32)

  def parents(self, scores: dict[bytes, tuple[np.ndarray, float]]
              ) -> np.ndarray:
    """The top-k width vectors of `scores` ({key: (widths, score)}), best
    first; ties keep the order in which they were scored."""
    ranked = sorted(scores.values(), key=lambda item: -item[1])
    return np.stack([w for w, _ in ranked[:self.top_k]])

  def next_population(self, scores: dict[bytes, tuple[np.ndarray, float]],
                      seen: set[bytes], rng: np.random.Generator
                      ) -> tuple[np.ndarray, dict[str, int]]:
    """Mutations then crossovers of the parents, each legal; adds their keys
    to `seen`. Crossovers of near-identical parents can run out of new
    children: mutations then make up the shortfall, and the other way
    round; what breeding still lacks is filled by prior.fill.

    Returns:
      The children [k, G] int32, k = mutations + crossovers unless the band
      has fewer unscored width vectors left, and how many came from each
      source: {'bred': ..., 'prior': ..., 'uniform': ...}.
    """
    if not scores:
      raise ValueError('no scored width vectors to breed from')
    parents = self.parents(scores)
    out = []
    wanted = self.mutations + self.crossovers
    for make, count in ((self._mutant, self.mutations),
                        (self._cross, None), (self._mutant, None)):
      count = wanted - len(out) if count is None else count
      made = 0
      for _ in range(count * _TRIES_PER_CHILD):
        if made == count:
          break
        child = make(parents, rng)
        if self._legal(child, seen):
          out.append(child)
          made += 1
    bred = np.array(out, np.int32).reshape(-1, self.cost.space.num_groups)
    filled, counts = prior.fill(self.cost, self.probs, wanted - len(bred),
                                self.band, seen, rng)
    return np.concatenate([bred, filled]), {'bred': len(bred), **counts}
