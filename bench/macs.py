"""Throughput of the vectorized cost model: width vectors per second.

  python bench/macs.py [--model mobilenetv2] [--count 100000] [--repeats 5]

Prints one JSON line: model, groups, count, seconds (best of repeats, MACs and
params of `count` random width vectors) and width_vectors_per_s.
"""

import argparse
import json
import time

import numpy as np

from bcnet_jax import models
from bcnet_jax.space.costs import CostModel


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('--model', default='mobilenetv2',
                      choices=list(models.MODELS))
  parser.add_argument('--count', type=int, default=100_000)
  parser.add_argument('--repeats', type=int, default=5)
  args = parser.parse_args()
  costs = CostModel(models.get_model(args.model))
  widths = costs.space.sample(np.random.default_rng(0), args.count)
  best = float('inf')
  for _ in range(args.repeats):
    start = time.perf_counter()
    costs.macs(widths)
    costs.params(widths)
    best = min(best, time.perf_counter() - start)
  print(json.dumps({
      'bench': 'macs', 'model': args.model,
      'groups': costs.space.num_groups, 'count': args.count,
      'seconds': round(best, 4),
      'width_vectors_per_s': round(args.count / best),
  }))


if __name__ == '__main__':
  main()
