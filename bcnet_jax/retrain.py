"""The retrain stage (docs/design.md §6): a searched arch as a compact net.

`config.stage = 'retrain'` trains the compact model of `config.retrain.arch`
(static channel counts, from the same model code) from scratch with the
plain step and `config.retrain.*`, by the training program of the supernet:
checkpoints, resume and errors are the same code. Its workdir is the
export: checkpoints, `arch.json`, `input.json` and `model.jax_export`.
"""

from __future__ import annotations

import os
from typing import Any

import numpy as np

from bcnet_jax import console
from bcnet_jax import files
from bcnet_jax import models
from bcnet_jax import space as space_lib
from bcnet_jax.costs import CostModel
from bcnet_jax.models import layers

STAGES = ('supernet', 'retrain')


def compact_model(config: Any, supernet: layers.WidthModel
                  ) -> tuple[dict[str, Any], layers.WidthModel]:
  """(arch, compact model) of config.retrain.arch, checked against the
  config: the arch's model, bins and resolution must be the config's."""
  path = config.retrain.arch
  if path is None:
    raise ValueError('stage=retrain needs --config.retrain.arch=PATH: the '
                     'arch.json a search wrote (workdir/search/arch.json)')
  try:
    arch = space_lib.read_arch(path)
  except FileNotFoundError:
    raise FileNotFoundError(f'retrain.arch: no file {path}') from None
  try:
    widths = supernet.space.widths_from_arch(arch)
  except ValueError as e:
    raise ValueError(f'retrain.arch {path}: {e} (config model.name='
                     f'{config.model.name!r}, model.bins, model.min_bins)'
                     ) from None
  if arch['resolution'] != config.input.resolution:
    raise ValueError(f'retrain.arch {path} is for resolution '
                     f'{arch["resolution"]}; input.resolution is '
                     f'{config.input.resolution}')
  return arch, models.compact_like(supernet, widths)


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
      'mean': list(config.input.mean), 'std': list(config.input.std),
      'lowering': config.model.lowering})


def summary_fields(model: layers.WidthModel, arch: dict[str, Any]
                   ) -> dict[str, Any]:
  """What summary.json says of a retrained network besides accuracy."""
  costs = CostModel(model)
  widths = np.asarray(model.widths)
  return {'stage': 'retrain', 'arch': arch,
          'macs': int(costs.macs(widths)), 'params': int(costs.params(widths))}


def table(summary: dict[str, Any], split_names: dict[str, str]) -> str:
  """The retrained network's accuracy per split, its MACs and params."""
  rows = [[split_names.get(split, split), f'{summary[key]:.4f}']
          for key in summary if key.startswith('eval/')
          for split in [key.split('/')[1]]]
  console_table = console.table(['split', 'top-1'], rows)
  return (f'{summary["model"]} retrained at {summary["macs"] / 1e6:,.2f}M '
          f'MACs, {summary["params"]:,} params, after {summary["steps"]} '
          f'steps:\n{console_table}')
