"""Inference speed of a searched arch's compact model against full width.

  python bench/compact_latency.py --arch=WORKDIR/search/arch.json \
      [--batches=1,128] [--repeats=20]
  python bench/compact_latency.py --model=resnet20_cifar --macs_fraction=0.5

Prints one JSON line per batch size: images_per_s and ms_per_batch of the
compact (physically narrow) model of the arch and of the nominal full-width
model (B bins everywhere) on the same device, jitted, compile excluded
(one warm-up call), with macs_ratio = arch MACs / full MACs and speedup =
compact images/s / full images/s beside it. Without --arch, the arch is the
uniformly scaled width vector of the largest bins within --macs_fraction of
the full MACs. Weights are random: the cost does not depend on them.
"""

import argparse
import json
import time

import jax
import numpy as np

from bcnet_jax import models
from bcnet_jax.space import search_space as space_lib
from bcnet_jax.space.costs import CostModel


def images_per_s(model, batch: int, repeats: int) -> tuple[float, float]:
  """(images/s, ms per batch) of jitted inference at `batch`."""
  variables = model.init(jax.random.key(0), model.dummy_input(1),
                         train=False)
  x = jax.device_put(np.random.default_rng(0).normal(
      size=model.dummy_input(batch).shape).astype(np.float32))  # timed: none
  infer = jax.jit(lambda v, x: model.apply(v, x, train=False)[0])
  jax.block_until_ready(infer(variables, x))  # compile
  start = time.perf_counter()
  for _ in range(repeats):
    out = infer(variables, x)
  jax.block_until_ready(out)
  seconds = (time.perf_counter() - start) / repeats
  return batch / seconds, 1e3 * seconds


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('--arch', help='arch.json (default: uniform scaling)')
  parser.add_argument('--model', default='resnet20_cifar')
  parser.add_argument('--macs_fraction', type=float, default=0.5)
  parser.add_argument('--in_channels', type=int, default=3,
                      help='channels of the input image (1 for MNIST)')
  parser.add_argument('--batches', default='1,128')
  parser.add_argument('--repeats', type=int, default=20)
  args = parser.parse_args()
  if args.arch:
    arch = space_lib.read_arch(args.arch)
    space = models.get_space(arch['model'], arch['bins'], arch['min_bins'])
    widths, resolution = space.widths_from_arch(arch), arch['resolution']
    name = arch['model']
  else:
    name, space = args.model, models.get_space(args.model)
    supernet = models.get_model(name)
    resolution, costs = supernet.resolution, CostModel(supernet)
    widths = costs.uniform_within(args.macs_fraction *
                                  costs.macs(space.full()))
  nets = {kind: models.get_model(name, widths=c, space=space,
                                 resolution=resolution,
                                 in_channels=args.in_channels)
          for kind, c in (('compact', widths), ('full', space.full()))}
  costs = CostModel(nets['full'])
  macs = {kind: int(costs.macs(np.asarray(net.widths)))
          for kind, net in nets.items()}
  for batch in (int(b) for b in args.batches.split(',')):
    rates = {kind: images_per_s(net, batch, args.repeats)
             for kind, net in nets.items()}
    print(json.dumps({
        'bench': 'compact_latency', 'model': name, 'batch': batch,
        'widths': [int(w) for w in widths],
        'compact_images_per_s': rates['compact'][0],
        'compact_ms_per_batch': rates['compact'][1],
        'full_images_per_s': rates['full'][0],
        'full_ms_per_batch': rates['full'][1],
        'compact_macs': macs['compact'], 'full_macs': macs['full'],
        'macs_ratio': macs['compact'] / macs['full'],
        'speedup': rates['compact'][0] / rates['full'][0],
        'device': jax.devices()[0].device_kind}), flush=True)


if __name__ == '__main__':
  main()
