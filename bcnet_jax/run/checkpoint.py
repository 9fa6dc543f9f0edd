"""Train-state checkpoints in `workdir/checkpoints` with orbax, verified.

Each checkpoint holds the TrainState (params, batch_stats, opt_state, step,
loss-record pool; the data order is a function of (seed, step), so nothing
else), a JSON `identity` of the run (the config fields that decide what the
state means) and a JSON `digest`: the SHA-256 of the state's arrays at save
time. orbax 0.12 has no checksum for array data (TensorStore's crc32c codec
guards only zarr3 shard indexes), so flipped bytes inside a data file would
otherwise restore as silently wrong weights. Restoring the newest
checkpoint, in this order:

1. another identity (model, space, optimizer, seed, data split...):
   `ForeignCheckpoint`, naming each differing field with both values
   (run/identity.py); nothing is moved.
2. another structure (arrays missing, extra or of other shapes than this
   code's train state, e.g. after an upgrade): `CheckpointMismatch`, naming
   the differing arrays; nothing is moved.
3. unreadable (files missing, cut short or undecodable), or arrays that do
   not match their digest: reported in one line, moved to
   `workdir/unreadable_checkpoints/` (kept, never read again) and the
   previous checkpoint is tried, down to the oldest kept. Any other error
   (no permission, out of memory...) is raised as it is: nothing is moved.

Orbax writes a checkpoint into a temporary folder and renames it when it is
complete, so a process killed mid-save leaves the previous ones intact.
"""

from __future__ import annotations

import hashlib
import os
import sys
import time
from typing import Any

from absl import logging
import jax
from jax.experimental import multihost_utils
import numpy as np
import orbax.checkpoint as ocp

from bcnet_jax.run import console
from bcnet_jax.run import errors
from bcnet_jax.run import identity as identity_lib

_SHOWN = 4  # differing names listed per kind in an error


class ForeignCheckpoint(errors.InvalidInput):
  """The workdir holds a checkpoint of another run."""


class CheckpointMismatch(errors.InvalidInput):
  """A checkpoint whose arrays are not this code's train state."""


class _Unreadable(Exception):
  """A checkpoint that cannot be trusted, with the reason."""


# What reading a damaged checkpoint raises: TensorStore and JSON decoding
# errors are ValueErrors; missing files FileNotFoundError; cut files EOFError.
UNREADABLE = (_Unreadable, ValueError, FileNotFoundError, EOFError)
# TensorStore raises ValueError for every failure; these codes say the
# files may be fine (no permission, no memory, storage away): not moved.
_NOT_DAMAGE = ('PERMISSION_DENIED', 'RESOURCE_EXHAUSTED', 'UNAVAILABLE',
               'DEADLINE_EXCEEDED', 'CANCELLED')


def _chain(error: BaseException) -> list[BaseException]:
  """error, what caused it, what caused that..."""
  chain = []
  while error is not None and len(chain) < 16:
    chain.append(error)
    error = error.__cause__ or error.__context__
  return chain


def _damaged(error: BaseException) -> bool:
  """Whether `error`, or what caused it, says the checkpoint is damaged.

  orbax wraps TensorStore's read errors in a plain Exception ("Encountered
  error while reading array index"), so the causes are searched too.
  """
  chain = _chain(error)
  if any(code in str(e) for e in chain for code in _NOT_DAMAGE):
    return False
  return any(isinstance(e, UNREADABLE) for e in chain)


def _root_cause(error: BaseException) -> BaseException:
  """The deepest error of the chain that names the damage."""
  damage = [e for e in _chain(error) if isinstance(e, UNREADABLE)]
  return damage[-1] if damage else error


def _host_value(leaf: Any) -> np.ndarray:
  """A leaf on this host; a replicated array's local copy is all of it."""
  if isinstance(leaf, jax.Array) and not leaf.is_fully_addressable:
    if not leaf.is_fully_replicated:  # a bug, not a damaged checkpoint
      raise TypeError('tree_sha256 needs arrays that are replicated or on '
                      'this host; the train state is replicated')
    leaf = leaf.addressable_shards[0].data
  return np.asarray(jax.device_get(leaf))


def tree_sha256(tree: Any) -> str:
  """SHA-256 over a pytree's array bytes, in flattened-path order (the
  same on every host for a replicated tree)."""
  digest = hashlib.sha256()
  for path, leaf in jax.tree_util.tree_flatten_with_path(tree)[0]:
    digest.update(jax.tree_util.keystr(path).encode())
    digest.update(np.ascontiguousarray(_host_value(leaf)).tobytes())
  return digest.hexdigest()


def _key_name(key: Any) -> str:
  for attr in ('name', 'key', 'idx'):
    if hasattr(key, attr):
      return str(getattr(key, attr))
  return str(key)


def array_layout(tree: Any) -> dict[str, str]:
  """{dotted name as orbax stores it: 'shape dtype'} of a pytree's arrays."""
  return {'.'.join(_key_name(k) for k in path):
          f'{tuple(leaf.shape)} {np.dtype(leaf.dtype).name}'
          for path, leaf in jax.tree_util.tree_flatten_with_path(tree)[0]}


def _saved_layout(metadata: Any) -> dict[str, str]:
  return {m.name: f'{tuple(m.shape)} {np.dtype(m.dtype).name}'
          for m in jax.tree.leaves(metadata)}


def _describe(names: list[str]) -> str:
  names = sorted(names)
  more = len(names) - _SHOWN
  return ', '.join(names[:_SHOWN]) + (f' (and {more} more)' if more > 0
                                      else '')


def layout_differences(saved: dict[str, str], expected: dict[str, str]
                       ) -> list[str]:
  """What differs between a checkpoint's arrays and the expected ones."""
  out = []
  missing = [k for k in expected if k not in saved]
  extra = [k for k in saved if k not in expected]
  other = [k for k in expected if k in saved and saved[k] != expected[k]]
  if missing:
    out.append(f'missing in the checkpoint: {_describe(missing)}')
  if extra:
    out.append(f'not in this code\'s train state: {_describe(extra)}')
  if other:
    out.append('other shapes or dtypes: ' + '; '.join(
        f'{k} checkpoint {saved[k]}, this code {expected[k]}'
        for k in sorted(other)[:_SHOWN]))
  return out


class Checkpoints:
  """Saves and restores one run's train state."""

  def __init__(self, workdir: str, run_identity: dict[str, Any],
               max_to_keep: int = 2, *, read_only: bool = False):
    """Opens (or creates) `workdir/checkpoints`.

    Args:
      workdir: the run's directory.
      run_identity: the stage's identity() (run/identity.py).
      max_to_keep: checkpoints kept, at least 2 (a fallback for a corrupt one).
      read_only: for commands that only read a run (evaluate, search):
        nothing is created, saved or moved aside.
    """
    if max_to_keep < 2:
      raise errors.InvalidInput(
          f'keep_checkpoints={max_to_keep}: keep at least 2 so that a '
          'corrupt latest checkpoint has a fallback')
    self.directory = os.path.join(os.path.abspath(workdir), 'checkpoints')
    self.identity = run_identity
    self.read_only = read_only
    self.manager = ocp.CheckpointManager(
        self.directory, item_handlers={
            'state': ocp.StandardCheckpointHandler(),
            'identity': ocp.JsonCheckpointHandler(),
            'digest': ocp.JsonCheckpointHandler()},
        options=ocp.CheckpointManagerOptions(
            max_to_keep=max_to_keep, create=not read_only,
            read_only=read_only))

  def save(self, step: int, state: Any) -> None:
    self.manager.save(step, args=ocp.args.Composite(
        state=ocp.args.StandardSave(state),
        identity=ocp.args.JsonSave(self.identity),
        digest=ocp.args.JsonSave({'sha256': tree_sha256(state)})))

  def _check_identity(self, step: int, saved: dict[str, Any]) -> None:
    """Another run's checkpoint is named by the fields it records that
    differ; one that agrees on all it records but lacks some is of an
    older bcnet_jax."""
    missing = identity_lib.unrecorded(saved, self.identity)
    recorded = {k: v for k, v in identity_lib.flatten(self.identity).items()
                if k not in missing}
    identity_lib.check(
        saved, recorded, saved_as='checkpoint',
        error=lambda details: ForeignCheckpoint(
            f'{self.directory} holds a checkpoint (step {step}) of another '
            f'run: {details}. Use another --workdir, or the config that '
            'wrote it.'))
    if missing:
      raise ForeignCheckpoint(
          f'{self.directory} holds a checkpoint (step {step}) written by an '
          'older bcnet_jax, which did not record '
          f'{identity_lib.describe(missing)}: what it was trained on cannot '
          'be checked against this run. Resume or search it with the '
          'bcnet_jax version that wrote it, or train anew in another '
          '--workdir.')

  def _check_layout(self, step: int, target: Any) -> None:
    metadata = self.manager.item_metadata(step)['state']
    if metadata is None:
      raise _Unreadable('its array metadata cannot be read')
    saved = _saved_layout(metadata)
    differences = layout_differences(saved, array_layout(target))
    if differences:
      raise CheckpointMismatch(
          f'the checkpoint of step {step} in {self.directory} does not hold '
          f'this code\'s train state: {"; ".join(differences)}. Nothing was '
          'moved or changed: resume it with the bcnet_jax version that wrote '
          'it, or start a new run in another --workdir.')

  def _read(self, step: int, target: Any) -> Any:
    """The checkpoint of `step`, verified; raises if it is unreadable."""
    saved = self.manager.restore(step, args=ocp.args.Composite(
        identity=ocp.args.JsonRestore()))['identity']
    self._check_identity(step, saved)
    self._check_layout(step, target)
    abstract = jax.tree.map(ocp.utils.to_shape_dtype_struct, target)
    has_digest = os.path.isdir(os.path.join(self.directory, str(step),
                                            'digest'))
    items = {'state': ocp.args.StandardRestore(abstract)}
    if has_digest:
      items['digest'] = ocp.args.JsonRestore()
    restored = self.manager.restore(step, args=ocp.args.Composite(**items))
    if not has_digest:  # bcnet_jax 0.1 wrote none
      console.say(f'warning: the checkpoint of step {step} has no digest '
                  '(bcnet_jax 0.1 wrote it): restored without verification')
    elif tree_sha256(restored['state']) != restored['digest']['sha256']:
      raise _Unreadable('its arrays differ from the digest written when it '
                        'was saved')
    return restored['state']

  def latest_identity(self) -> dict[str, Any] | None:
    """The identity the newest checkpoint was saved with, if any."""
    steps = self.manager.all_steps()
    if not steps:
      return None
    return self.manager.restore(max(steps), args=ocp.args.Composite(
        identity=ocp.args.JsonRestore()))['identity']

  def restore_latest(self, target: Any) -> Any | None:
    """The newest readable checkpoint restored like `target`, or None."""
    _quiet_late_read_callbacks()
    steps = sorted(self.manager.all_steps(), reverse=True)
    for i, step in enumerate(steps):
      try:
        restored = self._read(step, target)
      except (ForeignCheckpoint, CheckpointMismatch):
        raise
      except Exception as e:  # pylint: disable=broad-except
        if not _damaged(e):
          raise
        self._move_aside(step, steps[i + 1:], e)
        continue
      logging.info('Restored the checkpoint of step %d from %s', step,
                   self.directory)
      return restored
    return None

  def _move_aside(self, step: int, older: list[int],
                  error: Exception) -> None:
    """Says so in one line and, unless read-only, moves the checkpoint aside
    (kept, never read again), so that the step can be saved anew."""
    aside = os.path.join(os.path.dirname(self.directory),
                         'unreadable_checkpoints', f'{step}-{time.time():.0f}')
    where = (f'falling back to step {older[0]}' if older
             else 'no older checkpoint' if self.read_only
             else 'no older checkpoint: starting from scratch')
    cause = _root_cause(error)
    reason = (str(cause) if isinstance(cause, _Unreadable)
              else f'{type(cause).__name__}: {_first_line(cause)}')
    moved = '' if self.read_only else f'moved to {aside}; '
    console.say(f'warning: the checkpoint of step {step} is unreadable '
                f'({reason}); {moved}{where}')
    if self.read_only:
      return
    if jax.process_count() > 1:  # no host still reads it
      multihost_utils.sync_global_devices(f'bcnet_jax: step {step} read')
    if jax.process_index() == 0:
      os.makedirs(os.path.dirname(aside), exist_ok=True)
      os.rename(os.path.join(self.directory, str(step)), aside)
    if jax.process_count() > 1:  # every host sees it gone before reloading
      multihost_utils.sync_global_devices(f'bcnet_jax: step {step} aside')
    self.manager.reload()

  def wait(self) -> None:
    self.manager.wait_until_finished()

  def close(self) -> None:
    self.manager.close()


# What a failed restore leaves behind, printed by Python as tracebacks
# through sys.unraisablehook, hundreds for one checkpoint: TensorStore
# completes the reads in flight after orbax closed their asyncio loop, and
# orbax's other read coroutines fail the same way as the one reported.
_LATE_READ_ERRORS = ('Event loop is closed',
                     'Encountered error while reading array index')


def _quiet_late_read_callbacks() -> None:
  """Silences those harmless leftovers, keeping every other message."""
  previous = sys.unraisablehook
  if getattr(previous, 'bcnet_jax_quiet', False):
    return

  def hook(unraisable: Any) -> None:
    if not str(unraisable.exc_value).startswith(_LATE_READ_ERRORS):
      previous(unraisable)

  hook.bcnet_jax_quiet = True
  sys.unraisablehook = hook


def _first_line(error: Exception, limit: int = 160) -> str:
  line = (str(error).strip().splitlines() or [''])[0]
  return line if len(line) <= limit else line[:limit] + '...'
