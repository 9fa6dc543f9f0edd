"""How evenly the supernet trains its channels: BCNet against ua.

  python experiments/fairness.py [--model resnet20_cifar] [--steps 1000]
                                 [--out experiments/fairness_<model>.png]

Draws the width vectors of `steps` training steps exactly as training does
(sampling.widths_for_step), counts per channel of every group how many
sub-networks of each step used it (sampling.channel_usage), and plots the
mean uses per step against the channel's position in its group: BCNet with
the complementary pass (every channel exactly 2, every step) beside the
unilateral `ua` supernet (left channels trained far more than right ones).
Prints one JSON line per objective: the least and most uses per step of any
channel, each step's and on average.
"""

import argparse
import json
import pathlib

import matplotlib

matplotlib.use('Agg')
import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top
import numpy as np

from bcnet_jax import models
from bcnet_jax.run import console
from bcnet_jax.space import sampling

OBJECTIVES = {'bcnet + complementary': ('bcnet', True), 'ua': ('ua', False)}


def usage(space, objective: str, complementary: bool, num_steps: int,
          seed: int = 0) -> tuple[dict[str, np.ndarray], int, int]:
  """Per dim, uses per channel summed over steps; min and max in any step."""
  total = {d.name: np.zeros(d.supernet_channels, np.int64)
           for d in space.dims}
  least, most = np.inf, 0
  for step in range(num_steps):
    counts = sampling.channel_usage(
        space, sampling.widths_for_step(space, seed, step),
        objective=objective, complementary=complementary)
    for name, count in counts.items():
      total[name] += count
      least, most = min(least, count.min()), max(most, count.max())
  return total, int(least), int(most)


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('--model', default='resnet20_cifar',
                      choices=list(models.MODELS))
  parser.add_argument('--steps', type=int, default=1000)
  parser.add_argument('--out', default=None,
                      help='PNG path (default: fairness_<model>.png beside '
                      'this script, in experiments/)')
  args = parser.parse_args()
  space = models.get_space(args.model)
  out = args.out or str(pathlib.Path(__file__).resolve().parent /
                        f'fairness_{args.model}.png')
  fig, axes = plt.subplots(1, len(OBJECTIVES), figsize=(10, 4), sharey=True)
  for ax, (title, (objective, complementary)) in zip(axes, OBJECTIVES.items()):
    total, least, most = usage(space, objective, complementary, args.steps)
    per_step = {name: t / args.steps for name, t in total.items()}
    for dim in space.dims:
      y = per_step[dim.name]
      ax.plot((np.arange(len(y)) + 0.5) / len(y), y, lw=1, alpha=0.6)
    ax.set_title(f'{title}')
    ax.set_xlabel('channel position in its group (left → right)')
    ax.grid(alpha=0.3)
    means = np.concatenate(list(per_step.values()))
    print(json.dumps({
        'experiment': 'fairness', 'model': args.model, 'objective': title,
        'steps': args.steps, 'min_uses_in_a_step': least,
        'max_uses_in_a_step': most,
        'min_mean_uses_per_step': round(float(means.min()), 4),
        'max_mean_uses_per_step': round(float(means.max()), 4)}))
  axes[0].set_ylabel('sub-networks using the channel, per step')
  fig.suptitle(f'{args.model}: channel usage over '
               f'{console.plural(args.steps, "step")}, one '
               f'line per dim ({space.bins} bins, m={space.min_bins})')
  fig.tight_layout()
  fig.savefig(out, dpi=120)
  print(json.dumps({'experiment': 'fairness', 'plot': out}))


if __name__ == '__main__':
  main()
