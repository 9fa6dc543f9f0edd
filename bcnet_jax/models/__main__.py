"""`python -m bcnet_jax.models`: list models, or print one width's costs.

  python -m bcnet_jax.models --list
  python -m bcnet_jax.models --model resnet20_cifar
  python -m bcnet_jax.models --model resnet20_cifar --widths=4,3,2,...
  python -m bcnet_jax.models --arch workdir/search/arch.json
  python -m bcnet_jax.models --model mobilenetv2 --resolution 160
  python -m bcnet_jax.models --model my_package.nets:MyCNN \
      --kwargs='{"num_classes": 10}' --channels 1 --resolution 28

Before it, a table of the groups: nominal channels and the layers (or, for
your own model, the parameters) each group's channels run along.

The last line of stdout is one JSON object (model, groups, bins, min_bins,
resolution, widths, channels, macs, params); logs go to stderr. Bad input
exits with status 2 and says why on stderr.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys

from bcnet_jax import models
from bcnet_jax.run import config_utils
from bcnet_jax.run import errors
from bcnet_jax.space import search_space as space_lib
from bcnet_jax.space.costs import CostModel


def parse_args(argv: list[str]) -> argparse.Namespace:
  parser = argparse.ArgumentParser(
      prog='python -m bcnet_jax.models',
      description='Search spaces, MACs and params of the registry models.')
  parser.add_argument('--list', action='store_true',
                      help='print the model names, one per line')
  parser.add_argument('--model', help=f'one of: {", ".join(models.MODELS)}')
  parser.add_argument('--widths', help='bins per group, comma-separated '
                      '(default: full nominal width)')
  parser.add_argument('--arch', help='an arch JSON file (docs/design.md §2)')
  parser.add_argument('--resolution', type=int,
                      help='input size (default: the model\'s, or the arch\'s)')
  parser.add_argument('--bins', type=int, help='B (default: the model\'s)')
  parser.add_argument('--min-bins', type=int, help='m (default: the model\'s)')
  parser.add_argument('--kwargs', default='{}',
                      help='your own model: its arguments, a JSON object')
  parser.add_argument('--channels', type=int, default=3,
                      help='your own model: input image channels')
  parser.add_argument('--train-arg', default='',
                      help='your own model: the call argument that switches '
                      'training (default: found)')
  parser.add_argument('--round-to', type=int, default=1,
                      help='channel counts rounded to multiples of this')
  parser.add_argument('--fixed', default='',
                      help='your own model: comma-separated module paths '
                      'whose channels stay fixed')
  return parser.parse_args(argv)


def describe(args: argparse.Namespace) -> dict:
  """The JSON object the CLI prints; raises errors.UserError on bad input."""
  arch = None
  if args.arch:
    arch = space_lib.read_arch(args.arch)
    if not isinstance(arch, dict) or 'model' not in arch:
      raise errors.InvalidInput(f'{args.arch} is not an arch JSON object')
    if args.model and args.model != arch['model']:
      raise errors.InvalidInput(
          f'--model {args.model} but {args.arch} is for {arch["model"]}')
    if args.widths:
      raise errors.InvalidInput('give --widths or --arch, not both')
  name = args.model or (arch and arch['model'])
  if not name:
    raise errors.InvalidInput('give --model NAME (see --list) or --arch PATH')
  bins = args.bins if arch is None else arch.get('bins')
  min_bins = args.min_bins if arch is None else arch.get('min_bins')
  options = config_utils.model_options({
      'kwargs': args.kwargs, 'train_arg': args.train_arg,
      'fixed': args.fixed, 'round_to': args.round_to})
  if models.is_traced(name):
    options.update(in_channels=args.channels, resolution=args.resolution or (
        arch and arch['resolution']))
  space = models.get_space(name, bins=bins, min_bins=min_bins, **options)
  if arch is not None:
    widths = space.widths_from_arch(arch)
  elif args.widths:
    widths = space.parse_widths(args.widths)
  else:
    widths = space.full()
  resolution = args.resolution
  if resolution is None and arch is not None:
    resolution = arch['resolution']
  if resolution is not None and resolution < 1:
    raise errors.InvalidInput(f'--resolution must be >= 1, got {resolution}')
  options['resolution'] = resolution
  model = models.get_model(name, space=space, **options)
  costs = CostModel(model)
  arch_out = space.arch(widths, resolution=costs.resolution,
                        macs=costs.macs(widths), params=costs.params(widths))
  return {'model': name, 'groups': space.num_groups, 'bins': space.bins,
          'min_bins': space.min_bins, 'resolution': costs.resolution,
          'widths': arch_out['widths'], 'channels': arch_out['channels'],
          'macs': arch_out['macs'], 'params': arch_out['params'],
          'smallest': {'macs': costs.macs(space.smallest()),
                       'params': costs.params(space.smallest())},
          'full': {'macs': costs.macs(space.full()),
                   'params': costs.params(space.full())},
          'members': models.members(model),
          'nominal': {d.name: d.nominal for d in space.dims}}


def group_table(result: dict) -> str:
  """The groups (derived dims after them), nominal channels, members."""
  lines = [f'{result["model"]}: {result["groups"]} groups']
  nominal = {d: n for d, n in result['nominal'].items()}
  for dim, members in result['members'].items():
    kind = '' if dim in result['channels'] else ' (derived)'
    lines.append(f'  {dim}{kind}: {nominal[dim]} channels: '
                 + ', '.join(members))
  lines.append(f'smallest: {result["smallest"]["macs"]:,} MACs, '
               f'{result["smallest"]["params"]:,} params; full: '
               f'{result["full"]["macs"]:,} MACs, '
               f'{result["full"]["params"]:,} params')
  return '\n'.join(lines)


def main(argv: list[str] | None = None) -> int:
  logging.basicConfig(stream=sys.stderr, level=logging.INFO,
                      format='%(levelname)s %(message)s')
  logging.getLogger('jax._src.xla_bridge').setLevel(logging.WARNING)
  args = parse_args(sys.argv[1:] if argv is None else argv)
  if args.list:
    print('\n'.join(models.MODELS))
    return 0
  try:
    result = describe(args)
  except errors.UserError as e:
    print(f'error: {e}', file=sys.stderr)
    return 2
  print(group_table(result))
  logging.info('%s at %dx%d: %s MACs, %s params', result['model'],
               result['resolution'], result['resolution'],
               f'{result["macs"]:,}', f'{result["params"]:,}')
  print(json.dumps(result))
  return 0


if __name__ == '__main__':
  sys.exit(main())
