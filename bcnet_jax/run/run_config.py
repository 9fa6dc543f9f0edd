"""A run's config, kept in its workdir: one run, one config.

Training writes `WORKDIR/config.json` when it starts: the resolved config
and the command lines that made it. The stages after training (search,
rank, evaluate, the experiment's scoring, the notebooks) read it from there,
so `--config` is optional for them, and take from it every *training
field*: whatever decides the supernet and the examples it was trained on
(and so the minival it may be scored on). They set only the fields of
their own stage (LATER_STAGE_FIELDS) and where the data now is
(MOVABLE_FIELDS); an override of a training field that differs from the
workdir's is an error naming the field.

A config.json is also a config file: `--config=WORKDIR/config.json` loads
it (run/app.py turns it into `--config=<this module>:<path>`, which calls
`get_config(path)`), e.g. to retrain a searched arch with the supernet's
data and recipe.

Synopsis:

  run_config.write(workdir, config, command='python -m bcnet_jax.train ...')
  config = run_config.for_later_stage(None, workdir)  # the workdir's
  config = run_config.read(os.path.join(workdir, run_config.FILE))
"""

from __future__ import annotations

import json
import os
from typing import Any, Collection

import jax
import ml_collections

from bcnet_jax.run import config_utils
from bcnet_jax.run import console
from bcnet_jax.run import errors
from bcnet_jax.run import files
from bcnet_jax.run import identity

FILE = 'config.json'
FORMAT = 'bcnet_jax.run_config/1'
# What a stage after training may set (sections and fields); every other
# field is training's. The input fields say how batches are built, not
# which.
LATER_STAGE_FIELDS = ('eval', 'search', 'retrain', 'input.eval_batch_size',
                      'input.num_threads', 'input.on_device_max_mb',
                      'input.workers')
# Training's, but a later stage may override it on the command line: it
# says where the data is, not which, and a copy of it may have moved.
MOVABLE_FIELDS = ('input.data_dir',)


def path(workdir: str) -> str:
  return os.path.join(workdir, FILE)


def is_training_field(name: str) -> bool:
  """Whether the dotted field `name` is fixed once training has run."""
  return not any(name == f or name.startswith(f + '.')
                 for f in LATER_STAGE_FIELDS)


def _later_stage_fields() -> str:
  return ', '.join(f if '.' in f else f'{f}.*'
                   for f in LATER_STAGE_FIELDS + MOVABLE_FIELDS)


def write(workdir: str, config: Any, command: str | None = None) -> None:
  """Writes the run's config.json (process 0), the command that made it
  appended to those before; unchanged, nothing is written."""
  if jax.process_index() != 0:
    return
  target = path(workdir)
  saved = files.read_json(target) if os.path.exists(target) else {}
  commands = list(saved.get('commands', [])) if isinstance(saved,
                                                           dict) else []
  if command and command not in commands[-1:]:
    commands.append(command)
  content = {'format': FORMAT, 'commands': commands,
             'config': json.loads(json.dumps(config.to_dict()))}
  if content != saved:
    files.write_json_atomic(target, content)


def read(json_path: str) -> ml_collections.ConfigDict:
  """The config a config.json holds, locked (typos are errors), every
  field this bcnet_jax declares that the file lacks at its default."""
  saved = files.read_json(json_path)
  if not (isinstance(saved, dict) and saved.get('format') == FORMAT and
          isinstance(saved.get('config'), dict)):
    found = saved.get('format') if isinstance(saved, dict) else None
    raise errors.InvalidInput(
        f'{json_path} is not a run config of format {FORMAT!r} (found '
        f'{found!r}): give the config.json a training run wrote, or a '
        'config file such as configs/cifar10.py')
  config = config_utils.base_config()
  for name, value in identity.flatten(saved['config']).items():
    if name in identity.RETIRED:
      continue
    try:
      config_utils.assign(config, name, value)
    except (KeyError, TypeError, ValueError) as e:
      raise errors.InvalidInput(
          f'{json_path}: field {name}={value!r} is not one this bcnet_jax '
          f'can set ({e}): the file was written by another version; use '
          'that version, or a config file with the fields it names') from None
  config.lock()
  return config


def get_config(json_path: str) -> ml_collections.ConfigDict:
  """For ml_collections' config flags: `--config=<this file>:<json_path>`."""
  return read(json_path)


def for_later_stage(config: Any | None, workdir: str,
                    overridden: Collection[str] = (), *,
                    stage: str = 'the search') -> Any:
  """The config a stage after training runs with in `workdir`.

  Args:
    config: the config given (a file with its overrides), or None: the
      workdir's config.json is used.
    workdir: the trained run's directory.
    overridden: the fields set on the command line: errors name them, and
      a MOVABLE_FIELDS one among them is taken from `config`.
    stage: what runs, for messages ('the search', 'rank', 'evaluate').

  Returns:
    The workdir's training fields with `config`'s fields of later stages.
    A workdir without config.json gives `config` as it is: the
    checkpoint's identity still guards what it was trained on.

  Raises:
    errors.UserError: no config at all; or an override of a training field
      with another value than the workdir's (names it, both values).
  """
  target = path(workdir)
  if not os.path.exists(target):
    if config is None:
      raise errors.MissingInput(
          f'no --config given and {workdir} has no {FILE} (training writes '
          f'it): train first with python -m bcnet_jax.train --config=... '
          f'--workdir={workdir}, or give --config=the config it was '
          'trained with')
    return config
  saved = read(target)
  if config is None:
    return saved
  given, trained = identity.flatten(config), identity.flatten(saved)
  moved = [k for k in MOVABLE_FIELDS if k in overridden]
  differing = [k for k in sorted(trained) if is_training_field(k)
               and k not in moved and given.get(k) != trained[k]]
  refused = [k for k in differing if k in overridden]
  if refused:
    name = refused[0]
    raise errors.InvalidInput(
        f'--config.{name}={given[name]!r}: {name} belongs to training; the '
        f'supernet in {workdir} was trained with {trained[name]!r} ({target}). '
        f'{stage[0].upper()}{stage[1:]} sets only {_later_stage_fields()}; '
        'to change training, train anew in another --workdir')
  if differing:
    console.say(f'note: the training fields are {target}\'s, not --config\'s: '
                + identity.describe(identity.differences(
                    {k: trained[k] for k in differing},
                    {k: given.get(k) for k in differing},
                    saved_as='workdir', current_as='--config')))
  out = saved.copy_and_resolve_references()
  out.unlock()
  for name, value in given.items():
    if not is_training_field(name) or name in moved:
      config_utils.assign(out, name, value)
  out.lock()
  return out
