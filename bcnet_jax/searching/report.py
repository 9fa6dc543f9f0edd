"""What a search shows and leaves behind: its start lines, the table of the
evolution against the baselines, history.jsonl and population.png."""

from __future__ import annotations

import json
import os
import shlex
from typing import Any

from bcnet_jax.run import console
from bcnet_jax.run import files
from bcnet_jax.run import identity
from bcnet_jax.run import run_config
from bcnet_jax.run import stages as run
from bcnet_jax.supernet import stage as supernet

METHODS = {'evolution': 'evolution (prior-seeded)',
           'uniform': 'uniform scaling',
           'random': 'random search',
           'magnitude': 'BN magnitude ranking'}
# A difference counts as real when it exceeds this many paired standard
# errors (about 95% two-sided confidence).
DISTINGUISHABLE_SE = 2.0


def announce(search, workdir: str) -> None:
  """What the search will do, before it does it."""
  s, config, cost = search.config.search, search.config, search.cost
  full = cost(search.space.full())
  units = search.units()
  predicted = ('' if cost.name == 'macs' else
               f' predicted at batch {search.latency_record["batch"]} by '
               f'{s.latency_file}')
  console.say(
      f'bcnet_jax.search: {config.model.name} supernet of step '
      f'{int(search.trained.step)} in {workdir}\n'
      f'  budget F = {cost.describe(search.budget)}{predicted} '
      f'({search.budget / full:.0%} of the full {cost.describe(full)}); '
      f'candidates in [{s.band_low:g} F, F]\n'
      f'  evolution: population {s.population}, '
      f'{console.plural(s.generations, "generation")} of '
      f'{console.plural(s.mutations, "mutation")} + '
      f'{console.plural(s.crossovers, "crossover")} from the top '
      f'{s.top_k}; then uniform scaling, random search and magnitude\n'
      f'  fitness: {supernet.score_definition(search.setup)} on '
      f'{run.EVAL_SPLITS[config.eval.split]}, BatchNorm recalibrated on '
      f'{console.plural(config.eval.bn_calib_batches, "batch")}; '
      f'{console.plural(search.evaluator.call_size, "candidate")} per call')
  if search.state['units_done']:
    scored = console.plural(len(search.state['records']), 'width vector')
    console.say(f'  resuming after {search.state["units_done"]} of '
                f'{len(units)} units ({scored} scored)')


def table(search, summary: dict[str, Any]) -> str:
  """The best of each method: MACs, params, latency (predicted where it is
  the constraint, and measured), accuracies with their standard errors, the
  winner against each baseline, cost; then the winner's speed-up, what the
  differences mean and the command that retrains the winner."""
  rows = []
  by_latency = summary['constraint'] == 'latency_ms'
  for phase, label in METHODS.items():
    r = summary[phase]
    versus = r.get('winner_minus_this')
    rows.append([('* ' if phase == 'evolution' else '  ') + label,
                 f'{r["macs"] / 1e6:,.2f}M', f'{r["params"]:,}'] +
                ([f'{r["latency_ms_predicted"]:.3f}'] if by_latency else []) +
                [f'{r["latency_ms"]:.3f}'] +
                ['-' if r[k] is None else f'{r[k]:.3f}'
                 for k in ('left', 'right')] +
                [f'{r["score"]:.3f} ± {r["score_se"]:.3f}',
                 '' if versus is None else
                 f'{versus["difference"]:+.3f} ± {versus["se"]:.3f}',
                 str(r['evaluations']), f'{r["wall_time_s"]:.0f}s'])
  latency = summary['latency']
  return (f'Best width vector of each method at a budget of '
          f'{search.cost.describe(summary["budget"])}, scored on '
          f'{summary["examples"]:,} images of '
          f'{run.EVAL_SPLITS[search.config.eval.split]}\n'
          f'({summary["score"]}; ± one standard error over those images; '
          '"winner -" is the winner\'s score minus this one, with its '
          'paired error; latency in ms at batch '
          f'{latency["batch"]} on {latency["device"]}):\n' +
          console.table(['method', 'MACs', 'params'] +
                        (['predicted', 'measured'] if by_latency else
                         ['latency']) +
                        ['left', 'right', 'score', 'winner -', 'evaluated',
                         'time'], rows) +
          '\n' + speedup(summary) + '\n' + verdict(summary) +
          f'\n* the winner, written to {summary["arch"]}. Retrain it with '
          'the supernet\'s data and recipe:\n  ' + retrain_command(search))


def retrain_command(search) -> str:
  """The command that retrains the winner: the supernet's config.json,
  and this search's fields that are not the search's own but differ from
  it (a moved input.data_dir, retrain.*)."""
  workdir = os.path.dirname(search.folder)
  saved_path = run_config.path(workdir)
  overrides = []
  if os.path.exists(saved_path):
    saved = identity.flatten(run_config.read(saved_path))
    overrides = [f'--config.{k}={tuple(v) if isinstance(v, list) else v}'
                 for k, v in sorted(identity.flatten(search.config).items())
                 if not k.startswith(('search.', 'eval.')) and
                 saved.get(k) != v]
  else:  # config.json removed, or trained by bcnet_jax 0.1
    saved_path = 'THE_CONFIG_IT_WAS_TRAINED_WITH'
  return shlex.join(
      ['python', '-m', 'bcnet_jax.train', f'--config={saved_path}',
       f'--workdir={os.path.join(workdir, "retrained")}',
       '--config.stage=retrain',
       f'--config.retrain.arch={search.folder}/arch.json'] + overrides)


def speedup(summary: dict[str, Any]) -> str:
  """The winner's measured latency against the full network's and uniform
  scaling's, with the measurement's noise."""
  latency, winner = summary['latency'], summary['evolution']['latency_ms']
  line = (f'Measured: the winner runs in {winner:.3f} ms, '
          f'{latency["speedup_over_full"]:.2f}x as fast as the full network '
          f'({latency["full_ms"]:.3f} ms) and '
          f'{latency["speedup_over_uniform"]:.2f}x as fast as uniform '
          f'scaling ({summary["uniform"]["latency_ms"]:.3f} ms); each the '
          f'median of {latency["repeats"]} calls, noise '
          f'±{100 * latency["noise"]:.1f}%.')
  scaled = latency.get('winner_on_file_scale_ms')
  if scaled is None:
    return line
  over = scaled / summary['budget'] - 1
  verdict = ('within it' if over <= 0 else
             f'{100 * over:.1f}% over it' + (
                 ', within the noise' if over <= latency['noise'] else ''))
  return (f'{line}\nAgainst the budget of {summary["budget"]:.3f} ms: the '
          f'winner takes {scaled:.3f} ms on the latency file\'s scale (its '
          f'ratio to the full network measured now, times the file\'s '
          f'full network), {verdict}.')


def verdict(summary: dict[str, Any]) -> str:
  """Whether the winner beats each baseline beyond the eval images' noise,
  in words, and what would tell them apart when it does not.

  The lead is measured on the images that selected the winner among many
  candidates, so it leans its way: a lead within the noise is surely not
  real, and one beyond it is real on this supernet only if it is large."""
  lines, unclear = [], []
  examples = summary['examples']
  for phase in list(METHODS)[1:]:
    versus = summary[phase]['winner_minus_this']
    diff, se = versus['difference'], versus['se']
    if versus['same_width_vector']:
      lines.append(f'The best of {METHODS[phase]} is the winner itself.')
    elif se > 0 and abs(diff) > DISTINGUISHABLE_SE * se:
      better = 'above' if diff > 0 else 'below'
      lines.append(f'The winner scores {better} {METHODS[phase]} by '
                   f'{abs(diff):.3f} ± {se:.3f} (paired): more than '
                   f'{DISTINGUISHABLE_SE:g} errors, measured on the images '
                   'that chose the winner.')
    else:
      needed = (examples * (DISTINGUISHABLE_SE * se / abs(diff)) ** 2
                if diff else float('inf'))
      unclear.append((f'{METHODS[phase]} ({diff:+.3f} ± {se:.3f})', needed))
  if unclear:
    needed = max(n for _, n in unclear)
    scale = ('no number of images would: the scores are equal' if
             needed == float('inf') else
             f'a lead this size needs about {needed:,.0f} images')
    lines.append(
        'The winner is not distinguishable from '
        f'{" or ".join(u for u, _ in unclear)}: the difference is within '
        f'{DISTINGUISHABLE_SE:g} paired errors on {examples:,} images. '
        f'Errors shrink as 1/sqrt(images); {scale}. Score on more held-out '
        'images (input.minival_size; they come out of training, so the '
        'supernet is trained again), or train the supernet longer so that '
        'widths differ more.')
  return '\n'.join(lines)


def write(search, summary: dict[str, Any]) -> None:
  """history.jsonl and population.png (arch.json and summary.json are the
  caller's)."""
  files.write_text_atomic(
      os.path.join(search.folder, 'history.jsonl'),
      ''.join(f'{json.dumps(line)}\n' for line in search.state['history']))
  _plot(search, summary, os.path.join(search.folder, 'population.png'))


def _plot(search, summary: dict[str, Any], path: str) -> None:
  """Score against the constraint (MACs or predicted latency) of every
  evaluated width vector; the legend beside
  the axes, so that it covers no point. The candidates' band [band_low F,
  F] is shaded and both its edges drawn, in a colour no point has, inside
  x-limits set with a margin: left to autoscaling, an edge could sit on
  the axes' border or under a point, and the band would not show."""
  # Here, not at the top: only the search's end draws (light imports).
  from matplotlib import figure  # pylint: disable=g-import-not-at-top
  fig = figure.Figure(figsize=(9, 4.5), dpi=120,  # no pyplot: no backend
                      layout='constrained')  # room for the outside legend
  ax = fig.subplots()
  if summary['constraint'] == 'macs':
    x, unit, xlabel = lambda r: r['macs'] / 1e6, 'M', 'MACs (millions)'
  else:
    x, unit, xlabel = (lambda r: r['latency_ms_predicted'], ' ms',
                       'predicted latency (ms)')
  randoms = search.records('random')
  ax.scatter([x(r) for r in randoms],
             [r['score'] for r in randoms], s=10, c='0.7',
             label='random search: scored')
  evolved = search.records('evolution')
  points = ax.scatter([x(r) for r in evolved],
                      [r['score'] for r in evolved], s=14,
                      c=[r['generation'] for r in evolved], cmap='viridis',
                      label='evolution: scored (colour: generation)')
  fig.colorbar(points, ax=ax, label='generation', pad=0.01,
               ticks=range(search.generations + 1))
  for phase, marker, colour, size in (('uniform', 'D', 'black', 70),
                                      ('random', 's', 'tab:blue', 70),
                                      ('magnitude', 'P', 'tab:green', 90),
                                      ('evolution', '*', 'red', 300)):
    r = summary[phase]
    ax.errorbar([x(r)], [r['score']], yerr=[r['score_se']],
                color=colour, lw=1, capsize=3, zorder=3)
    label = ('the winner (evolution\'s best, arch.json)' if
             phase == 'evolution' else f'best of {METHODS[phase]}')
    ax.scatter([x(r)], [r['score']], marker=marker, s=size,
               c=colour, edgecolors='black', linewidths=0.8, zorder=4,
               label=f'{label} ± 1 s.e.')
  low, budget = summary['band'][0], summary['budget']
  if summary['constraint'] == 'macs':
    low, budget = low / 1e6, budget / 1e6
  ax.axvspan(low, budget, color='tab:orange', alpha=0.12, lw=0, zorder=0,
             label='the candidates\' band')
  ax.axvline(budget, color='tab:orange', ls='--', lw=1.5, zorder=2.5,
             label=f'budget F = {budget:,.2f}{unit}')
  ax.axvline(low, color='tab:orange', ls=':', lw=1.5, zorder=2.5,
             label=f'band low end {search.config.search.band_low:g} F = '
                   f'{low:,.2f}{unit}')
  shown = [low, budget] + [x(r) for r in randoms + evolved] + [
      x(summary[phase]) for phase in METHODS]
  margin = 0.05 * (max(shown) - min(shown))
  ax.set_xlim(min(shown) - margin, max(shown) + margin)
  ax.set_xlabel(xlabel)
  ax.set_ylabel('score')
  ax.set_title(f'{summary["model"]}: width vectors scored by the supernet\n'
               f'({summary["score"]})', fontsize=9)
  fig.legend(*ax.get_legend_handles_labels(), fontsize=7,
             loc='outside right center')
  tmp = f'{path}.{os.getpid()}.tmp.png'
  fig.savefig(tmp)
  os.replace(tmp, path)
