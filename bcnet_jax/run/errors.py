"""The library's user errors: wrong input, said in one line of what to fix.

Raised where input is checked (config, data, arch, budget, workdir,
checkpoint identity). The commands (bcnet_jax/run/app.py) print these as one
line and exit with status 2; any other exception is a bug and keeps its
traceback (exit 1). Each type also subclasses the built-in error a caller
would catch (ValueError, FileNotFoundError...), so code written against
those keeps working.
"""

from __future__ import annotations


class UserError(Exception):
  """Input that this library cannot use; the message says what to do."""


class InvalidInput(UserError, ValueError):
  """A config field, file or argument with a value that cannot be used."""


class MissingInput(UserError, FileNotFoundError):
  """A file or directory the run needs is not there."""


class NotADirectoryInput(UserError, NotADirectoryError):
  """A path that must be a directory is something else."""


class TrainingDiverged(UserError, FloatingPointError):
  """The loss became non-finite: the recipe or the input needs a change."""
