"""Candidates/s of the batch evaluator against a static-width evaluator.

  python bench/evaluator.py --config=configs/demo.py [--candidates 16]

Scores the same `--candidates` random width vectors (both sides, BN
recalibrated, docs/design.md §4) on the config's calibration batches and
eval.split three ways, and prints one JSON line per way:
  way: 'batch' (evaluator_lib.Evaluator, K = eval.candidates_per_call per call),
    'masked_one_by_one' (the same evaluator called once per candidate,
    K = 1) or 'compact_sliced' (per candidate and side, slice_params and a
    compact model: one compile each, as a static-width implementation must).
  candidates_per_s: candidates / seconds. 'batch' and 'masked_one_by_one'
    are timed after one warm-up call: their one program serves the whole
    search. 'compact_sliced' includes its compiles: a static-width
    implementation pays them for every width vector it scores.
  speedup_of_batch: candidates_per_s of 'batch' / this way's.
  calibration_examples, eval_examples, model, devices: what was run.
The supernet is freshly initialized: the cost does not depend on the
weights, and the three ways must agree on every accuracy (checked).
"""

import json
import time

from absl import flags
import jax
import numpy as np

from bcnet_jax.run import app
from bcnet_jax.supernet import evaluator as evaluator_lib
from bcnet_jax.supernet import stage as supernet

# --config is bcnet_jax.app's flag (defined by app.run).
_CANDIDATES = flags.DEFINE_integer('candidates', 16,
                                   'Width vectors to score each way.')


WAYS = ('batch', 'masked_one_by_one', 'compact_sliced')


def measure(config, candidates: int, ways=WAYS) -> list[dict]:
  """One line per way of `ways` ('batch' first: the others compare with
  it); see the module docstring."""
  setup = supernet.Setup.create(config)
  state = setup.initial_state()
  calibration, eval_batches = setup.scoring_data(cached=True)
  rng = np.random.default_rng(0)
  widths = setup.model.space.sample(rng, candidates)
  evaluator = setup.evaluator()
  one_by_one = evaluator_lib.Evaluator(setup.model, setup.mesh, 1,
                                       setup.scored_sides)

  def batch():
    return evaluator.score(state.params, state.batch_stats, widths,
                           calibration=calibration,
                           eval_batches=eval_batches)['score']

  def masked_one_by_one():
    return np.concatenate([one_by_one.score(
        state.params, state.batch_stats, c, calibration=calibration,
        eval_batches=eval_batches)['score'] for c in widths])

  def compact_sliced():
    variables = {'params': state.params, 'batch_stats': state.batch_stats}
    return np.asarray([evaluator_lib.compact_scores(
        setup.model, variables, c, calibration=calibration,
        eval_batches=eval_batches, sides=setup.scored_sides)['score']
        for c in widths])

  examples = {
      'calibration_examples': sum(len(b['image']) for b in calibration()),
      'eval_examples': sum(int(np.sum(b['mask'])) for b in eval_batches())}
  k = evaluator.call_size
  warm_ups = {'batch': (evaluator, widths[:k]),
              'masked_one_by_one': (one_by_one, widths[:1])}
  runs = {'batch': batch, 'masked_one_by_one': masked_one_by_one,
          'compact_sliced': compact_sliced}
  rates, scores = {}, {}
  for name in ways:
    if name in warm_ups:  # compile once: the search reuses the program
      warm, some = warm_ups[name]
      warm.score(state.params, state.batch_stats, some,
                 calibration=calibration, eval_batches=eval_batches)
    start = time.perf_counter()
    scores[name] = runs[name]()
    rates[name] = len(widths) / (time.perf_counter() - start)
  lines = []
  for name in rates:
    np.testing.assert_allclose(scores[name], scores['batch'], atol=1e-9,
                               err_msg=f'{name} disagrees with batch')
    lines.append({
        'bench': 'evaluator', 'way': name, 'model': config.model.name,
        'candidates': len(widths),
        'candidates_per_call': k if name == 'batch' else 1,
        'candidates_per_s': rates[name],
        'speedup_of_batch': rates['batch'] / rates[name],
        **examples, 'split': config.eval.split,
        'devices': jax.device_count()})
  return lines


def main(argv) -> None:
  del argv
  for line in measure(app.config(), _CANDIDATES.value):
    print(json.dumps(line), flush=True)


if __name__ == '__main__':
  app.run(main, required=('config',))
