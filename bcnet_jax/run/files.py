"""Atomic writes: a crash leaves the old file or the new one, never half;
and reading the JSON files written this way."""

from __future__ import annotations

import json
import os
from typing import Any

from bcnet_jax.run import errors


def read_json(path: str) -> Any:
  """A JSON file; a missing file or invalid JSON is a user error naming it."""
  try:
    with open(path) as f:
      return json.load(f)
  except FileNotFoundError:
    raise errors.MissingInput(f'no file {path}') from None
  except OSError as e:
    raise errors.InvalidInput(f'cannot read {path}: {e.strerror}') from None
  except (json.JSONDecodeError, UnicodeDecodeError) as e:
    raise errors.InvalidInput(f'{path} is not valid JSON: {e}') from None


def write_text_atomic(path: str, text: str) -> None:
  """Writes `text` to `path` atomically (see write_bytes_atomic)."""
  write_bytes_atomic(path, text.encode())


def write_bytes_atomic(path: str, data: bytes) -> None:
  """Writes `data` to `path` through a synced temporary file and a rename."""
  os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
  tmp = f'{path}.{os.getpid()}.tmp'
  try:
    with open(tmp, 'wb') as f:
      f.write(data)
      f.flush()
      os.fsync(f.fileno())
    os.replace(tmp, path)
  except BaseException:
    if os.path.exists(tmp):
      os.unlink(tmp)
    raise


def write_json_atomic(path: str, value: Any) -> None:
  write_text_atomic(path, json.dumps(value, indent=2) + '\n')
