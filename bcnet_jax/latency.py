"""`python -m bcnet_jax.latency --config=CONFIG --batch=N --out=latency.json`
(or `--workdir=DIR` for a trained supernet's config): measures the latency
of the config's model on this device, layer by layer, by segment and as
whole networks, and fits the predictor a search constrains with
`--config.search.latency_budget_ms=MS --config.search.latency_file=...`.
Rerun to resume. Prints the validation on held-out networks beside MACs
as a predictor. The program: bcnet_jax/timing/."""

from __future__ import annotations

from absl import flags

from bcnet_jax.run import app
from bcnet_jax.run import console
from bcnet_jax.run import errors
from bcnet_jax.run import stages
from bcnet_jax.run.data import pipeline
from bcnet_jax.timing import build
from bcnet_jax.timing import clock


def _correction(fitted_to: str, ridge: float | None) -> str:
  """What a correction of predictor.CANDIDATES is, in words."""
  if ridge is None:
    return 'one scale and offset'
  data = ('segments timed alone' if fitted_to == 'segments'
          else 'whole networks')
  return f'per stream, fitted to {data} (ridge {ridge:g})'


def report(record: dict) -> str:
  """The file's figures, as a user reads them."""
  v, device = record['validation'], record['device']
  correction = record['correction']
  rows = [['per-layer table + correction (the predictor)',
           f'{100 * v["mape"]:.1f}%', f'{v["kendall_tau"]:.3f}'],
          ['per-layer table + fit', f'{100 * v["table_mape"]:.1f}%',
           f'{v["table_kendall_tau"]:.3f}'],
          ['MACs + fit', f'{100 * v["macs_mape"]:.1f}%',
           f'{v["macs_kendall_tau"]:.3f}'],
          ['measured again (repeatability)', f'{100 * v["repeat_mape"]:.1f}%',
           f'{v["repeat_kendall_tau"]:.3f}']]
  tried = ', '.join(
      f'{_correction(c["fitted_to"], c["ridge"])} ' +
      ('not tried' if c['kendall_tau'] is None else f'{c["kendall_tau"]:.3f}')
      + (f' (dropped: {c["dropped"]})' if 'dropped' in c else '')
      for c in record['cross_validation'])
  return (f'{record["model"]["model.name"]} at batch {record["batch"]} on '
          f'{device["device"]} ({device["backend"]}, {device["threads"]}, '
          f'jax {device["jax"]}): full width {record["full_ms"]:.3f} ms, '
          f'smallest {record["smallest_ms"]:.3f} ms, measurement noise '
          f'±{100 * record["noise"]:.1f}%\n'
          'The correction: ' + _correction(
              correction.get('fitted_to'), correction['ridge']) + '; '
          'the candidates\' Kendall tau on the fit\'s networks, each '
          f'predicted from the others: {tried}\n'
          f'Predicted against measured (the mean of two measurements) on '
          f'{v["networks"]} random networks not used in fitting, and the '
          'two measurements against each other:\n' +
          console.table(['predictor', 'mean abs. error', 'Kendall tau'],
                        rows))


def main(argv: list[str], batch: flags.FlagHolder, out: flags.FlagHolder,
         repeats: flags.FlagHolder, step: flags.FlagHolder,
         fit_networks: flags.FlagHolder, networks: flags.FlagHolder,
         num_classes: flags.FlagHolder) -> None:
  del argv
  config = app.config()
  if config is None:
    raise errors.InvalidInput(
        'give the model to measure: --config=CONFIG (e.g. '
        'configs/cifar10.py) or --workdir of a trained supernet')
  stages.check_config(config)
  classes = num_classes.value
  if classes is None:
    try:
      classes = pipeline.Input.create(config.input,
                                      seed=config.seed).num_classes
    except errors.UserError as e:
      raise type(e)(f'{e} (the network\'s outputs are read from its '
                    'dataset; without it, give --num_classes)') from None
  model = stages.supernet_of(config, classes)
  console.say(f'bcnet_jax.latency: {config.model.name} at batch '
              f'{batch.value} on {clock.device()["device"]}, into '
              f'{out.value} (written as it goes: rerun to resume)')
  record = build.Build(config, model, out.value, batch=batch.value,
                       repeats=repeats.value, step=step.value,
                       fit_networks=fit_networks.value,
                       networks=networks.value).run()
  console.say(report(record))
  app.print_result({'latency_file': out.value,
                    'full_ms': record['full_ms'],
                    'smallest_ms': record['smallest_ms'],
                    'noise': record['noise'],
                    'validation': record['validation']})


if __name__ == '__main__':
  # Defined only when run: importing this module defines no flag.
  _BATCH = flags.DEFINE_integer('batch', 1, 'images per call: the batch '
                                'the network will run at')
  _OUT = flags.DEFINE_string('out', None, 'the latency file to write')
  _REPEATS = flags.DEFINE_integer('repeats', clock.REPEATS, 'timed calls per '
                                  'measurement (their median is taken)')
  _STEP = flags.DEFINE_integer('step', 3, 'layers are timed at every '
                               'step-th bin (and the largest), linear '
                               'between: 1 times every bin')
  _FIT = flags.DEFINE_integer('fit_networks', 100, 'random networks the '
                              'correction is fitted on (timed whole and, '
                              'with residual streams, by segment), besides '
                              'the full and smallest: a correction per '
                              'residual stream (a value per width of each '
                              'stream and class of alike groups) is tried '
                              'with more than about 3 per stream and '
                              'learns more from 5 or more per width')
  _NETWORKS = flags.DEFINE_integer('networks', 30, 'random whole networks '
                                   'held out to validate the predictor')
  _CLASSES = flags.DEFINE_integer('num_classes', None, 'outputs of the '
                                  'network (default: its dataset\'s, read '
                                  'from the config\'s input)')
  app.run(lambda argv: main(argv, _BATCH, _OUT, _REPEATS, _STEP, _FIT,
                           _NETWORKS, _CLASSES),
          required=('out',))
