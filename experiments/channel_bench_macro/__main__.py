r"""`python -m experiments.channel_bench_macro`: the whole experiment, one
command, resumable (rerun it to continue after a kill).

  python -m experiments.channel_bench_macro --space=mobilenet --size=smoke \
      --workdir=DIR [--results=Results_MobileNet.json] \
      [--config=configs/cbm_mobilenet.py --config.input.source=...]

--config defaults to configs/cbm_<space>.py (tfds CIFAR-10); give it to
override input fields, e.g. the image-folder copy of CIFAR-10:
--config.input.source=image_folder --config.input.data_dir=DIR. A rerun
takes the training fields from the supernets' workdirs (their config.json):
the overrides need not be repeated.
"""

import importlib

from absl import flags

from bcnet_jax.run import app
from experiments.channel_bench_macro import experiment
from experiments.channel_bench_macro import sample

_SPACE = flags.DEFINE_enum('space', 'mobilenet', list(sample.SPACES),
                           'the benchmark\'s search space')
_SIZE = flags.DEFINE_enum('size', 'smoke', list(experiment.SIZES),
                          'steps, sample and scoring sizes (experiment.SIZES)')
_STEPS = flags.DEFINE_integer(
    'steps', None, 'training steps of each supernet, replacing the size\'s '
    '(--size=device needs them)')
_RESULTS = flags.DEFINE_string(
    'results', None, 'the benchmark\'s results file (Results_MobileNet.json '
    'or Results_ResNet.json); with it, report.json')


def main(argv):
  del argv
  config = app.config()
  if config is None:
    config = importlib.import_module(
        f'configs.{sample.SPACES[_SPACE.value]}').get_config()
  app.print_result(experiment.run(config, _SPACE.value, _SIZE.value,
                                  app.workdir(), _RESULTS.value,
                                  overridden=app.overrides(),
                                  steps=_STEPS.value))


if __name__ == '__main__':
  app.run(main, required=('workdir',))
