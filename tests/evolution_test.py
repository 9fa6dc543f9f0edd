"""Evolution: legal, new, seeded children; it climbs a toy fitness; a
generation breeding cannot fill is filled from the prior, then uniformly,
and is short only by what the band no longer holds."""

import itertools

from absl.testing import absltest
import jax
import jax.numpy as jnp
import numpy as np

from bcnet_jax import models
from bcnet_jax.searching import evolution
from bcnet_jax.searching import prior
from bcnet_jax.space.costs import CostModel


class EvolutionTest(absltest.TestCase):

  @classmethod
  def setUpClass(cls):
    super().setUpClass()
    cls.costs = CostModel(models.get_model('resnet20_cifar'))
    cls.cost = cls.costs.macs_cost()
    cls.space = cls.costs.space
    cls.budget = 0.5 * cls.costs.macs(cls.space.full())
    cls.probs = np.full((cls.space.num_groups, cls.space.bins),
                        1 / cls.space.bins)
    cls.rules = evolution.Rules(
        cls.cost, cls.probs, band=prior.band(cls.cost, cls.budget, 0.8),
        top_k=10, mutations=25, crossovers=25, mutation_prob=0.1)

  def fitness(self, widths):
    """A toy score: later groups are worth more; no search space knows it."""
    return float(np.dot(widths, np.arange(1, self.space.num_groups + 1)))

  def initial(self, seed):
    population, counts = prior.initial_population(
        self.cost, self.probs, budget=self.budget, low=0.8, size=50,
        rng=np.random.default_rng(seed))
    self.assertEqual(counts, {'prior': 50, 'uniform': 0})
    seen = {self.space.channel_key(c) for c in population}
    scores = {self.space.channel_key(c): (c, self.fitness(c))
              for c in population}
    return scores, seen

  def test_children_are_legal_new_and_seeded(self):
    scores, seen = self.initial(0)
    before = set(seen)
    children, counts = self.rules.next_population(scores, seen,
                                                  np.random.default_rng(1))
    self.assertEqual(counts, {'bred': 50, 'prior': 0, 'uniform': 0})
    self.assertEqual(children.shape, (50, self.space.num_groups))
    macs = self.costs.macs(children)
    lo, hi = self.rules.band
    self.assertTrue(np.all((macs >= lo) & (macs <= hi)))
    keys = [self.space.channel_key(c) for c in children]
    self.assertLen(set(keys), 50)
    self.assertFalse(set(keys) & before)
    self.assertEqual(seen, before | set(keys))
    again, _ = self.rules.next_population(*self.initial(0),
                                          np.random.default_rng(1))
    np.testing.assert_array_equal(again, children)

  def test_parents_are_the_top_k(self):
    scores, _ = self.initial(0)
    parents = self.rules.parents(scores)
    best = sorted((s for _, s in scores.values()), reverse=True)[:10]
    self.assertEqual([self.fitness(p) for p in parents], best)

  def test_climbs_a_toy_fitness(self):
    scores, seen = self.initial(2)
    rng = np.random.default_rng(3)
    first_best = max(s for _, s in scores.values())
    for _ in range(8):
      for c in self.rules.next_population(scores, seen, rng)[0]:
        scores[self.space.channel_key(c)] = (c, self.fitness(c))
    self.assertGreater(max(s for _, s in scores.values()), first_best)
    self.assertLen(scores, 50 + 8 * 50)  # nothing scored twice

  def test_breeds_from_a_fitted_prior(self):
    # A float32 softmax, as prior.fit returns: rows sum to 1 within ~1e-7.
    logits = np.random.default_rng(4).normal(
        size=(self.space.num_groups, self.space.bins))
    probs = np.asarray(jax.nn.softmax(jnp.asarray(logits, jnp.float32)),
                       np.float64)
    rules = evolution.Rules(self.cost, probs, band=self.rules.band,
                            top_k=10, mutations=25, crossovers=25,
                            mutation_prob=0.5)
    scores, seen = self.initial(0)
    children, _ = rules.next_population(scores, seen,
                                        np.random.default_rng(5))
    self.assertEqual(children.shape, (50, self.space.num_groups))

  def test_a_band_no_draw_hits_leaves_the_generation_short_not_failed(self):
    # 20 bins per group: too many width vectors to list; none in the band
    # is found, so the generation is empty and the caller ends evolution.
    scores, seen = self.initial(0)
    narrow = evolution.Rules(
        self.cost, self.probs, band=(self.budget, self.budget), top_k=10,
        mutations=5, crossovers=5, mutation_prob=0.1)
    before = set(seen)
    children, counts = narrow.next_population(scores, seen,
                                              np.random.default_rng(0))
    self.assertEqual(children.shape, (0, self.space.num_groups))
    self.assertEqual(counts, {'bred': 0, 'prior': 0, 'uniform': 0})
    self.assertEqual(seen, before)


class FillTest(absltest.TestCase):
  """Channel-Bench-Macro's space: 7 groups of 4 bins, 16,384 width vectors,
  small enough to list (prior.enumerable), as the issue's tiny space."""

  @classmethod
  def setUpClass(cls):
    super().setUpClass()
    cls.costs = CostModel(models.get_model('cbm_mobilenet'))
    cls.cost = cls.costs.macs_cost()
    cls.space = cls.costs.space
    full = cls.costs.macs(cls.space.full())
    cls.band = prior.band(cls.cost, 0.5 * full, 0.8)
    every = np.array(list(itertools.product(
        range(1, 5), repeat=cls.space.num_groups)), np.int32)
    macs = cls.costs.macs(every)
    cls.in_band = every[(macs >= cls.band[0]) & (macs <= cls.band[1])]
    # A width vector in the band with a neighbour (one gene apart) in it.
    cls.parent, cls.neighbour = next(
        (a, b) for a in cls.in_band for b in cls.in_band
        if np.sum(a != b) == 1)
    # All the prior's mass on the parent's bins: mutations give back the
    # parent, as does crossing it with itself, and so does every prior draw.
    cls.peaked = np.eye(4)[cls.parent - 1]

  def rules(self, **kwargs):
    return evolution.Rules(**{
        'cost': self.cost, 'probs': self.peaked, 'band': self.band,
        'top_k': 1, 'mutations': 5, 'crossovers': 5, 'mutation_prob': 0.05,
        **kwargs})

  def keys(self, widths):
    return {self.space.channel_key(c) for c in widths}

  def scored(self, widths):
    """{key: (widths, score)} of the width vectors, as the search keeps."""
    return {self.space.channel_key(c): (c, float(i))
            for i, c in enumerate(widths)}

  def test_a_peaked_prior_fills_a_full_legal_new_generation(self):
    scores = self.scored([self.parent])
    seen = set(scores)
    children, counts = self.rules().next_population(
        scores, seen, np.random.default_rng(0))
    self.assertEqual(counts, {'bred': 0, 'prior': 0, 'uniform': 10})
    self.assertEqual(children.shape, (10, 7))
    macs = self.costs.macs(children)
    self.assertTrue(np.all((macs >= self.band[0]) & (macs <= self.band[1])))
    self.assertLen(self.keys(children), 10)
    self.assertEqual(seen, set(scores) | self.keys(children))
    again, _ = self.rules().next_population(scores, set(scores),
                                            np.random.default_rng(0))
    np.testing.assert_array_equal(again, children)  # a function of the RNG

  def test_prior_draws_come_before_uniform_ones(self):
    # The prior's peak one gene away from the parent, no mutations: the
    # prior gives that one width vector, uniform draws the rest.
    rules = self.rules(probs=np.eye(4)[self.neighbour - 1], mutation_prob=0.0)
    scores = self.scored([self.parent])
    children, counts = rules.next_population(scores, set(scores),
                                             np.random.default_rng(1))
    self.assertEqual(counts, {'bred': 0, 'prior': 1, 'uniform': 9})
    np.testing.assert_array_equal(children[0], self.neighbour)

  def test_the_initial_population_is_filled_uniformly_too(self):
    population, counts = prior.initial_population(
        self.cost, self.peaked, budget=self.band[1], low=0.8, size=10,
        rng=np.random.default_rng(2))
    self.assertEqual(counts, {'prior': 1, 'uniform': 9})
    np.testing.assert_array_equal(population[0], self.parent)
    self.assertLen(self.keys(population), 10)

  def test_an_exhausted_band_gives_what_remains_then_nothing(self):
    left = self.in_band[-3:]
    scores = self.scored(self.in_band[:-3])
    seen = set(scores)
    children, counts = self.rules().next_population(
        scores, seen, np.random.default_rng(3))
    self.assertEqual(self.keys(children), self.keys(left))
    self.assertEqual(sum(counts.values()), 3)
    children, counts = self.rules().next_population(
        scores, seen, np.random.default_rng(4))
    self.assertEqual(children.shape, (0, 7))
    self.assertEqual(counts, {'bred': 0, 'prior': 0, 'uniform': 0})

  def test_uniform_draws_take_the_last_ones_left(self):
    seen = self.keys(self.in_band[:-2])
    found = prior.draw_uniform(self.cost, 5, self.band, seen,
                               np.random.default_rng(5))
    self.assertEqual(self.keys(found), self.keys(self.in_band[-2:]))
    self.assertEqual(seen, self.keys(self.in_band))


if __name__ == '__main__':
  absltest.main()
