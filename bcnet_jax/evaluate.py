r"""`python -m bcnet_jax.evaluate`: scores a trained supernet, writes nothing.

  python -m bcnet_jax.evaluate --workdir=DIR [--widths=4,8,...] \
      [--config.eval.split=eval]

Prints the scores (bcnet_jax/supernet/evaluator.py) of the fixed width
vectors of training's evaluation, or of `--widths`, as a table and one JSON
line. The config is DIR/config.json's, as training wrote it.
"""

from __future__ import annotations

from absl import flags

from bcnet_jax import models
from bcnet_jax.run import app
from bcnet_jax.run import config_utils
from bcnet_jax.run import run_config
from bcnet_jax.supernet import stage as supernet


def main(argv: list[str], widths_flag: flags.FlagHolder) -> None:
  del argv
  config = run_config.for_later_stage(app.config(), app.workdir(),
                                      app.overrides(), stage='evaluate')
  widths = None
  if widths_flag.value:
    space = models.get_space(
        config.model.name, config.model.bins, config.model.min_bins,
        resolution=config.input.resolution, in_channels=config.input.channels,
        **config_utils.model_options(config.model))
    widths = {'given': space.parse_widths(widths_flag.value)}
  app.print_result(supernet.evaluate_workdir(config, app.workdir(), widths,
                                             app.overrides()))


if __name__ == '__main__':
  _WIDTHS = flags.DEFINE_string(
      'widths', None, 'bins per group, comma-separated (default: the fixed '
      'width vectors of training\'s evaluation)')
  app.run(lambda argv: main(argv, _WIDTHS))
