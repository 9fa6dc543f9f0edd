"""Joining the processes of a multi-host run (docs/design.md §9).

Every process runs the same command; `join` makes them one JAX system with
`jax.distributed.initialize` before the first computation:

- explicitly: `--coordinator=HOST:PORT --num_processes=N --process_id=I`
  (or the environment variables JAX_COORDINATOR_ADDRESS, JAX_NUM_PROCESSES,
  JAX_PROCESS_ID), e.g. two processes on one machine;
- automatically where the cluster says it runs several processes: Slurm
  (srun with more than one task: one per GPU), Open MPI (mpirun -n N > 1),
  or a Cloud TPU VM (jax reads the slice's workers from its metadata; a TPU
  VM of no slice, such as a notebook's, runs alone).

One process otherwise: nothing is initialized. After `join`, the data
pipeline reads only this process's shard of each global batch, process 0
writes metrics, summaries and search files, and every process takes part in
checkpointing as orbax requires.
"""

from __future__ import annotations

import glob
import os

import jax

from bcnet_jax.run import errors

# Seconds without a heartbeat after which the survivors of a dead process
# stop (jax's default is 100; a collective waiting for a dead peer fails
# sooner, gloo's read timeout is about 30 s).
HEARTBEAT_TIMEOUT_S = 60


def _cluster_processes() -> int:
  """How many processes Slurm or Open MPI started (1 if neither did)."""
  for variable in ('SLURM_STEP_NUM_TASKS', 'OMPI_COMM_WORLD_SIZE'):
    if os.environ.get(variable, '').isdigit():
      return int(os.environ[variable])
  return 1


def _on_tpu_vm() -> bool:
  """Whether this machine has TPU chips (as Cloud TPU VMs expose them)."""
  return bool(glob.glob('/dev/accel*') or glob.glob('/dev/vfio/[0-9]*'))


def _from_environment(name: str) -> int | None:
  value = os.environ.get(name)
  if value is None:
    return None
  if not value.isdigit():
    raise errors.InvalidInput(f'{name}={value!r} must be a whole number')
  return int(value)


def join(coordinator: str | None = None, num_processes: int | None = None,
         process_id: int | None = None) -> None:
  """Initializes jax.distributed when this process is one of several.

  Arguments not given are read from JAX_COORDINATOR_ADDRESS,
  JAX_NUM_PROCESSES and JAX_PROCESS_ID. Raises errors.InvalidInput for an
  incomplete explicit set.
  """
  coordinator = coordinator or os.environ.get('JAX_COORDINATOR_ADDRESS')
  if num_processes is None:
    num_processes = _from_environment('JAX_NUM_PROCESSES')
  if process_id is None:
    process_id = _from_environment('JAX_PROCESS_ID')
  if coordinator:
    if num_processes is None or process_id is None:
      raise errors.InvalidInput(
          f'--coordinator={coordinator} needs --num_processes and '
          '--process_id (or JAX_NUM_PROCESSES and JAX_PROCESS_ID)')
    if not 0 <= process_id < num_processes:
      raise errors.InvalidInput(
          f'--process_id={process_id} must be in [0, {num_processes})')
    jax.distributed.initialize(
        coordinator, num_processes, process_id,
        heartbeat_timeout_seconds=HEARTBEAT_TIMEOUT_S)
  elif num_processes is not None or process_id is not None:
    raise errors.InvalidInput(
        '--num_processes and --process_id need --coordinator=HOST:PORT '
        '(the address of process 0), or JAX_COORDINATOR_ADDRESS')
  elif _cluster_processes() > 1:
    jax.distributed.initialize(heartbeat_timeout_seconds=HEARTBEAT_TIMEOUT_S)
  elif _on_tpu_vm():
    try:
      jax.distributed.initialize(
          heartbeat_timeout_seconds=HEARTBEAT_TIMEOUT_S)
    except ValueError:  # no slice in the metadata: jax found no cluster
      pass
