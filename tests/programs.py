"""Running the package's commands as a user would, from the tests."""

import hashlib
import json
import os
import pathlib
import sys

from tests import jax_setup

ROOT = pathlib.Path(__file__).resolve().parents[1]

# The same devices (XLA_FLAGS) and persistent compilation cache as this
# process: a command compiles nothing an earlier one did (a 6-step training
# run took 0.6x the time with the cache warm).
SUBPROCESS_ENV = {**os.environ, **jax_setup.cache_environment()}
# For a process a test kills: no cache. jax writes cache entries in place, so
# a process killed while writing one leaves a truncated entry, which every
# later reader warns of and compiles anew (a command killed on a test's
# timeout, a failure already, can leave one too).
KILLED_ENV = {**os.environ, 'JAX_ENABLE_COMPILATION_CACHE': 'false'}
KILLED_ENV.pop('JAX_COMPILATION_CACHE_DIR', None)


def command(module, *flags):
  return [sys.executable, '-m', f'bcnet_jax.{module}', *flags]


def snapshot(root) -> dict[str, tuple]:
  """Every path under root with its mtime, size and content digest."""
  out = {}
  for path in sorted(pathlib.Path(root).rglob('*')):
    stat = path.stat()
    digest = (hashlib.sha256(path.read_bytes()).hexdigest() if path.is_file()
              else None)
    out[str(path)] = (stat.st_mtime_ns, stat.st_size, digest)
  return out


def searched_arch(workdir) -> dict:
  """The arch.json of a search in `workdir`, less its measured latency (a
  timing: no two runs agree on it)."""
  arch = json.loads(pathlib.Path(workdir, 'search', 'arch.json').read_text())
  del arch['latency_ms']
  return arch
