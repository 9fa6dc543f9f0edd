"""Data parallelism with jit over a 1-D device mesh (docs/design.md §9).

The global batch is sharded on the `data` axis, the train state replicated;
under jit, gradients and BatchNorm statistics over the sharded batch are
global without any axis_name (pmap is in maintenance mode in current JAX).

Synopsis:

  mesh = parallel.create_mesh()
  step = parallel.jit_train_step(functools.partial(steps.supernet_step, ...),
                                 mesh)
  state, metrics = step(state, parallel.global_batch(local_batch, mesh), c)
"""

from __future__ import annotations

from typing import Any, Callable, Sequence

import jax
from jax.sharding import Mesh
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P
import numpy as np

from bcnet_jax.run import errors

AXIS = 'data'


def create_mesh(devices: Sequence[jax.Device] | None = None) -> Mesh:
  return Mesh(np.asarray(jax.devices() if devices is None else devices),
              (AXIS,))


def replicated(mesh: Mesh) -> NamedSharding:
  return NamedSharding(mesh, P())


def data_sharded(mesh: Mesh) -> NamedSharding:
  return NamedSharding(mesh, P(AXIS))


def check_global_batch(global_batch: int, mesh: Mesh) -> None:
  if global_batch % mesh.size:
    raise errors.InvalidInput(
        f'the global batch of {global_batch} examples does not divide by the '
        f'{mesh.size} devices; use a multiple of {mesh.size}')


def global_batch(local: dict[str, np.ndarray], mesh: Mesh
                 ) -> dict[str, jax.Array]:
  """Assembles each host's examples into one batch sharded over the mesh."""
  sizes = {len(v) for v in local.values()}
  if len(sizes) != 1:
    raise ValueError(f'batch fields differ in length: {sizes}')
  check_global_batch(sizes.pop() * jax.process_count(), mesh)
  sharding = data_sharded(mesh)
  return {k: jax.make_array_from_process_local_data(sharding, np.asarray(v))
          for k, v in local.items()}


def jit_train_step(step: Callable[..., Any], mesh: Mesh,
                   num_replicated_args: int = 1) -> Callable[..., Any]:
  """jit(step(state, batch, *args)) with the state donated.

  The state and the `num_replicated_args` trailing arguments (the widths of
  a supernet step; 0 for a compact step) are replicated, the batch sharded.
  """
  repl = replicated(mesh)
  return jax.jit(step, donate_argnums=0, out_shardings=(repl, repl),
                 in_shardings=(repl, data_sharded(mesh),
                               *[repl] * num_replicated_args))


def create_state(create: Callable[[], Any], mesh: Mesh) -> Any:
  """Runs `create()` under jit with its result replicated over the mesh."""
  return jax.jit(create, out_shardings=replicated(mesh))()
