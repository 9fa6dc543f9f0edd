"""BCNet's search (docs/design.md §5) on a trained supernet.

  python -m bcnet_jax.search --workdir=DIR [--config.search.population=...]

Fits the prior to the supernet's loss-record pool, evolves width vectors
whose cost lies in the band [band_low·F, F] (MACs, or the latency that
search.latency_record predicts: costs.Cost, `constraint`), and scores every
candidate once with the batch evaluator (evaluator.Evaluator, the fitness
of §4). Three baselines at the same budget and with the same evaluator
follow: uniform scaling (the largest all-b width vector within F), random
search (uniform width vectors in the band, as many as the evolution
evaluated) and the magnitude baseline (the widths a global BatchNorm |γ|
ranking keeps, magnitude.py).

The work is a fixed list of units: generation 0 (the prior's initial
population), generations 1..G, the uniform baseline, the random search in
population-sized chunks, then the comparison: the three methods' best width
vectors scored again, per image, for their standard errors and the paired
errors of their differences (is the winner better than the baselines, or
within the noise of the eval images?). Unit u draws from its own RNG, seeded by
(seed, u), so the RNG state is a function of what is done. After every
unit `search/state.json` is replaced atomically; a rerun continues after
the last finished unit and ends as an uninterrupted run would. A state
written for another supernet, budget, data or search constant is an error
naming what differs. Once every unit is done, the full network and the
best of each method are timed on this device (`measure_latency`). On
several hosts the workdir must be shared, as for checkpoints: process 0
writes, every process reads. Outputs in DIR/search/: arch.json (the winner,
docs/design.md §2), history.jsonl, population.png and summary.json.
"""

from __future__ import annotations

import json
import os
import time
from typing import Any, Collection

import jax
import numpy as np
from tqdm import tqdm

from bcnet_jax.run import config_utils
from bcnet_jax.run import console
from bcnet_jax.run import errors
from bcnet_jax.run import files
from bcnet_jax.run import identity as identity_lib
from bcnet_jax.run import run_config
from bcnet_jax.run import stages as run_lib
from bcnet_jax.searching import evolution
from bcnet_jax.searching import magnitude
from bcnet_jax.searching import prior
from bcnet_jax.searching import report as search_report
from bcnet_jax.space import search_space as space_lib
from bcnet_jax.space.costs import CostModel
from bcnet_jax.supernet import stage as supernet
from bcnet_jax.timing import clock
from bcnet_jax.timing import predictor

STATE_FORMAT = 'bcnet_jax.search_state/4'  # 4: the magnitude baseline
# The baselines scored beside the evolution, in the order they run.
BASELINES = ('uniform', 'random', 'magnitude')
# What a scored record keeps ('right' is None for a unilateral supernet).
SCORE_FIELDS = ('left', 'right', 'score', 'score_se')


# The search fields that say the budget: the state records the budget itself.
_BUDGET_FIELDS = ('macs_budget', 'macs_fraction', 'latency_budget_ms',
                  'latency_file')


def _identity(setup: supernet.Setup, trained, cost, budget: float
              ) -> dict[str, Any]:
  """What a search state is only valid for: the scored supernet and its
  scoring (supernet.Setup.scoring_identity), the budget (and the latency
  predictor it is in) and every search constant that changes a draw."""
  out = {**setup.scoring_identity(trained),
         **identity_lib.of_config(setup.config, [
             f'search.{k}' for k in sorted(setup.config.search)
             if k not in _BUDGET_FIELDS])}
  if cost.name == 'macs':
    return {**out, 'search.budget_macs': int(budget)}
  return {**out, 'search.budget_latency_ms': float(budget),
          'search.latency_predictor': cost.fingerprint()}


def constraint(config: Any, model, costs: CostModel
               ) -> tuple[Any, float, dict[str, Any] | None]:
  """(the constrained Cost, the budget F in its unit, the latency file's
  record or None): MACs from search.macs_budget or macs_fraction, or the
  latency that search.latency_file predicts under search.latency_budget_ms,
  which must lie between the predicted latency of the smallest and of the
  full network (search.latency_file is not read under a MACs budget)."""
  s = config.search
  if s.latency_budget_ms is None:
    full = costs.macs(costs.space.full())
    return costs.macs_cost(), config_utils.macs_budget(s, full), None
  if s.latency_file is None:
    raise errors.InvalidInput(
        'search.latency_budget_ms needs search.latency_file=PATH: the '
        'latency of this device, made by python -m bcnet_jax.latency '
        '--config=... --out=PATH')
  cost, record = predictor.load(s.latency_file, config, model)
  budget = float(s.latency_budget_ms)
  low, high = cost(costs.space.smallest()), cost(costs.space.full())
  if not low <= budget <= high:
    raise errors.InvalidInput(
        f'search.latency_budget_ms={budget:g} is '
        f'{"below the smallest" if budget < low else "above the full"} '
        f'network\'s latency ({low:.3f} ms smallest, {high:.3f} ms full as '
        f'predicted; measured {record["smallest_ms"]:.3f} and '
        f'{record["full_ms"]:.3f} ms; batch {record["batch"]}, '
        f'{s.latency_file}): give a budget in that range')
  return cost, budget, record


def _read_state(path: str, identity: dict[str, Any]) -> dict[str, Any] | None:
  """The saved search state, if any; one of another search is an error."""
  if not os.path.exists(path):
    return None
  try:
    with open(path) as f:
      saved = json.load(f)
  except (json.JSONDecodeError, UnicodeDecodeError) as e:
    raise errors.InvalidInput(
        f'{path} is not a search state this code can read '
        f'({e}); move it away to start the search over') from None
  found = saved.get('format') if isinstance(saved, dict) else None
  if found != STATE_FORMAT or not isinstance(saved.get('identity'), dict):
    raise errors.InvalidInput(
        f'{path} is not a search state of format '
        f'{STATE_FORMAT!r} (found {found!r}); move it away to '
        'start the search over')
  differing = identity_lib.differences(saved['identity'], identity,
                                       saved_as='state')
  if differing:
    folder = os.path.dirname(path)
    advice = (f'Rerun with the search fields it was made with, or move '
              f'{folder} away to search anew' if all(
                  d.startswith('search.') for d in differing) else
              f'It scored another supernet or scoring: move {folder} away '
              'to search this one')
    raise errors.InvalidInput(f'{path} belongs to another search '
                              f'({identity_lib.describe(differing)}). '
                              f'{advice}')
  return saved


def _check_sizes(search: Any) -> None:
  """The search's counts: a population and parents to breed from."""
  for name, low in (('population', 1), ('top_k', 1), ('generations', 0),
                    ('mutations', 0), ('crossovers', 0)):
    if search[name] < low:
      raise errors.InvalidInput(f'search.{name}={search[name]} must be >= '
                                f'{low}')
  if search.generations and search.mutations + search.crossovers < 1:
    raise errors.InvalidInput('search.mutations + search.crossovers must be '
                              '>= 1 to breed generations')


class Search:
  """One search: the units still to do, run against the saved state."""

  def __init__(self, setup: supernet.Setup, trained, workdir: str):
    config = setup.config
    _check_sizes(config.search)
    self.setup, self.trained = setup, trained
    self.config, self.space = config, setup.model.space
    self.costs = CostModel(setup.model)
    self.cost, self.budget, self.latency_record = constraint(
        config, setup.model, self.costs)
    self.band = prior.band(self.cost, self.budget, config.search.band_low)
    self.folder = os.path.join(workdir, 'search')
    self.state_path = os.path.join(self.folder, 'state.json')
    identity = _identity(setup, trained, self.cost, self.budget)
    self.state = _read_state(self.state_path, identity) or {
        'format': STATE_FORMAT, 'identity': identity, 'probs': None,
        'units_done': 0, 'records': [], 'history': [],
        'wall_time_s': {'prior': 0.0, 'evolution': 0.0, 'uniform': 0.0,
                        'random': 0.0, 'magnitude': 0.0, 'compare': 0.0}}
    self.evaluator = setup.evaluator()
    self.calibration, self.eval_batches = setup.scoring_data(cached=True)
    # Where the last generation's candidates came from, for its history.
    self.sources: dict[str, int] = {}

  @property
  def generations(self) -> int:
    return self.config.search.generations

  def units(self) -> list[tuple[str, int]]:
    """(phase, index) of the whole search, in order: generation 0..G,
    the uniform baseline, the random search's chunks, the magnitude
    baseline, the comparison."""
    s = self.config.search
    evaluations = s.population + self.generations * (s.mutations +
                                                      s.crossovers)
    chunks = -(-evaluations // s.population)
    return ([('evolution', g) for g in range(self.generations + 1)] +
            [('uniform', 0)] + [('random', r) for r in range(chunks)] +
            [('magnitude', 0), ('compare', 0)])

  def records(self, phase: str) -> list[dict[str, Any]]:
    """Scored width vectors of 'evolution' or a baseline (BASELINES)."""
    return [r for r in self.state['records'] if r['phase'] == phase]

  @property
  def done(self) -> bool:
    return self.state['units_done'] == len(self.units())

  def _rng(self, unit: int) -> np.random.Generator:
    return np.random.default_rng([self.config.seed, 0x5EA4C, unit])

  def _probs(self) -> np.ndarray:
    """The prior (fitted once, then kept in the state)."""
    if self.state['probs'] is None:
      start = time.perf_counter()
      pool = jax.device_get(self.trained.pool)
      s = self.config.search
      table = prior.loss_table(self.space, pool.widths, pool.losses)
      probs = prior.fit(self.cost, table, budget=self.budget,
                        weight=s.prior_weight, steps=s.prior_steps,
                        learning_rate=s.prior_learning_rate)
      self.state['probs'] = probs.tolist()
      self.state['wall_time_s']['prior'] += time.perf_counter() - start
    return np.asarray(self.state['probs'])

  def _candidates(self, phase: str, index: int,
                  rng: np.random.Generator) -> np.ndarray:
    """The width vectors unit (phase, index) scores. A generation short of
    new children (a peaked prior, a small band) is filled with prior and
    uniform draws (prior.fill), said in a line and kept in self.sources
    for its history; it is short only when the band has no unscored width
    vector left, and then evolution ends there: the baselines still run."""
    s = self.config.search
    if phase == 'uniform':
      return self.cost.uniform_within(self.budget)[None]
    if phase == 'magnitude':
      return magnitude.widths_within(self.setup.model, self.trained.params,
                                     self.cost, self.budget)[None]
    if phase == 'random':
      wanted = max(0, min(s.population, len(self.records('evolution')) -
                          len(self.records('random'))))
      found = self._random(wanted, rng)
      self._say_sources(f'random search {index + 1}', wanted,
                        {'uniform': len(found)})
      return found
    scored = self.records('evolution')
    if index == 0:
      wanted = s.population
      children, counts = prior.initial_population(
          self.cost, self._probs(), budget=self.budget, low=s.band_low,
          size=wanted, rng=rng)
    elif not any(r['generation'] == index - 1 for r in scored):
      wanted, counts = 0, {'bred': 0, 'prior': 0, 'uniform': 0}
      children = np.zeros((0, self.space.num_groups), np.int32)
    else:
      wanted = s.mutations + s.crossovers
      rules = evolution.Rules(
          self.cost, self._probs(), band=self.band, top_k=s.top_k,
          mutations=s.mutations, crossovers=s.crossovers,
          mutation_prob=s.mutation_prob)
      scores = {self.space.channel_key(r['widths']):
                (np.asarray(r['widths'], np.int32), r['score'])
                for r in scored}
      children, counts = rules.next_population(scores, set(scores), rng)
      if not len(children):
        console.say(f'generation {index}: {self._none_left()}: evolution '
                    f'ends after {console.plural(len(scored), "evaluation")}; '
                    'uniform scaling and random search follow')
    self.sources = {'wanted': wanted, **counts}
    if len(children):
      self._say_sources(f'generation {index}', wanted, counts)
    return children

  def _none_left(self) -> str:
    """Why a unit got fewer candidates than wanted: certain when the space
    is listed whole (prior.enumerable), else what the draws found."""
    return ('the band has no other unscored width vector'
            if prior.enumerable(self.space) else
            'no other new width vector in the band was found')

  def _say_sources(self, label: str, wanted: int,
                   counts: dict[str, int]) -> None:
    """One line when not all of a unit's candidates came from its usual
    source (the first of `counts`): how many came from each, and why."""
    words = {'bred': 'bred', 'prior': 'drawn from the prior',
             'uniform': 'drawn uniformly'}
    usual = next(iter(counts))
    if counts[usual] == wanted:
      return
    line = f'{label}: ' + ', '.join(
        f'{n} of {wanted} {words[k]}' if k == usual else f'{n} {words[k]}'
        for k, n in counts.items())
    console.say(line + (' (a peaked prior or a small band leaves few new '
                        'ones)' if sum(counts.values()) == wanted else
                        f': {self._none_left()}'))

  def _random(self, n: int, rng: np.random.Generator) -> np.ndarray:
    """n uniform width vectors in the band, unlike any drawn before; fewer
    (those left) when the band holds fewer."""
    seen = {self.space.channel_key(r['widths'])
            for r in self.records('random')}
    return prior.draw_uniform(self.cost, n, self.band, seen, rng)

  def _score(self, widths: np.ndarray, status) -> list[dict[str, Any]]:
    """Records of `widths`; those scored before (by channels) are reused."""
    cache = {self.space.channel_key(r['widths']): r
             for r in self.state['records']}
    new = [c for c in widths if self.space.channel_key(c) not in cache]
    if new:
      result = self.evaluator.score(
          self.trained.params, self.trained.batch_stats, new,
          calibration=self.calibration, eval_batches=self.eval_batches,
          status=status)
      for i, c in enumerate(new):
        cache[self.space.channel_key(c)] = {
            k: float(result[k][i]) if k in result else None
            for k in SCORE_FIELDS}
    out = []
    for c in widths:
      scored = cache[self.space.channel_key(c)]
      out.append({'widths': [int(w) for w in c],
                  'macs': int(self.costs.macs(c)),
                  'params': int(self.costs.params(c)),
                  **({} if self.cost.name == 'macs' else
                     {'latency_ms_predicted': self.cost(c)}),
                  **{k: scored[k] for k in SCORE_FIELDS}})
    return out

  def _compare(self, status) -> dict[str, Any]:
    """The best of each method scored again, per image: each score's
    standard error, and evolution's winner minus each baseline with the
    paired standard error of that difference (the same images)."""
    phases = ('evolution',) + BASELINES
    widths = [self.winner(p)['widths'] for p in phases]
    examples, leads = self.evaluator.leads(
        self.trained.params, self.trained.batch_stats, widths,
        calibration=self.calibration, eval_batches=self.eval_batches,
        status=status)
    out = {'examples': int(examples), 'winner_minus': {}}
    for i, (phase, (diff, se)) in enumerate(zip(phases[1:], leads), 1):
      out['winner_minus'][phase] = {
          'difference': diff, 'se': se,
          'same_width_vector': widths[i] == widths[0]}
    return out

  def run(self) -> None:
    """Does the units not done yet, saving the state after each."""
    units = self.units()
    bar = tqdm(total=len(units), initial=self.state['units_done'],
               unit='stage', dynamic_ncols=True,
               disable=jax.process_index() != 0)
    s = self.config.search
    evolved = s.population + self.generations * (s.mutations + s.crossovers)
    progress = console.ScoringProgress(
        # evolution and random search, uniform, magnitude, the comparison
        max(0, 2 * evolved + 2 + 4 - len(self.state['records'])),
        'To go faster: a smaller --config.search.population, generations, '
        'mutations or crossovers, or fewer BatchNorm calibration batches '
        f'(--config.eval.bn_calib_batches, now '
        f'{self.config.eval.bn_calib_batches}; noisier scores).', bar=False)
    try:
      for u in range(self.state['units_done'], len(units)):
        phase, index = units[u]
        start = time.perf_counter()
        label = {'evolution': f'generation {index}/{self.generations}',
                 'uniform': 'uniform scaling',
                 'random': f'random search {index + 1}',
                 'magnitude': 'magnitude baseline',
                 'compare': 'comparing the best of each'}[phase]
        bar.set_description_str(label)

        def status(done: int, total: int, label: str = label) -> None:
          bar.set_description_str(f'{label}: {done}/{total} scored')
          progress(done, total)

        if phase == 'compare':
          self.state['comparison'] = self._compare(status)
          self.state['wall_time_s']['compare'] += (time.perf_counter() -
                                                   start)
        else:
          candidates = self._candidates(phase, index, self._rng(u))
          records = self._score(candidates, status)
          for r in records:
            r.update(phase=phase, generation=index)
          self.state['records'] += records
          self.state['wall_time_s'][phase] += time.perf_counter() - start
        if phase == 'evolution':
          self.state['history'].append(self._history_line(index))
        self.state['units_done'] = u + 1
        if jax.process_index() == 0:
          files.write_json_atomic(self.state_path, self.state)
        best = max(r['score'] for r in self.records('evolution'))
        bar.set_postfix(best=f'{best:.3f}')
        bar.update(1)
    finally:
      bar.close()

  def measure_latency(self) -> None:
    """Once the units are done: the latency of the full network and of each
    method's best, measured on this device at the latency file's batch
    (else 1), kept in the state (a search finished before there was a
    latency gets it on its next run)."""
    if 'latency' in self.state:
      return
    batch = self.latency_record['batch'] if self.latency_record else 1
    console.say(f'Measuring the latency of the full network and of each '
                f'method\'s best at batch {batch}')
    self.state['latency'] = clock.networks_ms(
        self.setup.model, {'full': self.space.full(), **{
            phase: self.winner(phase)['widths']
            for phase in ('evolution',) + BASELINES}},
        batch=batch, repeats=clock.REPEATS)
    if jax.process_index() == 0:
      files.write_json_atomic(self.state_path, self.state)

  def _history_line(self, generation: int) -> dict[str, Any]:
    """The generation's line of history.jsonl; 'candidates' says how many
    were wanted and came from each source (self.sources), 'mean_score' is
    None for a generation the exhausted band left empty."""
    evolved = self.records('evolution')
    this = [r['score'] for r in evolved if r['generation'] == generation]
    best = max(evolved, key=lambda r: r['score'])
    return {'generation': generation, 'best_score': best['score'],
            'best_macs': best['macs'],
            'mean_score': float(np.mean(this)) if this else None,
            'evaluations': len(evolved), 'candidates': self.sources,
            'wall_time_s': self.state['wall_time_s']['prior'] +
                           self.state['wall_time_s']['evolution']}

  def winner(self, phase: str) -> dict[str, Any]:
    """The best record of a phase (ties: the first scored)."""
    return max(self.records(phase), key=lambda r: r['score'])

  def arch(self) -> dict[str, Any]:
    """The evolution's winner as an arch (docs/design.md §2), with its
    measured latency and uniform scaling at the same budget."""
    best, latency = self.winner('evolution'), self.state['latency']
    return self.space.arch(
        best['widths'], resolution=self.config.input.resolution,
        macs=best['macs'], params=best['params'],
        macs_budget=int(self.budget) if self.cost.name == 'macs' else None,
        score=best['score'], supernet_step=int(self.trained.step),
        latency_ms=latency['evolution'],
        latency_ms_predicted=best.get('latency_ms_predicted'),
        latency_budget_ms=(self.budget if self.cost.name == 'latency_ms'
                           else None),
        latency_batch=latency['batch'],
        uniform_widths=self.winner('uniform')['widths'])

  def summary(self) -> dict[str, Any]:
    """The best of each method, with its cost, for summary.json."""
    times, comparison = self.state['wall_time_s'], self.state['comparison']
    methods = {
        'evolution': times['prior'] + times['evolution'],
        **{phase: times[phase] for phase in BASELINES}}
    latency = self.state['latency']
    by_macs = self.cost.name == 'macs'
    out = {'model': self.config.model.name, 'constraint': self.cost.name,
           'budget': float(self.budget),
           'macs_budget': int(self.budget) if by_macs else None,
           'band': [float(b) for b in self.band],
           'full_macs': int(self.costs.macs(self.space.full())),
           'latency': {
               **{k: latency[k] for k in ('batch', 'device', 'repeats',
                                          'noise')},
               'full_ms': latency['full'],
               'speedup_over_full': latency['full'] / latency['evolution'],
               'speedup_over_uniform': (latency['uniform'] /
                                        latency['evolution']),
               # The winner on the budget's scale: its measured ratio to
               # the full network times the latency file's full_ms (the
               # machine's speed drifts between the two measurements).
               'winner_on_file_scale_ms': None if by_macs else (
                   latency['evolution'] / latency['full'] *
                   self.latency_record['full_ms'])},
           'supernet_step': int(self.trained.step),
           'split': self.config.eval.split,
           'score': supernet.score_definition(self.setup),
           'examples': comparison['examples'],
           'arch': os.path.join(self.folder, 'arch.json')}
    for phase, seconds in methods.items():
      best = self.winner(phase)
      out[phase] = {**{k: best[k] for k in ('widths', 'score', 'left',
                                            'right', 'macs', 'params')},
                    'latency_ms': latency[phase],
                    'latency_ms_predicted': best.get('latency_ms_predicted'),
                    'score_se': best['score_se'],
                    'evaluations': len(self.records(phase)),
                    'wall_time_s': seconds}
      if phase in comparison['winner_minus']:
        out[phase]['winner_minus_this'] = comparison['winner_minus'][phase]
    return out


def run(config: Any | None, workdir: str, overridden: Collection[str] = ()
        ) -> dict[str, Any]:
  """Searches the supernet in `workdir`; returns the summary. `config`:
  the search's fields over the workdir's training fields, or None for the
  workdir's config (run_config.for_later_stage; `overridden`: the fields
  the command line set)."""
  workdir = run_lib.check_workdir(workdir)
  config = run_config.for_later_stage(config, workdir, overridden,
                                      stage='the search')
  setup = supernet.Setup.create(config)
  trained = supernet.restore_trained(setup, workdir)
  search = Search(setup, trained, workdir)
  summary_path = os.path.join(search.folder, 'summary.json')
  if search.done and os.path.exists(summary_path):
    console.say(f'bcnet_jax.search: this search is complete; its summary is '
                f'{summary_path}. Nothing was written; move {search.folder} '
                'away to search anew.')
    summary = files.read_json(summary_path)
    if 'latency' in summary:  # else written before latency was measured
      console.say()
      console.say(search_report.table(search, summary))
    return summary
  search_report.announce(search, workdir)
  search.run()
  search.measure_latency()
  summary = search.summary()
  if jax.process_index() == 0:
    space_lib.write_arch(summary['arch'], search.arch())
    search_report.write(search, summary)
    files.write_json_atomic(summary_path, summary)
  console.say()
  console.say(search_report.table(search, summary))
  return summary
