"""What every bcnet_jax command shares: its flags, logging and error output.

`--config` and `--workdir` are defined here, once (scenic's app.py), so the
command modules can be imported together in one process (tests, notebooks).
`run(main)` parses the flags, quiets library logs, and turns a user error
(a config typo, a missing config file or dataset, an unknown model, a
workdir that is a file, a checkpoint of another run...) into a few lines on
stderr and exit status 2, with no traceback unless `--verbosity=1` or
higher is given.

Synopsis (a command module):

  from bcnet_jax import app

  def main(argv):
    summary = train_and_evaluate(app.CONFIG.value, app.WORKDIR.value)

  if __name__ == '__main__':
    app.run(main, required=('config', 'workdir'))
"""

from __future__ import annotations

import json
import sys
from typing import Any, Callable, NoReturn, Sequence

from absl import app as absl_app
from absl import flags
from absl import logging
import jax
from ml_collections import config_flags

CONFIG = config_flags.DEFINE_config_file(
    'config', None, 'Config file, e.g. configs/cifar10.py; override a field '
    'with --config.a.b=value.', lock_config=True)
WORKDIR = flags.DEFINE_string(
    'workdir', None, 'Run directory (checkpoints, metrics, summary). Rerun '
    'with the same one to resume.')

# Exceptions that say the input is wrong (what to fix is in the message),
# not that the code is: shown as one message, not a traceback.
USER_ERRORS = (ValueError, OSError, FloatingPointError)
USER_ERROR_STATUS = 2


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


def _parse_flags(argv: list[str]) -> list[str]:
  try:
    return flags.FLAGS(argv)
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
    CONFIG.value.keys()
  except Exception as e:  # pylint: disable=broad-except
    cause = e.__cause__ or e
    last = (str(cause).strip().splitlines() or [''])[-1].strip()
    fail(f'cannot load --config={flags.FLAGS["config"].config_filename}: '
         f'{last}')


def config_path() -> str:
  """The --config file as given, for commands a command suggests."""
  return flags.FLAGS['config'].config_filename


def print_result(value: Any) -> None:
  """A command's result: one JSON line, the last of stdout (process 0)."""
  if jax.process_index() == 0:
    print(json.dumps(value), flush=True)


def run(main: Callable[[list[str]], Any], *,
        required: Sequence[str] = ('config', 'workdir'),
        positional: str | None = None) -> None:
  """absl's app.run with this package's flags, logging and error output.

  Args:
    main: called with argv: the program name, then the positional
      arguments if `positional` names them (else they are an error).
    required: flags that must be given.
    positional: what positional arguments are (e.g. 'image files'); at
      least one must then be given.
  """
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
    if 'config' in required or flags.FLAGS['config'].present:
      _load_config()
    try:
      return main(argv)
    except USER_ERRORS as e:
      if flags.FLAGS.verbosity >= 1:
        raise
      fail(str(e))
    except KeyboardInterrupt:
      print('interrupted: rerun the same command to resume where it stopped',
          file=sys.stderr, flush=True)
      sys.exit(130)

  absl_app.run(wrapped, flags_parser=_parse_flags)
