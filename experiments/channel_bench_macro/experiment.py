"""The experiment's stages, each resumable: train a BCNet and a UA supernet
(the library's training program, one workdir each), score the sample with
the batch evaluator in chunks (`bcnet_jax.rank.score_archs`), report.

DIR/supernet_bcnet/, DIR/supernet_ua/   training workdirs (checkpoints...)
DIR/scoring_<supernet>_<space>.json     scoring state: identity, details
DIR/scores_<supernet>_<space>.json      {key: score}, benchmark keys
DIR/record.json                         sizes, wall time per stage,
                                        package versions, machine
DIR/report.json, DIR/scores_vs_benchmark_<space>.png  with --results
"""

from __future__ import annotations

import dataclasses
import hashlib
import importlib.metadata
import json
import os
import platform
import time
from typing import Any, Callable, Collection

import jax
import ml_collections

from bcnet_jax import training as train
from bcnet_jax.run import console
from bcnet_jax.run import errors
from bcnet_jax.run import files
from bcnet_jax.run import identity as identity_lib
from bcnet_jax.run import run_config
from bcnet_jax.run import stages as run_lib
from bcnet_jax.searching import ranking as rank
from bcnet_jax.supernet import stage as supernet
from experiments.channel_bench_macro import report
from experiments.channel_bench_macro import sample

SUPERNETS = ('bcnet', 'ua')  # the supernet.objective of each
SCORING_FORMAT = 'bcnet_jax.channel_bench_macro.scoring/2'
PACKAGES = ('jax', 'jaxlib', 'flax', 'optax', 'orbax-checkpoint', 'numpy',
            'scipy')


@dataclasses.dataclass(frozen=True)
class Size:
  """What a size preset sets; None keeps the config's value.

  Attributes:
    sample: architectures scored (a multiple of 5); None: all 4^7.
    steps: training steps of each supernet (the schedule fits them).
    batch: global training batch.
    minival: training images held out to score on.
    calibration_batches: training batches BN statistics are recalibrated on.
    chunk: architectures scored between two saves of the scoring state.
    caveat: why a report at this size does not measure the method, said
      first in its table and kept in report.json (a newcomer took a smoke
      run's figures for results); None: it does.
  """
  sample: int | None
  steps: int | None = None
  batch: int | None = None
  minival: int | None = None
  calibration_batches: int | None = None
  chunk: int = 256
  caveat: str | None = None


SIZES = {
    # For tests: seconds on a CPU, meaningless figures.
    'tiny': Size(sample=10, steps=4, batch=8, minival=16,
                 calibration_batches=1, chunk=4, caveat=(
                     'NOT MEANINGFUL: --size=tiny trains each supernet 4 '
                     'steps and ranks 10 architectures (seconds on a CPU, '
                     'for the tests): these figures are noise. Figures to '
                     'read come from --size=full.')),
    # Sized for 2 CPU cores in about 90 minutes (experiments/README.md).
    'smoke': Size(sample=200, steps=160, batch=128, minival=1000,
                  calibration_batches=2, chunk=10, caveat=(
                      'NOT MEANINGFUL as results: --size=smoke trains each '
                      'supernet 160 steps (0.42 epochs of CIFAR-10: the '
                      'recorded run\'s supernets reached about 40% '
                      'accuracy) and scores 200 architectures on 1,000 '
                      'images (a score\'s standard error there was more '
                      'than a quarter of the scores\' spread): it checks '
                      'that the experiment runs end to end, not how well a '
                      'supernet ranks (experiments/README.md). Figures to '
                      'read come from --size=full.')),
    # The device run's (bench/accelerator.py): the steps that fit its
    # minutes, measured there, scored on 1,000 architectures.
    'device': Size(sample=1000, batch=256, minival=2000,
                   calibration_batches=2, chunk=100, caveat=(
                       'Short of the benchmark\'s schedule: --size=device '
                       'trains each supernet for the steps that fit the '
                       'device run\'s minutes (record.json: steps, '
                       'images), not 60 epochs, and scores on 2,000 minival '
                       'images; supernets trained less rank less well. '
                       'Figures at the benchmark\'s schedule come from '
                       '--size=full.')),
    # The benchmark's schedule (configs/cbm_<space>.py), for an accelerator.
    'full': Size(sample=None),
}


def sized_config(config: Any, size: Size, objective: str
                 ) -> ml_collections.ConfigDict:
  """A copy of `config` at `size`, training `objective` ('bcnet' | 'ua')."""
  c = config.copy_and_resolve_references()
  c.supernet.objective = objective
  if size.steps is not None:
    c.total_steps, c.total_epochs = size.steps, None
    c.eval_every_steps, c.eval_every_epochs = None, None
    c.optim.warmup_epochs = 0.0
    c.log_every_steps = max(1, min(c.log_every_steps, size.steps // 10))
    c.ckpt_every_steps = max(1, min(c.ckpt_every_steps, size.steps // 5))
    c.eval.num_random = 0
  for field, value in (('input.batch_size', size.batch),
                       ('input.minival_size', size.minival),
                       ('eval.bn_calib_batches', size.calibration_batches)):
    if value is not None:
      section, name = field.split('.')
      c[section][name] = value
  if size.minival is not None:
    c.input.eval_batch_size = min(c.input.eval_batch_size, size.minival)
  return c


def _digest(keys: list[str]) -> str:
  return hashlib.sha256(','.join(keys).encode()).hexdigest()


class Experiment:
  """One run of the experiment in `workdir`."""

  def __init__(self, config: Any, space: str, size: str, workdir: str,
               overridden: Collection[str] = (), steps: int | None = None):
    """`config` at `size`, over the training fields of the supernets
    trained before in `workdir` (run_config.for_later_stage; `overridden`:
    the fields the command line set); `steps`, if given, replaces the
    size's training steps (the device run's, measured there)."""
    check_choices(space, size)
    if config.model.name != sample.SPACES[space]:
      raise errors.InvalidInput(
          f'--space={space} is the {sample.SPACES[space]} network, but the '
          f'config trains {config.model.name!r}: give '
          f'--config=configs/{sample.SPACES[space]}.py or another --space')
    self.space, self.size_name = space, size
    self.size = (SIZES[size] if steps is None else
                 dataclasses.replace(SIZES[size], steps=steps))
    if size == 'device' and steps is None:
      raise errors.InvalidInput(
          '--size=device trains the steps that fit a device run: give '
          '--steps (bench/accelerator.py measures and passes them)')
    self.workdir = run_lib.check_workdir(workdir)
    self.record_path = os.path.join(self.workdir, 'record.json')
    saved = self._read_record()
    self.configs = {
        s: run_config.for_later_stage(
            sized_config(config, self.size, s), self.supernet_dir(s),
            overridden, stage='the experiment')
        for s in SUPERNETS}
    self.record = saved or self._new_record()
    self._saved = None if saved is None else json.dumps(saved,
                                                        sort_keys=True)
    # Every config error before any file; kept for the stages.
    self.setups = {s: supernet.Setup.create(c)
                   for s, c in self.configs.items()}

  def supernet_dir(self, supernet_name: str) -> str:
    return os.path.join(self.workdir, f'supernet_{supernet_name}')

  def path(self, what: str, supernet_name: str) -> str:
    return os.path.join(self.workdir,
                        f'{what}_{supernet_name}_{self.space}.json')

  def _read_record(self) -> dict[str, Any] | None:
    """record.json of an earlier run, if any: of another space or size is
    an error, before anything else is read."""
    if not os.path.exists(self.record_path):
      return None
    record = files.read_json(self.record_path)
    if (record.get('space'), record.get('size')) != (self.space,
                                                     self.size_name):
      raise errors.InvalidInput(
          f'{self.record_path} records a run of --space='
          f'{record.get("space")} --size={record.get("size")}: rerun with '
          'those, or use another --workdir')
    return record

  def _new_record(self) -> dict[str, Any]:
    c = self.configs['bcnet']
    return {
        'space': self.space, 'size': self.size_name,
        'model': c.model.name, 'seed': c.seed,
        'data': c.input.source, 'steps': None,
        'batch': c.input.batch_size, 'images': None,
        'sample_size': self.size.sample or len(sample.all_keys(self.space)),
        'minival_images': c.input.minival_size,
        'calibration_images': c.eval.bn_calib_batches * c.input.batch_size,
        'stages': {}}

  def _timed(self, stage: str, work: Callable[[], Any]) -> Any:
    """work(), its wall time added to the stage's in record.json, with the
    machine and packages it ran on."""
    start = time.time()
    try:
      return work()
    finally:
      entry = self.record['stages'].setdefault(stage, {'wall_time_s': 0.0,
                                                       'runs': 0})
      entry['wall_time_s'] = round(entry['wall_time_s'] + time.time() - start,
                                   1)
      entry['runs'] += 1
      entry['machine'] = machine()
      self.record['packages'] = {
          p: importlib.metadata.version(p) for p in PACKAGES}
      self._save_record()

  def _save_record(self) -> None:
    """Writes record.json if it changed (a rerun with nothing to do
    writes nothing)."""
    text = json.dumps(self.record, sort_keys=True)
    if jax.process_index() == 0 and text != self._saved:
      files.write_json_atomic(self.record_path, self.record)
    self._saved = text

  def train(self, name: str) -> None:
    """Trains (or resumes) the supernet `name`; a finished one is left as
    it is, and its time not counted again."""
    workdir = self.supernet_dir(name)
    config = self.configs[name]
    summary_path = os.path.join(workdir, 'summary.json')
    total = self.setups[name].total_steps
    if not (os.path.exists(summary_path) and
            files.read_json(summary_path).get('steps') == total):
      self._timed(f'train_{name}',
                  lambda: train.train_and_evaluate(config, workdir))
    self.record['steps'] = total
    self.record['images'] = total * self.record['batch']
    self._save_record()

  def score(self, name: str, keys: list[str]) -> dict[str, dict[str, float]]:
    """Scores `keys` on the supernet `name`, in chunks, resuming after the
    last saved chunk: {key: {'score', 'score_se', side...}}."""
    setup = self.setups[name]
    trained = supernet.restore_trained(setup, self.supernet_dir(name))
    identity = {**setup.scoring_identity(trained),
                'sample.sha256': _digest(keys), 'sample.size': len(keys)}
    state_path = self.path('scoring', name)
    state = {'format': SCORING_FORMAT, 'identity': identity, 'details': {}}
    if os.path.exists(state_path):
      state = _check_scoring_state(files.read_json(state_path), identity,
                                   state_path)
    todo = [k for k in keys if k not in state['details']]
    self.record.setdefault('scores', {})[name] = supernet.score_definition(
        setup)
    self._save_record()
    console.say(f'Scoring {len(keys)} architectures on the {name} supernet '
                f'({len(keys) - len(todo)} scored before); '
                f'{supernet.score_definition(setup)}')

    def write_scores():  # derived from the state
      if jax.process_index() == 0:
        files.write_json_atomic(self.path('scores', name), {
            k: d['score'] for k, d in sorted(state['details'].items())})

    def work():
      progress = console.ScoringProgress(
          len(todo), 'Saved after every chunk: stop and rerun at will; a '
          'smaller --size scores fewer architectures on fewer images.')
      try:
        for start in range(0, len(todo), self.size.chunk):
          chunk = todo[start:start + self.size.chunk]
          state['details'].update(rank.score_archs(
              setup, trained, {k: sample.widths(k) for k in chunk},
              status=progress))
          if jax.process_index() == 0:
            files.write_json_atomic(state_path, state)
          write_scores()
      finally:
        progress.close()

    if todo:
      self._timed(f'score_{name}', work)
    elif not os.path.exists(self.path('scores', name)):
      write_scores()  # removed: rebuilt
    return state['details']

  def run(self, truth: dict[str, float] | None = None,
          results_path: str | None = None) -> dict[str, Any]:
    """Every stage; the report too given the benchmark's accuracies
    (`truth`, read from `results_path`)."""
    keys = sample.draw(self.space, self.size.sample,
                       self.configs['bcnet'].seed)
    if truth is not None:  # before hours of work, not after
      report.compared_keys(keys, truth)
    for name in SUPERNETS:
      self.train(name)
    details = {name: self.score(name, keys) for name in SUPERNETS}
    out = {'record': self.record_path,
           'scores': {n: self.path('scores', n) for n in SUPERNETS}}
    if truth is not None:
      figures = report.build(self.space, keys, details, truth,
                             caveat=self.size.caveat)
      report_path = os.path.join(self.workdir, 'report.json')
      figure_path = os.path.join(self.workdir,
                                 f'scores_vs_benchmark_{self.space}.png')
      if jax.process_index() == 0:
        files.write_json_atomic(report_path, {
            'results': os.path.basename(results_path), **figures})
        report.plot(self.space, keys, details, truth, figure_path)
      console.say(report.table(figures))
      out.update(report=report_path, figure=figure_path)
    return out


def check_choices(space: str, size: str) -> None:
  if space not in sample.SPACES:
    raise errors.InvalidInput(
        f'--space must be one of {list(sample.SPACES)}, got '
        f'{space!r}')
  if size not in SIZES:
    raise errors.InvalidInput(
        f'--size must be one of {list(SIZES)}, got {size!r}')


def run(config: Any, space: str, size: str, workdir: str,
        results_path: str | None = None, overridden: Collection[str] = (),
        steps: int | None = None) -> dict[str, Any]:
  """The whole experiment (see the module docstring); input is checked,
  the results file first, before anything is written."""
  check_choices(space, size)
  truth = (None if results_path is None else
           report.read_results(results_path, space))
  return Experiment(config, space, size, workdir, overridden, steps).run(
      truth, results_path)


def _check_scoring_state(saved: Any, identity: dict[str, Any], path: str
                         ) -> dict[str, Any]:
  """The saved scoring state; one of another supernet or sample is an
  error naming what differs (never overwritten)."""
  if not isinstance(saved, dict) or saved.get('format') != SCORING_FORMAT:
    raise errors.InvalidInput(f'{path} is not a scoring state of format '
                     f'{SCORING_FORMAT!r}; move it away to score anew')
  identity_lib.check(
      saved.get('identity', {}), identity, saved_as='state',
      error=lambda details: errors.InvalidInput(
          f'{path} holds scores of another supernet or sample ({details}); '
          'move it away to score anew'))
  return saved


def machine() -> dict[str, Any]:
  """What the run ran on, for reading its wall times."""
  cpu = platform.processor()
  try:
    with open('/proc/cpuinfo') as f:
      cpu = next((l.split(':', 1)[1].strip() for l in f
                  if l.startswith('model name')), cpu)
  except OSError:
    pass
  devices = jax.devices()
  return {'platform': platform.platform(), 'cpu': cpu,
          'cpu_count': os.cpu_count(),
          'devices': f'{len(devices)} x {devices[0].device_kind}'}
