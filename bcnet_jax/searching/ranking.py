r"""How well the supernet ranks width vectors, against a ground truth.

  python -m bcnet_jax.rank --workdir=DIR --archs=ARCHS.json \
      [--truth=TRUTH.json] [--out=SCORES.json]

ARCHS.json lists width vectors (bins per group): a JSON list of lists, or
{key: [bins...]}, or {key: "4123412"} (one digit per group, for spaces with
at most 9 bins, as Channel-Bench-Macro names its architectures). Each is
scored with the batch evaluator (the search's fitness, docs/design.md §4)
and {key: score} is written to --out (default DIR/rank/<ARCHS>.scores.json);
beside it, <...>.details.json holds per key the score's standard error
over the eval images and each scored path's accuracy and mean loss; the
first-ranked key's lead over the second comes with its paired error.
With TRUTH.json ({key: accuracy} or {key: {"mean": accuracy, ...}}, e.g.
accuracies of stand-alone trained networks) it prints Kendall's τ,
Spearman's ρ and the overlap of the top 10% for the supernet's ranking and
for ranking by MACs alone, over the keys both files share.
"""

from __future__ import annotations

import os
from typing import Any, Collection

import jax
import numpy as np
from scipy import stats

from bcnet_jax.run import console
from bcnet_jax.run import errors
from bcnet_jax.run import files
from bcnet_jax.run import run_config
from bcnet_jax.run import stages as run_lib
from bcnet_jax.space.costs import CostModel
from bcnet_jax.space.search_space import SearchSpace
from bcnet_jax.supernet import stage as supernet


def _load_object(path: str, what: str, expected: str) -> dict[str, Any]:
  """The non-empty JSON object of --`what` (a list counts as {index:
  item}); anything else is an error saying it holds `expected`."""
  try:
    data = files.read_json(path)
  except FileNotFoundError:
    raise errors.MissingInput(f'--{what}: no file {path}') from None
  except ValueError as e:
    raise errors.InvalidInput(f'--{what}: {e}') from None
  if isinstance(data, list):
    data = {str(i): v for i, v in enumerate(data)}
  if not isinstance(data, dict) or not data:
    raise errors.InvalidInput(f'--{what}: {path} must hold {expected}')
  return data


def read_archs(path: str, space: SearchSpace) -> dict[str, np.ndarray]:
  """{key: width vector} from ARCHS.json, every vector checked."""
  data = _load_object(path, 'archs', 'a non-empty JSON list of width '
                      'vectors or an object {key: width vector}')
  out = {}
  for key, value in data.items():
    if isinstance(value, str):
      if space.bins > 9 or not (value.isascii() and value.isdigit()):
        raise errors.InvalidInput(
            f'--archs: {path}: {key}: {value!r} is a string; digit strings '
            f'name width vectors only in spaces with at most 9 bins and only '
            f'with digits ({space.model} has {space.bins} bins): give a list')
      value = [int(d) for d in value]
    try:
      widths = np.asarray(value)
      if widths.ndim != 1:
        raise ValueError(f'expected one list of {space.num_groups} bins, got '
                         f'shape {widths.shape}')
      out[key] = space.validate_widths(widths)
    except (ValueError, TypeError) as e:
      raise errors.InvalidInput(f'--archs: {path}: {key}: {e}') from None
  return out


def read_truth(path: str) -> dict[str, float]:
  """{key: accuracy} from TRUTH.json."""
  data = _load_object(path, 'truth', 'a non-empty object {key: accuracy} '
                      'or {key: {"mean": accuracy, ...}}')
  out = {}
  for key, value in data.items():
    if isinstance(value, dict):
      value = value.get('mean')
    if (isinstance(value, bool) or not isinstance(value, (int, float))
        or not np.isfinite(value)):
      raise errors.InvalidInput(
          f'--truth: {path}: {key}: expected a finite number or '
          f'an object with one as "mean", got {data[key]!r}')
    out[key] = float(value)
  return out


def defined(a: np.ndarray, b: np.ndarray) -> bool:
  """Rank statistics need two values, neither side constant (scipy would
  warn and give NaN)."""
  return len(a) >= 2 and np.ptp(a) > 0 and np.ptp(b) > 0


def agreement(predicted: np.ndarray, truth: np.ndarray
              ) -> dict[str, float | None]:
  """Kendall τ, Spearman ρ (None where undefined: a constant ranking) and
  the overlap of the top 10% (rounded up)."""
  top = int(np.ceil(0.1 * len(truth)))
  best_predicted = set(np.argsort(-predicted, kind='stable')[:top])
  best_true = set(np.argsort(-truth, kind='stable')[:top])
  ranked = defined(predicted, truth)
  return {'kendall_tau': float(stats.kendalltau(predicted, truth).statistic)
                         if ranked else None,
          'spearman_rho': float(stats.spearmanr(predicted, truth).statistic)
                          if ranked else None,
          'top10_overlap': len(best_predicted & best_true) / top}


def details_path(scores_path: str) -> str:
  """Where the details of a scores file go: beside it."""
  return os.path.splitext(scores_path)[0] + '.details.json'


def score_archs(setup: supernet.Setup, trained, archs: dict[str, np.ndarray],
                status=None) -> dict[str, dict[str, float]]:
  """{key: {'score', 'score_se', side and 'loss_<side>' per scored side}}:
  the archs scored by the batch evaluator on the setup's scoring data; a
  `status` hears of every eval batch (someone watches)."""
  calibration, eval_batches = setup.scoring_data(cached=True)
  result = setup.evaluator().score(
      trained.params, trained.batch_stats, list(archs.values()),
      calibration=calibration, eval_batches=eval_batches,
      **({} if status is None else
         {'status': status, 'eval_batch_count': setup.eval_batch_count}))
  fields = ('score', 'score_se') + tuple(
      f'{prefix}{side}' for side in result['sides']
      for prefix in ('', 'loss_'))
  return {key: {f: float(result[f][i]) for f in fields}
          for i, key in enumerate(archs)}


def leader(setup: supernet.Setup, trained, archs: dict[str, np.ndarray],
           scores: dict[str, float]) -> dict[str, Any]:
  """The first- and second-ranked keys rescored per image: the first's
  lead with its paired standard error (same images, so each image's
  difficulty cancels), far tighter than the scores' own errors."""
  first, second = sorted(scores, key=scores.get, reverse=True)[:2]
  calibration, eval_batches = setup.scoring_data(cached=True)
  _, [(difference, se)] = setup.evaluator().leads(
      trained.params, trained.batch_stats, [archs[first], archs[second]],
      calibration=calibration, eval_batches=eval_batches)
  return {'keys': [first, second], 'difference': difference, 'se': se}


def scored_images(setup: supernet.Setup) -> str:
  """What the scores were measured on, e.g. '500 minival images'."""
  split = setup.config.eval.split
  name = 'minival' if split == 'minival' else setup.config.input.eval_split
  return f'{setup.scored_examples:,} {name} images'


def _agreements(setup: supernet.Setup, archs: dict[str, np.ndarray],
                scores: dict[str, float], truth: dict[str, float],
                shared: list[str], truth_path: str) -> dict[str, Any]:
  """How the supernet's ranking and the ranking by MACs alone agree with
  the truth over the `shared` keys; printed as a table."""
  costs = CostModel(setup.model)
  true = np.asarray([truth[k] for k in shared])
  summary = {
      'compared': len(shared),
      'supernet': agreement(np.asarray([scores[k] for k in shared]), true),
      'macs_only': agreement(np.asarray(
          [costs.macs(archs[k]) for k in shared], np.float64), true)}
  console.say(f'Agreement with {truth_path} over {len(shared)} width '
              'vectors:\n' + console.table(
                  ['ranking by', 'Kendall tau', 'Spearman rho',
                   'top-10% overlap'],
                  [[name] + ['-' if summary[k][s] is None
                             else f'{summary[k][s]:.3f}'
                             for s in ('kendall_tau', 'spearman_rho')] +
                   [f'{summary[k]["top10_overlap"]:.2f}']
                   for k, name in (('supernet', 'supernet score'),
                                   ('macs_only', 'MACs only'))]))
  return summary


def run(config: Any | None, workdir: str, archs_path: str,
        truth_path: str | None = None, out_path: str | None = None,
        overridden: Collection[str] = ()) -> dict[str, Any]:
  """Scores the archs; with a truth, how both rankings agree with it.
  `config`: as search.run's (None: the workdir's)."""
  workdir = run_lib.check_workdir(workdir)
  config = run_config.for_later_stage(config, workdir, overridden,
                                      stage='rank')
  setup = supernet.Setup.create(config)
  space = setup.model.space
  archs = read_archs(archs_path, space)
  truth = None if truth_path is None else read_truth(truth_path)
  if truth is not None:
    shared = [k for k in archs if k in truth]
    if len(shared) < 2:
      raise errors.InvalidInput(
          f'--truth: {truth_path} and --archs: {archs_path} share '
          f'{len(shared)} keys (e.g. archs {list(archs)[:3]}, truth '
          f'{list(truth)[:3]}); a ranking needs at least 2')
  out_path = out_path or os.path.join(
      workdir, 'rank',
      os.path.splitext(os.path.basename(archs_path))[0] + '.scores.json')
  trained = supernet.restore_trained(setup, workdir)
  console.say(f'bcnet_jax.rank: {console.plural(len(archs), "width vector")} '
              f'of {archs_path} on '
              f'the {config.model.name} supernet of step {int(trained.step)}')
  console.say(f'  {supernet.score_definition(setup)}, on '
              f'{scored_images(setup)}')
  progress = console.ScoringProgress(
      len(archs), 'To go faster: fewer --archs, or fewer BatchNorm '
      'calibration batches (--config.eval.bn_calib_batches, now '
      f'{config.eval.bn_calib_batches}; noisier scores).')
  try:
    details = score_archs(setup, trained, archs, status=progress)
  finally:
    progress.close()
  scores = {k: d['score'] for k, d in details.items()}
  if jax.process_index() == 0:
    files.write_json_atomic(out_path, scores)
    files.write_json_atomic(details_path(out_path), details)
  standard_errors = [d['score_se'] for d in details.values()]
  summary = {'scores': out_path, 'details': details_path(out_path),
             'archs': len(archs), 'supernet_step': int(trained.step),
             'sides': list(setup.scored_sides),
             'score_se_median': float(np.median(standard_errors))}
  console.say(f'  standard error of a score over the {scored_images(setup)}'
              ': median '
              f'{summary["score_se_median"]:.4f} (per key in '
              f'{details_path(out_path)})')
  if len(archs) > 1:
    summary['leader'] = leader(setup, trained, archs, scores)
    lead = summary['leader']
    console.say(f'  {lead["keys"][0]} ranks first, {lead["difference"]:+.4f} '
                f'± {lead["se"]:.4f} (paired, the same images) above '
                f'{lead["keys"][1]}')
  if truth is not None:
    summary.update(_agreements(setup, archs, scores, truth, shared,
                               truth_path))
  console.say(f'Wrote {out_path}')
  return summary
