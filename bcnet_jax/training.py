"""Training by config: `python -m bcnet_jax.train --config=... --workdir=...`.

config.stage picks the stage: the BCNet supernet (default,
bcnet_jax/supernet/stage.py), or the compact network of a searched arch
from scratch (`--config.stage=retrain --config.retrain.arch=PATH`,
bcnet_jax/retrain/stage.py). Its setup is built and checked before any file
is written, then handed to the training program (bcnet_jax/run/program.py),
the same for both. In Python:

  from bcnet_jax import training
  summary = training.train_and_evaluate(config, workdir)
  summary = training.train_and_evaluate(None, workdir)  # resume its run
"""

from __future__ import annotations

import os
from typing import Any

from bcnet_jax.retrain import stage as retrain
from bcnet_jax.run import errors
from bcnet_jax.run import program
from bcnet_jax.run import run_config
from bcnet_jax.run import stages
from bcnet_jax.supernet import stage as supernet

SETUPS = {'supernet': supernet.Setup, 'retrain': retrain.Setup}


def create_setup(config: Any) -> stages.Stage:
  """The setup of config.stage, checked; nothing is written."""
  if config.stage not in SETUPS:
    raise errors.InvalidInput(f'stage must be one of {list(SETUPS)}, got '
                              f'{config.stage!r}')
  return SETUPS[config.stage].create(config)


def train_and_evaluate(config: Any | None, workdir: str,
                       command: str | None = None) -> dict[str, Any]:
  """Trains the stage of `config` in `workdir`; returns the summary.

  Args:
    config: the run's config; None resumes the run of the workdir's
      config.json.
    workdir: the run's directory.
    command: the command line that asked for it, kept in config.json.
  """
  workdir = stages.check_workdir(workdir, writable=True)
  if config is None:
    if not os.path.isfile(run_config.path(workdir)):
      raise errors.MissingInput(
          f'no --config given and {workdir} holds no {run_config.FILE} of a '
          'run to resume: give --config=FILE, e.g. configs/cifar10.py')
    config = run_config.read(run_config.path(workdir))
  return program.run(create_setup(config), workdir, command)
