"""What every bcnet_jax command shares: its flags, logging and error output.

`run(main)` defines `--config` and `--workdir` (scenic's app.py) and the
multi-host flags (run/hosts.py), parses the flags, joins the run's other
processes, quiets library logs, and turns a user error (errors.UserError:
a config typo, a missing config file or dataset, an unknown model, a workdir
that is a file, a checkpoint of another run...) into one line on stderr and
exit status 2, with no traceback unless `--verbosity=1` or higher is given.
Any other exception is a bug: its traceback is printed, exit status 1.
Importing the library defines no flag: only `run` does, in a command.

Overrides behave as a user expects: of two exclusive fields
(config_utils.EXCLUSIVE, e.g. total_steps and total_epochs) the one
given on the command line wins over the config file's, and
`--config.field=None` unsets a field. A run's own config is a config file
too: `--config=WORKDIR/config.json` loads it (run/run_config.py), and a
command given no `--config` uses its `--workdir`'s config.json, if any.

Synopsis (a command module):

  from bcnet_jax.run import app

  def main(argv):
    summary = train_and_evaluate(app.config(), app.workdir())

  if __name__ == '__main__':
    app.run(main)
"""

from __future__ import annotations

import json
import os
import shlex
import sys
from typing import Any, Callable, NoReturn, Sequence

from absl import app as absl_app
from absl import flags
from absl import logging
import jax
from ml_collections import config_flags

from bcnet_jax.run import config_utils
from bcnet_jax.run import errors
from bcnet_jax.run import hosts
from bcnet_jax.run import run_config

USER_ERROR_STATUS = 2
_UNSET = 'None'  # --config.field=None unsets the field


def _define_flags() -> None:
  """--config and --workdir, defined once per process, by `run`."""
  if 'config' in flags.FLAGS:
    return
  config_flags.DEFINE_config_file(
      'config', None, 'Config file, e.g. configs/cifar10.py, or a run\'s '
      'WORKDIR/config.json (the default: --workdir\'s, if training wrote '
      'one); override a field with --config.a.b=value (None unsets it).',
      lock_config=True)
  flags.DEFINE_string(
      'workdir', None, 'Run directory (checkpoints, metrics, summary). Rerun '
      'with the same one to resume.')
  flags.DEFINE_string(
      'coordinator', None, 'Several processes as one run: HOST:PORT of '
      'process 0, given to every process with --num_processes and '
      '--process_id (automatic under Slurm, Open MPI and on TPU pods).')
  flags.DEFINE_integer('num_processes', None, 'Processes of the run.')
  flags.DEFINE_integer('process_id', None, 'This process, 0 to N-1.')
  for name in ('config', 'workdir'):  # listed by the command's --help
    flags.FLAGS.register_key_flag_for_module(sys.argv[0], flags.FLAGS[name])


def config() -> Any:
  """The --config of the running command, with its overrides; None if
  neither --config nor a config.json in --workdir was there to load."""
  return flags.FLAGS.config


def overrides() -> set[str]:
  """The fields set on the command line (--config.a.b=...)."""
  if flags.FLAGS.config is None:
    return set()
  return set(config_flags.get_override_values(
      flags.FLAGS['config'])) | _unset_fields


def command_line() -> str:
  """The command as the user typed it (python -m <module> <arguments>)."""
  spec = getattr(sys.modules['__main__'], '__spec__', None)
  program = (['python', '-m', spec.name] if spec is not None
             else ['python', _original_argv[0]])
  return shlex.join(program + _original_argv[1:])


def workdir() -> str:
  """The --workdir of the running command."""
  return flags.FLAGS.workdir


def fail(message: str) -> NoReturn:
  """Prints `error: message` on stderr and exits with status 2."""
  print(f'error: {message}'.rstrip(), file=sys.stderr, flush=True)
  sys.exit(USER_ERROR_STATUS)


def _gist(error: BaseException) -> str:
  """The message of `error` on one line: a traceback quoted in it is cut to
  its first and last lines; ml_collections' quoting and escapes undone."""
  text = str(error)
  if text[:1] == text[-1:] and text[:1] in '"\'':
    text = text[1:-1]
  text = text.replace('\\n', '\n').replace("\\'", "'")
  lines = [l.strip() for l in text.splitlines() if l.strip() not in ('', '.')]
  if any(l.startswith('Traceback') for l in lines):
    lines = [lines[0], lines[-1]]
  return ' '.join(lines).rstrip('.')


_unset_fields: set[str] = set()
_original_argv: list[str] = []
_reads_workdir_config = True
_LOADER = run_config.__file__  # --config=<it>:<config.json> loads a run's


def _flag_value(argv: list[str], name: str) -> tuple[int, str] | None:
  """(index, value) of `--name=value` in argv, or None."""
  for i, arg in enumerate(argv):
    if arg.startswith(f'--{name}='):
      return i, arg.split('=', 1)[1]
  return None


def _config_argument(argv: list[str]) -> list[str]:
  """argv with its run config (a `--config=...json`, or, with no --config,
  the --workdir's config.json) given as the run_config loader; overrides
  with no config at all are an error saying what to give."""
  joined = []  # --config X as --config=X, the same for --workdir
  for arg in argv:
    if joined and joined[-1] in ('--config', '--workdir'):
      joined[-1] += '=' + arg
    else:
      joined.append(arg)
  argv = joined
  found = _flag_value(argv, 'config')
  if found is not None:  # first: ml_collections wants it before overrides
    i, value = found
    if value.endswith('.json'):
      value = f'{_LOADER}:{value}'
    return argv[:1] + [f'--config={value}'] + argv[1:i] + argv[i + 1:]
  workdir = _flag_value(argv, 'workdir')
  if (_reads_workdir_config and workdir is not None and
      os.path.isfile(run_config.path(workdir[1]))):
    return argv[:1] + [f'--config={_LOADER}:{run_config.path(workdir[1])}'
                       ] + argv[1:]
  if any(a.startswith('--config.') for a in argv):
    fail('--config.FIELD overrides need a config to override: give '
         '--config=FILE (e.g. configs/cifar10.py, or a run\'s '
         'WORKDIR/config.json) before them, or the --workdir of a training '
         'run (it holds config.json)')
  return argv


def _parse_flags(argv: list[str]) -> list[str]:
  """absl's parse of argv with its run config (_config_argument), less the
  `--config.x=None` (or `--config.x None`) arguments, whose fields are
  noted in _unset_fields (absl would try to parse 'None' as their type)."""
  _original_argv[:] = argv
  argv = _config_argument(argv)
  sys.argv[:] = argv  # where ml_collections reads the overrides
  kept, i = [], 0
  while i < len(argv):
    name, _, value = argv[i].partition('=')
    if name.startswith('--config.') and argv[i] == name and argv[
        i + 1:i + 2] == [_UNSET]:  # --config.x None
      value, i = _UNSET, i + 1
    if name.startswith('--config.') and value == _UNSET:
      _unset_fields.add(name[len('--config.'):])
    else:
      kept.append(argv[i])
    i += 1
  try:
    return flags.FLAGS(kept)
  except flags.Error as e:
    fail(f'{_gist(e)}. See --help.')
  except SyntaxError as e:
    fail(f'cannot load the --config file: {e}')
  except (AttributeError, KeyError) as e:  # --config.a.b of no field a.b
    fail(f'bad --config override: no such field: {_gist(e)}')
  except Exception as e:  # pylint: disable=broad-except
    fail(f'bad --config override: {_gist(e)}')


def _load_config() -> None:
  """Fails in one line if the config file could not be loaded.

  ml_collections defers that error to the config's first use.
  """
  try:
    loaded = config()
    loaded.keys()
  except Exception as e:  # pylint: disable=broad-except
    cause = e.__cause__ or e
    last = (str(cause).strip().splitlines() or [''])[-1].strip()
    fail(f'cannot load --config={config_name()}: {last}')
  given = set(config_flags.get_override_values(flags.FLAGS['config']))
  try:
    config_utils.apply_command_line(loaded, given, _unset_fields)
  except errors.UserError as e:
    fail(str(e))


def config_name() -> str:
  """The --config file as the user knows it (a config.json, not its
  loader)."""
  name = flags.FLAGS['config'].config_filename
  return name.split(':', 1)[1] if name.startswith(_LOADER + ':') else name


def print_result(value: Any) -> None:
  """A command's result: one JSON line, the last of stdout (process 0)."""
  if jax.process_index() == 0:
    print(json.dumps(value), flush=True)


def run(main: Callable[[list[str]], Any], *,
        required: Sequence[str] = ('workdir',),
        positional: str | None = None, reads_config: bool = True) -> None:
  """absl's app.run with this package's flags, logging and error output.

  Args:
    main: called with argv: the program name, then the positional
      arguments if `positional` names them (else they are an error).
    required: flags that must be given.
    positional: what positional arguments are (e.g. 'image files'); at
      least one must then be given.
    reads_config: whether, given no --config, the command loads its
      --workdir's config.json (app.config() is None where there is none).
  """
  global _reads_workdir_config
  _reads_workdir_config = reads_config
  _define_flags()
  flags.mark_flags_as_required(list(required))

  def wrapped(argv: list[str]) -> Any:
    if positional is None and len(argv) > 1:
      fail(f'unexpected arguments {argv[1:]}: flags are written '
           '--name=value. See --help.')
    if positional is not None and len(argv) < 2:
      fail(f'give one or more {positional} after the flags. See --help.')
    if not flags.FLAGS['verbosity'].present:
      # orbax logs every file it writes, tfds warns about folders it probes.
      logging.set_verbosity(logging.ERROR)
    if flags.FLAGS['config'].present:
      _load_config()
    try:
      hosts.join(flags.FLAGS.coordinator, flags.FLAGS.num_processes,
                 flags.FLAGS.process_id)
      return main(argv)
    except errors.UserError as e:
      if flags.FLAGS.verbosity >= 1:
        raise
      fail(str(e))
    except KeyboardInterrupt:
      print('interrupted: rerun the same command to resume where it stopped',
          file=sys.stderr, flush=True)
      sys.exit(130)

  absl_app.run(wrapped, flags_parser=_parse_flags)
