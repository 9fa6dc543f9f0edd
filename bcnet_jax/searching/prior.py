"""The search's prior (docs/design.md §5): width distributions fitted to the
loss records, and the initial population they seed.

During supernet training the loss pool keeps the lowest bilateral losses
with their width vectors. `loss_table` turns them into E[g, w], the mean
loss of the records whose group g has w bins; `fit` finds per-group
distributions p_g = softmax(θ_g) that prefer low-loss widths while their
expected cost (MACs, or a predicted latency: costs.Cost) meets the budget F,

  J(θ) = mean_g Σ_w p_g(w)·E[g, w] + λ·(E_p[cost] / F − 1)²,

with E_p[cost] exact under independent groups (Cost.expected); and
`initial_population` draws unseen width vectors from p within the band
[lo·F, F] of the cost. A peaked p redraws the same few width vectors,
and a small band holds few: `fill` then tops up with uniform draws and, on
a space small enough to list, with the band's last unscored width vectors,
so that a search runs short only when the band has no more.

Synopsis:

  table = prior.loss_table(space, pool.widths, pool.losses)
  cost = CostModel(model).macs_cost()
  probs = prior.fit(cost, table, budget=F, weight=1.0, steps=300,
                    learning_rate=0.1)
  population, counts = prior.initial_population(
      cost, probs, budget=F, low=0.8, size=50, rng=np.random.default_rng(0))
  # counts == {'prior': 50, 'uniform': 0} unless p is peaked or the band small
"""

from __future__ import annotations

from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np
import optax

from bcnet_jax.run import errors
from bcnet_jax.space.costs import Cost
from bcnet_jax.space.search_space import SearchSpace

# Draws per wanted width vector before a source is declared run dry.
_MAX_DRAWS_PER_MEMBER = 2000
# Spaces with at most this many width vectors may be listed whole (a few MB).
_ENUMERABLE = 1 << 18


def loss_table(space: SearchSpace, widths: Any, losses: Any,
               unseen: float | None = None) -> np.ndarray:
  """E[g, w - m]: mean recorded loss of the records whose group g has w bins.

  Args:
    space: the search space.
    widths: [N, G] recorded width vectors.
    losses: [N] their losses; non-finite ones (empty pool slots) are ignored.
    unseen: E where no record has the width; default: the highest recorded
      loss, so that an unseen width is never preferred to a seen one.

  Returns:
    [G, B - m + 1] float64.
  """
  losses = np.asarray(losses, np.float64)
  keep = np.isfinite(losses)
  if not keep.any():
    raise errors.InvalidInput(
        'the loss pool holds no records: train the supernet '
        'for at least one step first')
  widths = space.validate_widths(np.asarray(widths)[keep]).reshape(
      -1, space.num_groups)
  losses = losses[keep]
  values = space.bins - space.min_bins + 1
  index = widths - space.min_bins  # [N, G]
  sums = np.zeros((space.num_groups, values))
  counts = np.zeros((space.num_groups, values))
  for g in range(space.num_groups):
    np.add.at(sums[g], index[:, g], losses)
    np.add.at(counts[g], index[:, g], 1)
  fill = losses.max() if unseen is None else unseen
  return np.where(counts > 0, sums / np.maximum(counts, 1), fill)


def fit(cost: Cost, table: np.ndarray, *, budget: float,
        weight: float, steps: int, learning_rate: float) -> np.ndarray:
  """Per-group width distributions [G, B - m + 1] minimizing J (above).

  Args:
    cost: the constrained cost.
    table: E from `loss_table`.
    budget: F, in the cost's unit.
    weight: λ, the weight of the budget term.
    steps: Adam steps.
    learning_rate: Adam's learning rate.
  """
  table = jnp.asarray(table, jnp.float32)

  def objective(theta):
    probs = jax.nn.softmax(theta, axis=-1)
    loss = jnp.mean(jnp.sum(probs * table, axis=-1))
    return loss + weight * jnp.square(cost.expected(probs) / budget - 1)

  tx = optax.adam(learning_rate)

  @jax.jit
  def run(theta):
    def step(carry, _):
      theta, opt_state = carry
      grads = jax.grad(objective)(theta)
      updates, opt_state = tx.update(grads, opt_state)
      return (optax.apply_updates(theta, updates), opt_state), None
    (theta, _), _ = jax.lax.scan(step, (theta, tx.init(theta)), None,
                                 length=steps)
    return jax.nn.softmax(theta, axis=-1)

  return np.asarray(run(jnp.zeros(table.shape, jnp.float32)), np.float64)


def band(cost: Cost, budget: float, low: float) -> tuple[float, float]:
  """[low·F, F], checked against the cost of the space's smallest width
  vector."""
  if not 0 < low <= 1:
    raise errors.InvalidInput(
        f'the band\'s low end must be in (0, 1], got {low}')
  smallest = cost(cost.space.smallest())
  if budget < smallest:
    raise errors.InvalidInput(
        f'a budget of {cost.describe(budget)} is below the smallest width '
        f'vector of {cost.space.model} ({cost.describe(smallest)}): no width '
        'vector meets it; raise the budget')
  return low * budget, float(budget)


def sample(space: SearchSpace, probs: np.ndarray, n: int,
           rng: np.random.Generator) -> np.ndarray:
  """n width vectors [n, G] int32, group g with w bins with probability
  probs[g, w - m] (each row normalized here: a float32 softmax sums to 1
  only within ~1e-7)."""
  probs = np.asarray(probs, np.float64)
  values = space.bins - space.min_bins + 1
  if probs.shape != (space.num_groups, values) or np.any(probs < 0):
    raise ValueError(f'probs must be non-negative, shaped [groups, bins - '
                     f'min_bins + 1] = {(space.num_groups, values)}; got '
                     f'{probs.shape}')
  cumulative = np.cumsum(probs / probs.sum(axis=1, keepdims=True), axis=1)
  u = rng.random((n, space.num_groups))
  index = np.stack([np.searchsorted(cumulative[g], u[:, g], side='right')
                    for g in range(space.num_groups)], axis=1)
  return (np.minimum(index, values - 1) + space.min_bins).astype(np.int32)


def enumerable(space: SearchSpace) -> bool:
  """Whether every width vector of `space` can be listed at once: then the
  band's last unscored width vectors are found for certain, not by luck."""
  return (space.bins - space.min_bins + 1) ** space.num_groups <= _ENUMERABLE


def _take(cost: Cost, candidates: np.ndarray, n: int,
          band: tuple[float, float], seen: set[bytes],
          out: list[np.ndarray]) -> None:
  """Appends to `out`, until it holds n, the candidates with a cost in the
  band and channels unlike `seen`, adding their keys to `seen`."""
  lo, hi = band
  keys = cost.space.channel_matrix(candidates)
  for c, m, key in zip(candidates, cost(candidates), keys):
    if len(out) >= n:
      return
    key = key.tobytes()
    if lo <= m <= hi and key not in seen:
      seen.add(key)
      out.append(c)


def draw_legal(cost: Cost, draw: Callable[[int], np.ndarray], n: int,
               band: tuple[float, float], seen: set[bytes]
               ) -> np.ndarray:
  """Up to n width vectors [k, G] int32 from `draw(count)`, the cost
  within `band`, channels unlike `seen` and each other (their keys are added
  to `seen`). Fewer when _MAX_DRAWS_PER_MEMBER draws per wanted vector find
  no more: the caller then turns to another source instead of failing."""
  out = []
  for _ in range(-(-n * _MAX_DRAWS_PER_MEMBER // 100)):
    if len(out) >= n:
      break
    _take(cost, draw(100), n, band, seen, out)
  return np.array(out, np.int32).reshape(-1, cost.space.num_groups)


def draw_uniform(cost: Cost, n: int, band: tuple[float, float],
                 seen: set[bytes], rng: np.random.Generator) -> np.ndarray:
  """Up to n uniform width vectors as `draw_legal` gives them. Where random
  draws run short on an `enumerable` space, every width vector is listed in
  an order drawn from rng and the unscored ones in the band taken from it:
  a small band is used up (fewer than n only when no more are left), not
  missed by luck."""
  space = cost.space
  found = draw_legal(cost, lambda count: space.sample(rng, count), n,
                     band, seen)
  if len(found) >= n or not enumerable(space):
    return found
  values = space.bins - space.min_bins + 1
  every = np.indices((values,) * space.num_groups).reshape(
      space.num_groups, -1).T + space.min_bins
  out = list(found)
  _take(cost, every[rng.permutation(len(every))].astype(np.int32), n,
        band, seen, out)
  return np.array(out, np.int32).reshape(-1, space.num_groups)


def fill(cost: Cost, probs: np.ndarray, n: int,
         band: tuple[float, float], seen: set[bytes],
         rng: np.random.Generator) -> tuple[np.ndarray, dict[str, int]]:
  """Up to n legal width vectors unlike `seen` (keys added): drawn from the
  prior, then, where a peaked prior keeps redrawing the same few, uniformly
  (`draw_uniform`). Returns them [k, G] and how many came from each:
  {'prior': a, 'uniform': b}; k < n only when the band has no more."""
  from_prior = draw_legal(
      cost, lambda count: sample(cost.space, probs, count, rng), n,
      band, seen)
  uniform = draw_uniform(cost, n - len(from_prior), band, seen, rng)
  return (np.concatenate([from_prior, uniform]),
          {'prior': len(from_prior), 'uniform': len(uniform)})


def initial_population(cost: Cost, probs: np.ndarray, *, budget: float,
                       low: float, size: int, rng: np.random.Generator
                       ) -> tuple[np.ndarray, dict[str, int]]:
  """`size` width vectors with a cost in [low·F, F], no two with the same
  channels, as `fill` draws them ([k, G] int32 and its counts); fewer when
  the band holds fewer. A band with none is an error: nothing to search."""
  lo, hi = legal = band(cost, budget, low)
  population, counts = fill(cost, probs, size, legal, set(), rng)
  if not len(population):
    raise errors.InvalidInput(
        f'no width vector of {cost.space.model} with {cost.unit} in '
        f'[{cost.describe(lo)}, {cost.describe(hi)}] was found'
        + ('' if enumerable(cost.space) else
           f' in {2 * size * _MAX_DRAWS_PER_MEMBER:,} draws')
        + ': widen the band (lower search.band_low) or raise the budget')
  return population, counts
