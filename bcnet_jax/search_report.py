"""What a search shows and leaves behind: its start lines, the table of the
evolution against the baselines, history.jsonl and population.png."""

from __future__ import annotations

import json
import os
from typing import Any

from matplotlib import figure

from bcnet_jax import console
from bcnet_jax import files
from bcnet_jax import supernet

METHODS = {'evolution': 'evolution (prior-seeded)',
           'uniform': 'uniform scaling',
           'random': 'random search'}


def announce(search, workdir: str) -> None:
  """What the search will do, before it does it."""
  s, config = search.config.search, search.config
  full = search.costs.macs(search.space.full())
  units = search.units()
  console.say(
      f'bcnet_jax.search: {config.model.name} supernet of step '
      f'{int(search.trained.step)} in {workdir}\n'
      f'  budget F = {search.budget / 1e6:,.2f}M MACs '
      f'({search.budget / full:.0%} of the full {full / 1e6:,.2f}M); '
      f'candidates in [{s.band_low:g} F, F]\n'
      f'  evolution: population {s.population}, {s.generations} generations '
      f'of {s.mutations} mutations + {s.crossovers} crossovers from the top '
      f'{s.top_k}; then uniform scaling and random search\n'
      f'  fitness: ½(left + right) accuracy on '
      f'{supernet.EVAL_SPLITS[config.eval.split]}, BatchNorm recalibrated on '
      f'{config.eval.bn_calib_batches} batches; '
      f'{search.evaluator.call_size} candidates per call')
  if search.state['units_done']:
    console.say(f'  resuming after {search.state["units_done"]} of '
                f'{len(units)} units ({len(search.state["records"])} width '
                'vectors scored)')


def table(search, summary: dict[str, Any]) -> str:
  """The best of each method: MACs, params, accuracies, cost."""
  rows = []
  for phase, label in METHODS.items():
    r = summary[phase]
    rows.append([label, f'{r["macs"] / 1e6:,.2f}M', f'{r["params"]:,}',
                 f'{r["left"]:.3f}', f'{r["right"]:.3f}', f'{r["score"]:.3f}',
                 str(r['evaluations']), f'{r["wall_time_s"]:.0f}s'])
  return (f'Best width vector of each method at a budget of '
          f'{summary["macs_budget"] / 1e6:,.2f}M MACs, scored on '
          f'{supernet.EVAL_SPLITS[search.config.eval.split]}:\n' +
          console.table(['method', 'MACs', 'params', 'left', 'right', 'score',
                         'evaluated', 'time'], rows) +
          f'\nThe winner: {summary["arch"]}')


def write(search, summary: dict[str, Any]) -> None:
  """history.jsonl and population.png (arch.json and summary.json are the
  caller's)."""
  files.write_text_atomic(
      os.path.join(search.folder, 'history.jsonl'),
      ''.join(f'{json.dumps(line)}\n' for line in search.state['history']))
  _plot(search, summary, os.path.join(search.folder, 'population.png'))


def _plot(search, summary: dict[str, Any], path: str) -> None:
  """Score against MACs of every evaluated width vector."""
  fig = figure.Figure(figsize=(7, 4.5), dpi=120)  # no pyplot: no backend
  ax = fig.subplots()
  randoms = search.records('random')
  ax.scatter([r['macs'] / 1e6 for r in randoms],
             [r['score'] for r in randoms], s=10, c='0.7',
             label='random search')
  evolved = search.records('evolution')
  points = ax.scatter([r['macs'] / 1e6 for r in evolved],
                      [r['score'] for r in evolved], s=14,
                      c=[r['generation'] for r in evolved], cmap='viridis')
  fig.colorbar(points, ax=ax, label='generation',
               ticks=range(search.generations + 1))
  for phase, marker, colour in (('evolution', '*', 'red'),
                                ('uniform', 'D', 'black'),
                                ('random', 's', 'tab:blue')):
    r = summary[phase]
    ax.scatter([r['macs'] / 1e6], [r['score']], marker=marker, s=120,
               c=colour, edgecolors='white', zorder=3,
               label=f'best of {METHODS[phase]}')
  ax.axvline(summary['macs_budget'] / 1e6, color='red', ls='--', lw=1,
             label='budget F')
  ax.axvline(summary['band'][0] / 1e6, color='red', ls=':', lw=1,
             label='band low end')
  ax.set_xlabel('MACs (millions)')
  ax.set_ylabel('score: ½(left + right) accuracy')
  ax.set_title(f'{summary["model"]}: width vectors scored by the supernet')
  ax.legend(fontsize=7, loc='lower right')
  fig.tight_layout()
  tmp = f'{path}.{os.getpid()}.tmp.png'
  fig.savefig(tmp)
  os.replace(tmp, path)
