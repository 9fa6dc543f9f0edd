"""How rankings of the sample agree with the benchmark's stand-alone
accuracies: over the whole sample, within each MACs quintile (where a
search picks), and as the architecture each would pick under a budget.

Rankings: each supernet by every score its evaluation gives in one pass
(`score`: the default, the mean accuracy of the paths it trains; each path
alone; `neg_loss`: minus the mean cross-entropy of those paths), and MACs
alone (more is better).
"""

from __future__ import annotations

import os
from typing import Any
import warnings

import numpy as np
from scipy import stats

from bcnet_jax.run import console
from bcnet_jax.run import errors
from bcnet_jax.run import files
from bcnet_jax.searching import ranking as rank
from experiments.channel_bench_macro import sample

BUDGETS = (0.25, 0.5, 0.75)  # of the full network's MACs
BOOTSTRAP_RESAMPLES = 2000
BAND_LOW = 0.8               # a pick's MACs lie in [0.8 F, F]
RESULTS_URL = 'https://github.com/xiusu/Channel-Bench-Macro'


def read_results(path: str, space: str) -> dict[str, float]:
  """{key: mean stand-alone accuracy} of the benchmark's results file,
  checked: its keys must name the space's architectures and its "flops"
  their MACs (the other space's file has the same keys)."""
  where = f'--results: {path}'
  if not os.path.isfile(path):
    what = 'is a directory' if os.path.isdir(path) else 'no file'
    raise errors.MissingInput(
        f'--results: {what} {path}: give the benchmark\'s '
        f'Results_MobileNet.json or Results_ResNet.json ({RESULTS_URL})')
  try:
    data = files.read_json(path)
  except ValueError as e:
    raise errors.InvalidInput(f'--results: {e}') from None
  if not isinstance(data, dict) or not data:
    raise errors.InvalidInput(
        f'{where} must hold a non-empty object {{"4432214": '
        '{"mean": accuracy, "flops": MACs, ...}, ...}')
  costs = {s: sample.benchmark_costs(s) for s in sample.SPACES}
  groups = costs[space].space.num_groups
  out = {}
  for key, value in data.items():
    if not (len(key) == groups and key.isascii() and key.isdigit() and
            set(key) <= set('1234')):
      raise errors.InvalidInput(
          f'{where}: key {key!r} is not an architecture of the '
          f'{space} space ({groups} digits 1-4)')
    mean = value.get('mean') if isinstance(value, dict) else None
    if (isinstance(mean, bool) or not isinstance(mean, (int, float)) or
        not np.isfinite(mean)):
      raise errors.InvalidInput(
          f'{where}: {key}: expected an object with a finite '
          f'"mean" accuracy, got {value!r}')
    flops = value.get('flops')
    if flops is not None and flops != costs[space].macs(sample.widths(key)):
      other = [s for s in sample.SPACES if s != space and
               flops == costs[s].macs(sample.widths(key))]
      hint = (f'it is a results file of the {other[0]} space: give '
              f'--space={other[0]}, or the {space} file' if other else
              f'is it a Channel-Bench-Macro results file? ({RESULTS_URL})')
      raise errors.InvalidInput(
          f'{where}: {key} has flops {flops}, but the {space} space\'s '
          f'network of that key has {costs[space].macs(sample.widths(key))} '
          f'MACs: {hint}')
    out[key] = float(mean)
  return out


def rankings(details: dict[str, dict[str, dict[str, float]]],
             keys: list[str], macs: np.ndarray) -> dict[str, np.ndarray]:
  """{name: values over keys, higher = better}: every score definition of
  every supernet, and MACs alone."""
  out = {}
  for name, scored in details.items():
    sides = [s for s in ('left', 'right') if s in scored[keys[0]]]
    out[f'{name}/score'] = np.asarray([scored[k]['score'] for k in keys])
    if len(sides) > 1:  # one side alone is the score itself
      for side in sides:
        out[f'{name}/{side}'] = np.asarray([scored[k][side] for k in keys])
    out[f'{name}/neg_loss'] = -np.asarray(
        [np.mean([scored[k][f'loss_{s}'] for s in sides]) for k in keys])
  out['macs_only'] = np.asarray(macs, np.float64)
  return out


def _tau(a: np.ndarray, b: np.ndarray) -> float | None:
  return (float(stats.kendalltau(a, b).statistic) if rank.defined(a, b)
          else None)


def pick(values: np.ndarray, accuracy: np.ndarray, macs: np.ndarray,
         budget: float) -> dict[str, Any] | None:
  """The architecture `values` ranks first among those with MACs in
  [BAND_LOW budget, budget] (ties: the first), with its accuracy and its
  percentile there (the share of the band at most as accurate)."""
  band = np.flatnonzero((macs >= BAND_LOW * budget) & (macs <= budget))
  if not len(band):
    return None
  chosen = band[np.argmax(values[band])]
  return {'index': int(chosen), 'band_size': len(band),
          'accuracy': float(accuracy[chosen]),
          'percentile': float(100 * np.mean(accuracy[band] <=
                                            accuracy[chosen])),
          'best_in_band': float(accuracy[band].max())}


def layer_sensitivity(values: np.ndarray, widths: np.ndarray
                      ) -> list[float | None]:
  """Spearman ρ of each layer's bins with `values` over the sample: how
  much a ranking rewards that layer's width. Set beside the benchmark's,
  it shows which layers a supernet over- or under-values."""
  return [float(stats.spearmanr(widths[:, g], values).statistic)
          if rank.defined(widths[:, g], values) else None
          for g in range(widths.shape[1])]


def agreement(values: np.ndarray, accuracy: np.ndarray, macs: np.ndarray,
              strata: np.ndarray, full_macs: float, widths: np.ndarray
              ) -> dict[str, Any]:
  """The whole-sample figures (None where undefined: a constant ranking),
  τ within each MACs quintile and their mean over the quintiles where it is
  defined, the picks and the per-layer sensitivity. Top-10% ties (MACs
  alone has many) are broken by key order."""
  within = [_tau(values[strata == q], accuracy[strata == q])
            for q in range(sample.QUINTILES)]
  known = [t for t in within if t is not None]
  whole = (rank.agreement(values, accuracy)
           if rank.defined(values, accuracy)
           else dict.fromkeys(('kendall_tau', 'spearman_rho',
                               'top10_overlap')))
  return {**whole,
          'within_quintile_tau': within,
          'within_quintile_tau_mean': float(np.mean(known)) if known else None,
          'within_quintile_tau_count': len(known),
          'picks': {f'{b:g}': pick(values, accuracy, macs, b * full_macs)
                    for b in BUDGETS},
          'layer_sensitivity': layer_sensitivity(values, widths)}


def compared_keys(keys: list[str], truth: dict[str, float]) -> list[str]:
  """The sampled keys the results file holds; fewer than 2 is an error."""
  compared = [k for k in keys if k in truth]
  if len(compared) < 2:
    raise errors.InvalidInput(
        f'--results holds {len(compared)} of the {len(keys)} '
        'sampled architectures; a ranking needs at least 2: '
        'give the benchmark\'s whole results file')
  return compared


def tau_difference(a: np.ndarray, b: np.ndarray, accuracy: np.ndarray
                   ) -> dict[str, Any] | None:
  """τ(a) - τ(b) against `accuracy`, with a 95% interval from a paired
  bootstrap over architectures: is one ranking better than the other, or
  is the gap within what another sample of the same size could give?"""
  if not (rank.defined(a, accuracy) and rank.defined(b, accuracy)):
    return None

  def gap(a, b, accuracy):
    return (stats.kendalltau(a, accuracy).statistic -
            stats.kendalltau(b, accuracy).statistic)

  # A few archs make resamples that repeat one arch, whose τ is undefined
  # (NaN): scipy warns (constant input, a degenerate distribution) and the
  # interval is NaN. That is an answer, reported as None below, not a fault
  # for stderr.
  with warnings.catch_warnings():
    warnings.simplefilter('ignore', stats.ConstantInputWarning)
    warnings.simplefilter('ignore', stats.DegenerateDataWarning)
    interval = stats.bootstrap(
        (a, b, accuracy), gap, paired=True, vectorized=False,
        n_resamples=BOOTSTRAP_RESAMPLES, method='percentile',
        random_state=np.random.default_rng(0)).confidence_interval
  ci95 = [float(interval.low), float(interval.high)]
  return {'difference': float(gap(a, b, accuracy)),
          'ci95': ci95 if np.all(np.isfinite(ci95)) else None}


def comparisons(values: dict[str, np.ndarray], accuracy: np.ndarray
                ) -> dict[str, Any]:
  """Whole-sample τ gaps that answer the experiment's questions: each
  score definition against its supernet's default score, BCNet against UA,
  and each supernet against MACs alone."""
  pairs = [(name, name.split('/')[0] + '/score') for name in values
           if '/' in name and not name.endswith('/score')]
  defaults = [name for name in values if name.endswith('/score')]
  pairs += list(zip(defaults, defaults[1:]))
  pairs += [(name, 'macs_only') for name in defaults]
  return {f'{a} - {b}': tau_difference(values[a], values[b], accuracy)
          for a, b in pairs}


def build(space: str, keys: list[str], details: dict[str, Any],
          truth: dict[str, float], caveat: str | None = None
          ) -> dict[str, Any]:
  """report.json's figures over the sampled keys the results file holds;
  `caveat`: why they do not measure the method (the run's size,
  experiment.Size.caveat), kept with them so that no reader of the file
  takes them for results; None: they do."""
  compared = compared_keys(keys, truth)
  costs = sample.benchmark_costs(space)
  widths = np.stack([sample.widths(k) for k in compared])
  macs = costs.macs(widths)
  accuracy = np.asarray([truth[k] for k in compared])
  quintile = sample.quintiles(space)
  strata = np.asarray([quintile[k] for k in compared])
  full = float(costs.macs(costs.space.full()))
  out = {'caveat': caveat,
         'space': space, 'sample': len(keys), 'compared': len(compared),
         'per_quintile': [int(np.sum(strata == q))
                          for q in range(sample.QUINTILES)],
         'full_macs': full, 'truth': 'mean stand-alone top-1 (%) of the '
         'benchmark\'s three runs',
         'truth_layer_sensitivity': layer_sensitivity(accuracy, widths),
         'rankings': {}}
  values = rankings(details, compared, macs)
  for name, ranking in values.items():
    figures = agreement(ranking, accuracy, macs, strata, full, widths)
    for p in figures['picks'].values():
      if p is not None:
        p['key'] = compared[p.pop('index')]
    out['rankings'][name] = figures
  out['tau_gaps'] = comparisons(values, accuracy)
  return out


def table(report: dict[str, Any]) -> str:
  """The report as a table a reader understands, its caveat (if any)
  first."""
  def fmt(x, spec='.3f'):
    return '-' if x is None else format(x, spec)

  rows = []
  for name, r in report['rankings'].items():
    picks = [r['picks'][f'{b:g}'] for b in BUDGETS]
    rows.append([name, fmt(r['kendall_tau']), fmt(r['spearman_rho']),
                 fmt(r['top10_overlap'], '.2f'),
                 fmt(r['within_quintile_tau_mean'])] +
                ['-' if p is None else
                 f'{p["accuracy"]:.2f} ({p["percentile"]:.0f}%)'
                 for p in picks])
  bands = [next((r['picks'][f'{b:g}'] for r in report['rankings'].values()
                 if r['picks'][f'{b:g}']), None) for b in BUDGETS]
  best = ', '.join(f'{b:.0%}: ' + ('none sampled' if p is None else
                                   f'{p["best_in_band"]:.2f} of '
                                   f'{p["band_size"]}')
                   for b, p in zip(BUDGETS, bands))
  caveat = report['caveat']
  return ((f'{caveat}\n' if caveat else '') +
          f'Rankings of {report["compared"]} sampled {report["space"]} '
          f'architectures against the benchmark (per MACs quintile: '
          f'{report["per_quintile"]}); picks: accuracy (percentile in its '
          f'band [{BAND_LOW:g} F, F]):\n' + console.table(
              ['ranking', 'Kendall tau', 'Spearman rho', 'top-10%',
               'tau within quintile'] +
              [f'pick at {b:.0%}' for b in BUDGETS], rows) +
          f'\nThe best sampled accuracy in each band: {best}.\n'
          'Whole-sample tau gaps, 95% interval (paired bootstrap over '
          'architectures):\n' + '\n'.join(
              f'  {pair}: ' + ('-' if g is None else
                               f'{g["difference"]:+.3f} ' +
                               ('[too few archs]' if g['ci95'] is None else
                                f'[{g["ci95"][0]:+.3f}, {g["ci95"][1]:+.3f}]'))
              for pair, g in report['tau_gaps'].items()))


def plot(space: str, keys: list[str], details: dict[str, Any],
         truth: dict[str, float], path: str) -> None:
  """Supernet score against benchmark accuracy, a panel per supernet,
  colored by MACs."""
  # Here, not at the top: only the report's end draws (light imports).
  from matplotlib import figure  # pylint: disable=g-import-not-at-top
  compared = [k for k in keys if k in truth]
  costs = sample.benchmark_costs(space)
  macs = costs.macs(np.stack([sample.widths(k) for k in compared])) / 1e6
  accuracy = [truth[k] for k in compared]
  fig = figure.Figure(figsize=(4.5 * len(details) + 1, 4.2), dpi=120,
                      layout='constrained')
  axes = fig.subplots(1, len(details), squeeze=False)[0]
  for ax, (name, scored) in zip(axes, details.items()):
    sides = ' and '.join(s for s in ('left', 'right') if s in scored[
        compared[0]])
    points = ax.scatter(accuracy, [scored[k]['score'] for k in compared],
                        c=macs, cmap='viridis', s=12)
    ax.set_xlabel('benchmark top-1 (%, mean of 3 runs)')
    ax.set_ylabel(f'supernet score ({sides} accuracy)')
    ax.set_title(f'{name} supernet, {len(compared)} {space} archs')
  fig.colorbar(points, ax=list(axes), label='MACs (millions)')
  tmp = f'{path}.{os.getpid()}.tmp.png'
  fig.savefig(tmp)
  os.replace(tmp, path)
