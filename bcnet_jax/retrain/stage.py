"""The retrain stage (docs/design.md §6): a searched arch as a compact net.

`config.stage = 'retrain'` trains the compact model of `config.retrain.arch`
(static channel counts, from the same model code) from scratch with the
plain step and `config.retrain.*` (each retrain.optim field unset is optim's),
by the training program of the supernet: checkpoints, resume and errors are
the same code. Its workdir is the export: checkpoints, `arch.json`,
`input.json` and `model.jax_export`.
"""

from __future__ import annotations

import dataclasses
import functools
import os
from typing import Any, Callable

import jax
import numpy as np

from bcnet_jax import models
from bcnet_jax.learning import evaluation
from bcnet_jax.learning import state as state_lib
from bcnet_jax.learning import steps
from bcnet_jax.models import layers
from bcnet_jax.retrain import export
from bcnet_jax.run import config_utils
from bcnet_jax.run import console
from bcnet_jax.run import errors
from bcnet_jax.run import files
from bcnet_jax.run import parallel
from bcnet_jax.run import stages as run
from bcnet_jax.space import search_space as space_lib
from bcnet_jax.space.costs import CostModel
from bcnet_jax.timing import clock

# Config fields that must agree between a checkpoint and the run resuming
# it, besides the arch and its recipe (no supernet, no supernet optim).
IDENTITY_FIELDS = ('stage', 'model', *run.DATA_FIELDS,
                   'retrain.label_smoothing')


@dataclasses.dataclass(frozen=True)
class Setup(run.Fields):
  """Everything a retrain run is made of (a run.Stage)."""
  arch: dict[str, Any] = dataclasses.field(default_factory=dict)

  @classmethod
  def create(cls, config: Any) -> Setup:
    """Raises errors.UserError naming what is wrong with the config, the
    data, the model or the arch; writes nothing."""
    basics = run.Basics.create(config)
    arch, model = compact_model(config, basics.supernet)
    return cls(config, basics.mesh, basics.data, model,
               *run.schedule_steps(config, config.retrain,
                                   config_utils.retrain_optim(config),
                                   'retrain.', basics.data.steps_per_epoch),
               arch=arch)

  def describe(self) -> str:
    summary = summary_fields(self.model, self.arch)
    return (f'retraining {self.config.model.name} at '
            f'{summary["macs"] / 1e6:,.2f}M MACs, {summary["params"]:,} '
            f'params, from scratch ({self.config.retrain.arch})')

  def initial_state(self) -> state_lib.TrainState:
    return self.state_on_mesh(functools.partial(
        state_lib.compact_state, self.model, self.tx,
        jax.random.key(self.config.seed)))

  def jit_train_step(self) -> Callable[..., Any]:
    """The plain step of the compact model, jitted over the mesh."""
    c = self.config
    return self.feed.jit_step(functools.partial(
        steps.compact_step, model=self.model, tx=self.tx,
        label_smoothing=c.retrain.label_smoothing,
        dtype=run.DTYPES[c.supernet.dtype], seed=c.seed),
                              num_replicated_args=0)

  def step_args(self, step: int) -> tuple[Any, ...]:
    del step  # the widths are the model's
    return ()

  def identity(self) -> dict[str, Any]:
    """The arch and its recipe make the run."""
    return self.identity_of(
        IDENTITY_FIELDS, **{
            'retrain.widths': self.arch['widths'],
            'retrain.optim': config_utils.retrain_optim(self.config)})

  def evaluate(self, state, *, final: bool,
               status: Callable[[str], None] = lambda _: None
               ) -> dict[str, float]:
    """Top-1 on eval.split and, at the end, on the test split."""
    config = self.config
    splits = [config.eval.split] + (['eval'] if final and
                                    config.eval.split != 'eval' else [])
    out = {}
    for split in splits:
      status(f'evaluating on {run.EVAL_SPLITS[split]}')
      batches = (parallel.global_batch(b, self.mesh)
                 for b in self.data.eval_batches(split))
      name = config.input.eval_split if split == 'eval' else split
      out[f'eval/{name}/accuracy'] = evaluation.accuracy(
          self.model, {'params': state.params,
                       'batch_stats': state.batch_stats}, batches)
    return out

  def prepare(self, workdir: str) -> None:
    write_export_files(self, workdir)

  def finish(self, workdir: str, state, status) -> None:
    status('exporting')
    export.write_jax_export(workdir, self.model, jax.device_get(
        {'params': state.params, 'batch_stats': state.batch_stats}))

  def summary_fields(self, state) -> dict[str, Any]:
    del state
    return {**summary_fields(self.model, self.arch),
            'latency': measured_latency(self.model, self.arch)}

  def table(self, summary: dict[str, Any]) -> str:
    return table(summary, {
        self.config.input.eval_split: 'test (the eval split)',
        'minival': run.EVAL_SPLITS['minival']})

  def written(self) -> tuple[tuple[str, str], ...]:
    return (('arch.json, input.json', 'the network and its input: the '
             'export, with the checkpoints'),
            (export.JAX_EXPORT, 'images -> probabilities, for jax alone'))


def compact_model(config: Any, supernet: layers.WidthModel
                  ) -> tuple[dict[str, Any], layers.WidthModel]:
  """(arch, compact model) of config.retrain.arch, checked against the
  config: the arch's model, bins and resolution must be the config's."""
  path = config.retrain.arch
  if path is None:
    raise errors.InvalidInput(
        'stage=retrain needs --config.retrain.arch=PATH: the arch.json a '
        'search wrote (workdir/search/arch.json)')
  try:
    arch = space_lib.read_arch(path)
  except FileNotFoundError:
    raise errors.MissingInput(f'retrain.arch: no file {path}') from None
  try:
    widths = supernet.space.widths_from_arch(arch)
  except ValueError as e:
    raise errors.InvalidInput(
        f'retrain.arch {path}: {e} (config model.name='
        f'{config.model.name!r}, model.bins, model.min_bins)') from None
  if arch['resolution'] != config.input.resolution:
    raise errors.InvalidInput(
        f'retrain.arch {path} is for resolution {arch["resolution"]}; '
        f'input.resolution is {config.input.resolution}')
  compact = models.compact_like(supernet, widths)
  if hasattr(supernet, 'check_compact'):  # a traced model's, built anew
    supernet.check_compact(widths)
  return arch, compact


def write_export_files(setup, workdir: str) -> None:
  """arch.json and input.json (class names, channels, preprocessing)
  beside the checkpoints: with them the workdir loads without the config
  (bcnet_jax.export)."""
  config = setup.config
  space_lib.write_arch(os.path.join(workdir, 'arch.json'), setup.arch)
  files.write_json_atomic(os.path.join(workdir, 'input.json'), {
      'classes': list(setup.data.train_source.class_names),
      'channels': config.input.channels,
      'augment': config.input.augment,
      'mean': list(config.input.mean), 'std': list(config.input.std)})


def summary_fields(model: layers.WidthModel, arch: dict[str, Any]
                   ) -> dict[str, Any]:
  """What summary.json says of a retrained network besides accuracy."""
  costs = CostModel(model)
  widths = np.asarray(model.widths)
  return {'stage': 'retrain', 'arch': arch,
          'macs': int(costs.macs(widths)), 'params': int(costs.params(widths))}


def measured_latency(model: layers.WidthModel, arch: dict[str, Any]
                     ) -> dict[str, Any]:
  """The compact network's latency measured on this device beside the full
  network's and uniform scaling's at the arch's budget (the search's
  uniform widths; for an arch of format 1, within its MACs budget), at the
  batch the search measured (else 1), with the speed-ups."""
  space = model.space
  uniform = (space.validate_widths([arch['uniform_widths'][g]
                                    for g in space.groups])
             if arch.get('uniform_widths') else
             CostModel(model).macs_cost().uniform_within(arch['macs_budget'])
             if arch.get('macs_budget') else None)
  networks = {'this': model.widths, 'full': space.full(),
              **({} if uniform is None else {'uniform': uniform})}
  out = clock.networks_ms(model, networks, batch=arch.get(
      'latency_batch') or 1, repeats=clock.REPEATS)
  out['speedup_over_full'] = out['full'] / out['this']
  if uniform is not None:
    out['speedup_over_uniform'] = out['uniform'] / out['this']
  return out


def table(summary: dict[str, Any], split_names: dict[str, str]) -> str:
  """The retrained network's accuracy per split, its MACs, params and
  measured latency."""
  rows = [[split_names.get(split, split), f'{summary[key]:.4f}']
          for key in summary if key.startswith('eval/')
          for split in [key.split('/')[1]]]
  console_table = console.table(['split', 'top-1'], rows)
  out = (f'{summary["model"]} retrained at {summary["macs"] / 1e6:,.2f}M '
         f'MACs, {summary["params"]:,} params, after '
         f'{console.plural(summary["steps"], "step")}:\n{console_table}')
  latency = summary.get('latency')  # none in a summary written before it
  if latency is None:
    return out
  uniform = ('' if 'uniform' not in latency else
             f', {latency["speedup_over_uniform"]:.2f}x as fast as uniform '
             f'scaling at its budget ({latency["uniform"]:.3f} ms)')
  return (f'{out}\nMeasured at batch {latency["batch"]} on '
          f'{latency["device"]}: {latency["this"]:.3f} ms, '
          f'{latency["speedup_over_full"]:.2f}x as fast as the full network '
          f'({latency["full"]:.3f} ms){uniform}; noise '
          f'±{100 * latency["noise"]:.1f}%.')
