"""Train-state checkpoints in `workdir/checkpoints` with orbax.

Each checkpoint holds the TrainState (params, batch_stats, opt_state, step,
loss-record pool; the data order is a function of (seed, step), so nothing
else) and a JSON `identity` of the run: the config fields that decide what
the state means. Restoring:

- a workdir whose checkpoint has another identity (another model, space,
  optimizer, seed...) is an error that names the differing fields;
- an unreadable latest checkpoint (corrupt or partly deleted) is reported,
  moved to `workdir/unreadable_checkpoints/`, and the previous one is tried,
  down to the oldest kept.

Orbax writes a checkpoint into a temporary folder and renames it when it is
complete, so a process killed mid-save leaves the previous ones intact.
"""

from __future__ import annotations

import json
import os
import time
from typing import Any

from absl import logging
import jax
import orbax.checkpoint as ocp

# Config fields that must agree between a checkpoint and the run resuming it.
IDENTITY_FIELDS = (
    ('seed',), ('model',), ('input', 'source'), ('input', 'name'),
    ('input', 'channels'), ('input', 'resolution'), ('supernet', 'objective'),
    ('supernet', 'complementary'), ('supernet', 'pool_size'), ('optim',))


def identity(config: Any, num_classes: int) -> dict[str, Any]:
  out = {'num_classes': num_classes}
  for path in IDENTITY_FIELDS:
    value = config
    for key in path:
      value = value[key]
    out['.'.join(path)] = (value.to_dict() if hasattr(value, 'to_dict')
                           else value)
  return json.loads(json.dumps(out))  # tuples -> lists, as JSON reads back


class Checkpoints:
  """Saves and restores one run's train state."""

  def __init__(self, workdir: str, run_identity: dict[str, Any],
               max_to_keep: int = 2):
    if max_to_keep < 2:
      raise ValueError(f'keep_checkpoints={max_to_keep}: keep at least 2 so '
                       'that a corrupt latest checkpoint has a fallback')
    self.directory = os.path.join(os.path.abspath(workdir), 'checkpoints')
    self.identity = run_identity
    self.manager = ocp.CheckpointManager(
        self.directory, item_names=('state', 'identity'),
        options=ocp.CheckpointManagerOptions(max_to_keep=max_to_keep,
                                             create=True))

  def save(self, step: int, state: Any) -> None:
    self.manager.save(step, args=ocp.args.Composite(
        state=ocp.args.StandardSave(state),
        identity=ocp.args.JsonSave(self.identity)))

  def _check_identity(self, step: int, saved: dict[str, Any]) -> None:
    differ = sorted(k for k in set(saved) | set(self.identity)
                    if saved.get(k) != self.identity.get(k))
    if differ:
      details = '; '.join(f'{k}: checkpoint {saved.get(k)!r}, this run '
                          f'{self.identity.get(k)!r}' for k in differ)
      raise ValueError(
          f'{self.directory} holds a checkpoint (step {step}) of another run: '
          f'{details}. Use another --workdir, or the config that wrote it.')

  def restore_latest(self, target: Any) -> Any | None:
    """The newest readable checkpoint restored like `target`, or None."""
    steps = sorted(self.manager.all_steps(), reverse=True)
    for i, step in enumerate(steps):
      try:
        saved = self.manager.restore(step, args=ocp.args.Composite(
            identity=ocp.args.JsonRestore()))['identity']
      except Exception as e:  # pylint: disable=broad-except
        self._report_unreadable(step, steps[i + 1:], e)
        continue
      self._check_identity(step, saved)  # a foreign run is not "corrupt"
      try:
        abstract = jax.tree.map(ocp.utils.to_shape_dtype_struct, target)
        restored = self.manager.restore(step, args=ocp.args.Composite(
            state=ocp.args.StandardRestore(abstract)))['state']
      except Exception as e:  # pylint: disable=broad-except
        self._report_unreadable(step, steps[i + 1:], e)
        continue
      logging.info('Restored the checkpoint of step %d from %s', step,
                   self.directory)
      return restored
    return None

  def _report_unreadable(self, step: int, older: list[int],
                         error: Exception) -> None:
    """Says so and moves the checkpoint aside (kept, never read again), so
    that the step can be saved anew."""
    aside = os.path.join(os.path.dirname(self.directory),
                         'unreadable_checkpoints', f'{step}-{time.time():.0f}')
    where = (f'falling back to step {older[0]}' if older
             else 'no older checkpoint: starting from scratch')
    message = (f'checkpoint of step {step} in {self.directory} is unreadable '
               f'({type(error).__name__}: {str(error)[:200]}); moved to '
               f'{aside}; {where}')
    logging.warning(message)
    print(f'WARNING: {message}', flush=True)
    if jax.process_index() == 0:
      os.makedirs(os.path.dirname(aside), exist_ok=True)
      os.rename(os.path.join(self.directory, str(step)), aside)
    self.manager.reload()

  def wait(self) -> None:
    self.manager.wait_until_finished()

  def close(self) -> None:
    self.manager.close()
