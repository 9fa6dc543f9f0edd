"""The prior: loss table, exact expected MACs, the fit, the population."""

import itertools

from absl.testing import absltest
from absl.testing import parameterized
import jax
import jax.numpy as jnp
import numpy as np

from bcnet_jax import models
from bcnet_jax.run import config_utils
from bcnet_jax.searching import prior
from bcnet_jax.space.costs import CostModel


def random_probs(rng, groups, values):
  return rng.dirichlet(np.ones(values), size=groups)


def exact_by_enumeration(costs, probs, free):
  """E[MACs] over every width vector of the `free` groups (the others have
  all their probability on one width)."""
  space = costs.space
  fixed = space.min_bins + np.argmax(probs, axis=1)
  values = range(space.min_bins, space.bins + 1)
  combos = np.array(list(itertools.product(values, repeat=len(free))))
  widths = np.tile(fixed, (len(combos), 1))
  widths[:, free] = combos
  p = np.prod(probs[np.arange(space.num_groups), widths - space.min_bins],
              axis=1)
  return float(np.sum(p * costs.macs(widths).astype(np.float64)))


def expected(costs, probs):
  with jax.enable_x64(True):
    return float(costs.macs_cost().expected(jnp.asarray(probs, jnp.float64)))


class ExpectedMacsTest(parameterized.TestCase):

  @parameterized.parameters('cbm_resnet', 'cbm_mobilenet')
  def test_equals_enumeration_of_the_whole_space(self, name):
    costs = CostModel(models.get_model(name))
    space = costs.space
    rng = np.random.default_rng(0)
    for _ in range(3):
      probs = random_probs(rng, space.num_groups, space.bins)
      want = exact_by_enumeration(costs, probs, list(range(space.num_groups)))
      self.assertLess(abs(expected(costs, probs) / want - 1), 1e-9)

  @parameterized.parameters('mobilenetv2', 'efficientnet_b0', 'resnet50')
  def test_equals_enumeration_over_three_free_groups(self, name):
    # Three groups drawn at random, the others fixed: 20^3 vectors, exact.
    costs = CostModel(models.get_model(name))
    space = costs.space
    rng = np.random.default_rng(1)
    _, a, b = costs.macs_terms()
    group = np.array([d.group for d in space.dims] + [-1])
    # A group with a layer whose input and output both follow its bins.
    shared = sorted({int(group[i]) for i, j in zip(a, b)
                     if group[i] == group[j] >= 0})[:1]
    others = [int(g) for g in rng.permutation(space.num_groups)
              if g not in shared]
    if name == 'efficientnet_b0':  # its SE convs: the joint branch
      self.assertNotEmpty(shared)
    free = sorted(shared + others[:3 - len(shared)])
    probs = np.eye(space.bins)[rng.integers(0, space.bins, space.num_groups)]
    probs[free] = random_probs(rng, len(free), space.bins)
    want = exact_by_enumeration(costs, probs, free)
    self.assertLess(abs(expected(costs, probs) / want - 1), 1e-9)

  def test_mobilenetv2_matches_monte_carlo(self):
    costs = CostModel(models.get_model('mobilenetv2'))
    space = costs.space
    rng = np.random.default_rng(2)
    probs = random_probs(rng, space.num_groups, space.bins)
    draws = np.stack([rng.choice(space.bins, 200_000, p=p)
                      for p in probs], axis=1) + space.min_bins
    monte_carlo = costs.macs(draws).astype(np.float64).mean()
    self.assertLess(abs(expected(costs, probs) / monte_carlo - 1), 0.01)


class LossTableTest(absltest.TestCase):

  def test_means_per_group_and_width_unseen_filled(self):
    space = models.get_space('cbm_resnet')  # 7 groups, bins 1..4
    widths = np.array([[1] * 7, [2] * 7, [1, 2, 3, 4, 1, 2, 3]])
    losses = np.array([1.0, 3.0, 2.0])
    table = prior.loss_table(space, widths, losses)
    self.assertEqual(table.shape, (7, 4))
    self.assertEqual(table[0, 0], 1.5)  # widths 1 and 1: (1 + 2) / 2
    self.assertEqual(table[0, 1], 3.0)
    self.assertEqual(table[0, 3], 3.0)  # unseen: the highest loss
    self.assertEqual(table[3, 3], 2.0)
    with_inf = prior.loss_table(space, np.vstack([widths, [[4] * 7]]),
                                [1.0, 3.0, 2.0, np.inf])
    np.testing.assert_array_equal(with_inf, table)  # empty slots ignored
    with self.assertRaisesRegex(ValueError, 'no records'):
      prior.loss_table(space, widths, [np.inf] * 3)


class SampleTest(absltest.TestCase):

  def test_draws_follow_the_distribution(self):
    space = models.get_space('cbm_resnet')  # bins 1..4
    probs = np.array([[0.1, 0.2, 0.3, 0.4]] * 6 + [[0.0, 0.0, 1.0, 0.0]])
    draws = prior.sample(space, probs, 100_000, np.random.default_rng(0))
    self.assertTrue(np.all(draws[:, 6] == 3))  # all mass on 3 bins
    frequencies = np.stack([np.bincount(draws[:, g] - 1, minlength=4)
                            for g in range(6)]) / 100_000
    np.testing.assert_allclose(frequencies, probs[:6], atol=0.01)
    with self.assertRaisesRegex(ValueError, r'shaped \[groups'):
      prior.sample(space, probs[:, :3], 1, np.random.default_rng(0))


class FitAndPopulationTest(absltest.TestCase):

  @classmethod
  def setUpClass(cls):
    super().setUpClass()
    cls.costs = CostModel(models.get_model('resnet20_cifar'))
    cls.space = cls.costs.space
    cls.full = cls.costs.macs(cls.space.full())

  def test_fit_meets_the_budget_and_prefers_low_loss(self):
    # Losses fall with width: unconstrained, the prior would pick full width.
    table = np.tile(np.linspace(2.0, 1.0, self.space.bins),
                    (self.space.num_groups, 1))
    budget = 0.5 * self.full
    search = config_utils.base_config().search  # the default constants
    probs = prior.fit(self.costs.macs_cost(), table, budget=budget,
                      weight=search.prior_weight, steps=search.prior_steps,
                      learning_rate=search.prior_learning_rate)
    self.assertLess(abs(expected(self.costs, probs) / budget - 1), 0.05)
    # Within the budget, wider is better: more mass above the middle.
    self.assertGreater(probs[:, 10:].sum(), probs[:, :3].sum())

  def test_population_in_band_distinct_and_seeded(self):
    probs = np.full((self.space.num_groups, self.space.bins),
                    1 / self.space.bins)
    budget = 0.5 * self.full
    draw = lambda seed: prior.initial_population(  # noqa: E731
        self.costs.macs_cost(), probs, budget=budget, low=0.8, size=50,
        rng=np.random.default_rng(seed))
    population, counts = draw(0)
    self.assertEqual(counts, {'prior': 50, 'uniform': 0})
    self.assertEqual(population.shape, (50, self.space.num_groups))
    macs = self.costs.macs(population)
    self.assertTrue(np.all((macs >= 0.8 * budget) & (macs <= budget)))
    keys = {self.space.channel_matrix(c).tobytes() for c in population}
    self.assertLen(keys, 50)
    np.testing.assert_array_equal(draw(0)[0], population)

  def test_a_budget_below_the_smallest_is_an_error(self):
    smallest = self.costs.macs(self.space.smallest())
    probs = np.full((self.space.num_groups, self.space.bins),
                    1 / self.space.bins)
    with self.assertRaisesRegex(ValueError, f'{smallest:,} MACs'):
      prior.initial_population(self.costs.macs_cost(), probs,
                               budget=smallest - 1,
                               low=0.8, size=5,
                               rng=np.random.default_rng(0))


class SmallBandTest(absltest.TestCase):
  """Channel-Bench-Macro's 16,384 width vectors: listed whole when random
  draws run short (prior.enumerable)."""

  @classmethod
  def setUpClass(cls):
    super().setUpClass()
    cls.costs = CostModel(models.get_model('cbm_resnet'))
    cls.space = cls.costs.space
    cls.probs = np.full((7, 4), 0.25)
    cls.every = np.array(list(itertools.product(range(1, 5), repeat=7)))

  def test_a_band_holding_fewer_gives_all_it_holds(self):
    macs = self.costs.macs(self.every)
    budget = np.sort(np.unique(macs))[2]  # the three lowest MACs values
    holds = {self.space.channel_key(c) for c in self.every[macs <= budget]}
    self.assertLess(len(holds), 20)
    population, counts = prior.initial_population(
        self.costs.macs_cost(), self.probs, budget=budget, low=0.01, size=20,
        rng=np.random.default_rng(0))
    self.assertEqual({self.space.channel_key(c) for c in population}, holds)
    self.assertEqual(sum(counts.values()), len(holds))

  def test_a_band_holding_none_is_an_error(self):
    # A band between the two lowest MACs values.
    lowest, second = np.sort(np.unique(self.costs.macs(self.every)))[:2]
    with self.assertRaisesRegex(ValueError, 'no width vector of cbm_resnet '
                                'with MACs in .* widen the band'):
      prior.initial_population(self.costs.macs_cost(), self.probs,
                               budget=second - 1,
                               low=(lowest + 1) / (second - 1), size=5,
                               rng=np.random.default_rng(0))


if __name__ == '__main__':
  absltest.main()
