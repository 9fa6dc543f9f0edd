"""Inference speed of a searched arch's compact model against full width.

  python bench/compact_latency.py --arch=WORKDIR/search/arch.json \
      [--batches=1,128] [--repeats=20]
  python bench/compact_latency.py --model=resnet20_cifar --macs_fraction=0.5

Prints one JSON line per batch size: images_per_s and ms_per_batch of the
compact (physically narrow) model of the arch and of the nominal full-width
model (B bins everywhere) on the same device, measured as the search and
retraining measure them (bcnet_jax/timing/clock.py: jitted, compile
excluded, the compact one timed against the full one called in turn), with
macs_ratio = arch MACs / full MACs and speedup = compact images/s / full
images/s beside it. Without --arch, the arch is the uniformly scaled width
vector of the largest bins within --macs_fraction of the full MACs. Weights
are constant: the cost does not depend on them.
"""

import argparse
import json

from bcnet_jax import models
from bcnet_jax.space import search_space as space_lib
from bcnet_jax.space.costs import CostModel
from bcnet_jax.timing import clock


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
    name, resolution = arch['model'], arch['resolution']
    space = models.get_space(name, arch['bins'], arch['min_bins'])
    widths = space.widths_from_arch(arch)
  else:
    name, space = args.model, models.get_space(args.model)
    resolution = models.get_model(name).resolution
    cost = CostModel(models.get_model(name)).macs_cost()
    widths = cost.uniform_within(args.macs_fraction * cost(space.full()))
  supernet = models.get_model(name, space=space, resolution=resolution,
                              in_channels=args.in_channels)
  costs = CostModel(supernet)
  macs = {'compact': costs.macs(widths), 'full': costs.macs(space.full())}
  for batch in (int(b) for b in args.batches.split(',')):
    ms = clock.networks_ms(supernet, {'full': space.full(),
                                      'compact': widths},
                           batch=batch, repeats=args.repeats)
    print(json.dumps({
        'bench': 'compact_latency', 'model': name, 'batch': batch,
        'widths': [int(w) for w in widths],
        'compact_images_per_s': 1e3 * batch / ms['compact'],
        'compact_ms_per_batch': ms['compact'],
        'full_images_per_s': 1e3 * batch / ms['full'],
        'full_ms_per_batch': ms['full'],
        'compact_macs': macs['compact'], 'full_macs': macs['full'],
        'macs_ratio': macs['compact'] / macs['full'],
        'speedup': ms['full'] / ms['compact'], 'noise': ms['noise'],
        'device': ms['device']}), flush=True)


if __name__ == '__main__':
  main()
