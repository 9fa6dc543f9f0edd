"""Evolution: legal, new, seeded children; it climbs a toy fitness."""

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
    cls.space = cls.costs.space
    cls.budget = 0.5 * cls.costs.macs(cls.space.full())
    cls.probs = np.full((cls.space.num_groups, cls.space.bins),
                        1 / cls.space.bins)
    cls.rules = evolution.Rules(
        cls.costs, cls.probs, band=prior.band(cls.costs, cls.budget, 0.8),
        top_k=10, mutations=25, crossovers=25, mutation_prob=0.1)

  def fitness(self, widths):
    """A toy score: later groups are worth more; no search space knows it."""
    return float(np.dot(widths, np.arange(1, self.space.num_groups + 1)))

  def initial(self, seed):
    population = prior.initial_population(
        self.costs, self.probs, budget=self.budget, low=0.8, size=50,
        rng=np.random.default_rng(seed))
    seen = {self.space.channel_key(c) for c in population}
    scores = {self.space.channel_key(c): (c, self.fitness(c))
              for c in population}
    return scores, seen

  def test_children_are_legal_new_and_seeded(self):
    scores, seen = self.initial(0)
    before = set(seen)
    children = self.rules.next_population(scores, seen,
                                          np.random.default_rng(1))
    self.assertEqual(children.shape, (50, self.space.num_groups))
    macs = self.costs.macs(children)
    lo, hi = self.rules.band
    self.assertTrue(np.all((macs >= lo) & (macs <= hi)))
    keys = [self.space.channel_key(c) for c in children]
    self.assertLen(set(keys), 50)
    self.assertFalse(set(keys) & before)
    self.assertEqual(seen, before | set(keys))
    again = self.rules.next_population(*self.initial(0),
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
      for c in self.rules.next_population(scores, seen, rng):
        scores[self.space.channel_key(c)] = (c, self.fitness(c))
    self.assertGreater(max(s for _, s in scores.values()), first_best)
    self.assertLen(scores, 50 + 8 * 50)  # nothing scored twice

  def test_breeds_from_a_fitted_prior(self):
    # A float32 softmax, as prior.fit returns: rows sum to 1 within ~1e-7.
    logits = np.random.default_rng(4).normal(
        size=(self.space.num_groups, self.space.bins))
    probs = np.asarray(jax.nn.softmax(jnp.asarray(logits, jnp.float32)),
                       np.float64)
    rules = evolution.Rules(self.costs, probs, band=self.rules.band,
                            top_k=10, mutations=25, crossovers=25,
                            mutation_prob=0.5)
    scores, seen = self.initial(0)
    children = rules.next_population(scores, seen, np.random.default_rng(5))
    self.assertEqual(children.shape, (50, self.space.num_groups))

  def test_a_band_too_narrow_to_fill_is_an_error(self):
    scores, seen = self.initial(0)
    narrow = evolution.Rules(
        self.costs, self.probs, band=(self.budget, self.budget), top_k=10,
        mutations=5, crossovers=5, mutation_prob=0.1)
    before = set(seen)
    with self.assertRaisesRegex(ValueError, 'widen the band'):
      narrow.next_population(scores, seen, np.random.default_rng(0))
    self.assertEqual(seen, before)  # nothing taken from a failed generation


if __name__ == '__main__':
  absltest.main()
