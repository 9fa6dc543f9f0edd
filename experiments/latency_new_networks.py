"""A finished latency file scored on random networks it has never seen.

  python experiments/latency_new_networks.py --latency_file=latency.json \
      [--seed 1] [--networks 30] [--repeats 20] [--out measured.json]

A build's held-out networks say how well its predictor ranks networks it
was not fitted to, but once they have been looked at while choosing how to
fit, they no longer say it without bias. This draws `networks` more random
width vectors from another seed, measures each twice as the build measures
its held-out ones (in turns against the full network, compiled again for the
second pass; milliseconds = ratio · the file's full_ms, as a search
measures), and prints one JSON line: the mean absolute percentage error and
Kendall τ of the file's predictor, of the per-layer table with one scale and
offset, of MACs with their own fit (both fitted to the file's fit networks)
against the mean of the two measurements, and of the first measurement as a
prediction of the second; `--out` keeps the width vectors and both
measurements (to score another predictor on them later). Run it on the
machine the file was measured on, with nothing else running. Models of
the default bins and kwargs only.
"""

import argparse
import json

import numpy as np

from bcnet_jax import models
from bcnet_jax.run import files
from bcnet_jax.space.costs import CostModel
from bcnet_jax.timing import clock
from bcnet_jax.timing import predictor


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('--latency_file', required=True)
  parser.add_argument('--seed', type=int, default=1)
  parser.add_argument('--networks', type=int, default=30)
  parser.add_argument('--repeats', type=int, default=clock.REPEATS)
  parser.add_argument('--out', help='a JSON file for the measurements')
  args = parser.parse_args()
  with open(args.latency_file) as f:
    record = json.load(f)
  identity = record['model']
  if (identity['model.bins'], identity['model.kwargs'],
      identity['model.round_to']) != (None, '{}', 1):
    raise SystemExit(f'{args.latency_file}: a model of other bins or '
                     f'kwargs ({identity}); this script builds the default')
  model = models.get_model(identity['model.name'],
                           num_classes=identity['num_classes'],
                           in_channels=identity['input.channels'],
                           resolution=identity['input.resolution'])
  widths = model.space.sample(np.random.default_rng(args.seed),
                              args.networks)
  seen = {tuple(n['widths']) for n in record['networks']}
  widths = np.array([w for w in widths if tuple(w) not in seen])
  reference = clock.network_runner(model, model.space.full(),
                                   batch=record['batch'])
  passes = []
  for _ in range(2):
    times, _ = clock.ratios(
        [clock.network_runner(model, w, batch=record['batch'])
         for w in widths], *reference, repeats=args.repeats)
    passes.append(times * record['full_ms'])
  if args.out:
    files.write_json_atomic(args.out, {
        'latency_file': args.latency_file, 'seed': args.seed,
        'widths': widths.tolist(), 'ms': [p.tolist() for p in passes]})
  truth = 0.5 * (passes[0] + passes[1])
  fit = [n for n in record['networks'] if n['role'] == 'fit']
  fit_widths = np.array([n['widths'] for n in fit])
  fit_ms = np.array([n['ms'] for n in fit])

  def scaled(cost):
    scale, offset = predictor.fit(cost(fit_widths), fit_ms)
    return predictor.errors_of(scale * cost(widths) + offset, truth)

  print(json.dumps({
      'latency_file': args.latency_file, 'seed': args.seed,
      'networks': len(widths),
      'correction': {k: record['correction'].get(k)
                     for k in ('fitted_to', 'ridge')},
      'predictor': predictor.errors_of(
          predictor.cost_of(model, record)(widths), truth),
      'table': scaled(predictor.table_cost(model, record['cells'],
                                           record['plan']['step'])),
      'macs': scaled(CostModel(model).macs_cost()),
      'repeat': predictor.errors_of(passes[0], passes[1])}))


if __name__ == '__main__':
  main()
