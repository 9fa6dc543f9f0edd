"""How training batches reach the step: one of three feeds, picked by
`create` from the config and the data (docs/design.md §9).

- 'device': the training split, decoded once, held as uint8 on every device;
  the host sends only each step's example positions, and the jitted step
  gathers, augments and normalizes them (device_augment.py). Where the
  decoded split fits in input.on_device_max_mb and the augmentation is
  'cifar' or 'none' (CIFAR, MNIST). Replicated, not sharded: a step's
  examples are drawn from the whole split, so a device holding a shard would
  fetch most of its batch from the others every step; a split this small
  costs little memory on each.
- 'workers': input.workers > 0; grain worker processes build the host
  batches (workers.py), the same batches the 'host' feed builds.
- 'host': this process's threads build each batch (pipeline.Input), one
  step ahead of the device.

Every feed's batch of a step is a pure function of (seed, step), so a run
resumed from a checkpoint continues exactly; the host and the workers feed
give the same batches, the device feed the same examples in the same order,
augmented with other random draws of the same distribution.

  feed = train_feed.create(data, config.input, mesh, seed=config.seed)
  step = feed.jit_step(step_fn, num_replicated_args=1)
  with feed.batches(first_step, total_steps) as batches:
    for step_number, local in zip(range(first_step, total_steps), batches):
      state, metrics = step(state, parallel.global_batch(local, mesh), c)
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import dataclasses
import functools
from typing import Any, Callable, Iterator, Protocol

import jax
from jax.sharding import Mesh
import numpy as np

from bcnet_jax.run import parallel
from bcnet_jax.run.data import device_augment
from bcnet_jax.run.data import pipeline
from bcnet_jax.run.data import workers

HostBatch = dict[str, np.ndarray]


class Feed(Protocol):
  """What the training program needs of a feed."""
  name: str  # 'device' | 'workers' | 'host'

  def describe(self) -> str:
    """How batches are built, in words, for the announcement."""

  def jit_step(self, step: Callable[..., Any], num_replicated_args: int
               ) -> Callable[..., Any]:
    """parallel.jit_train_step of `step(state, batch, *args)`, called as
    `jitted(state, global_batch, *args)` with this feed's batches."""

  def batches(self, first_step: int, total_steps: int
              ) -> contextlib.AbstractContextManager[Iterator[HostBatch]]:
    """This host's batches of steps first_step..total_steps-1, in order."""


def device_bytes(data: pipeline.Input, channels: int) -> int:
  """The bytes the device feed holds on each device."""
  return len(data.train_indices) * data.resolution ** 2 * channels


def create(data: pipeline.Input, config: Any, mesh: Mesh, *, seed: int
           ) -> Feed:
  """The feed of config (input): 'device' where it applies, else 'workers'
  with input.workers > 0, else 'host'."""
  limit = config.on_device_max_mb * 2 ** 20
  if (config.augment in device_augment.AUGMENTATIONS and
      0 < device_bytes(data, config.channels) <= limit):
    return DeviceFeed(data, mesh, seed, config)
  if config.workers > 0:
    return WorkerFeed(data, mesh, workers=config.workers)
  return HostFeed(data, mesh)


@dataclasses.dataclass(frozen=True)
class HostFeed:
  """Batches built by this process's threads, one step ahead."""
  data: pipeline.Input
  mesh: Mesh
  name: str = 'host'

  def describe(self):
    return (f'built on the host by {self.data.num_threads} threads, one step '
            'ahead (input.workers=0)')

  def jit_step(self, step, num_replicated_args):
    return parallel.jit_train_step(step, self.mesh, num_replicated_args)

  @contextlib.contextmanager
  def batches(self, first_step, total_steps):
    ahead = concurrent.futures.ThreadPoolExecutor(1)

    def generate():
      upcoming = ahead.submit(self.data.train_batch, first_step)
      for step in range(first_step, total_steps):
        batch = upcoming.result()
        if step + 1 < total_steps:
          upcoming = ahead.submit(self.data.train_batch, step + 1)
        yield batch

    try:
      yield generate()
    finally:
      ahead.shutdown(cancel_futures=True)


@dataclasses.dataclass(frozen=True)
class WorkerFeed(HostFeed):
  """The host feed's batches, built by `workers` grain processes."""
  workers: int = 1
  name: str = 'workers'

  def describe(self):
    return (f'built on the host by {self.workers} grain worker processes '
            '(input.workers)')

  def batches(self, first_step, total_steps):
    return workers.train_batches(self.data, first_step, total_steps,
                                 self.workers)


@dataclasses.dataclass(frozen=True, eq=False)
class DeviceFeed:
  """The training split on every device; positions from the host."""
  data: pipeline.Input
  mesh: Mesh
  seed: int
  config: Any  # input
  name: str = 'device'

  def describe(self):
    size = device_bytes(self.data, self.config.channels) / 2 ** 20
    done = ('augmented and normalized' if self.config.augment != 'none'
            else 'normalized')
    return (f'held on each device ({size:,.0f} MiB of uint8 training '
            f'images, decoded once), {done} inside the step '
            '(input.on_device_max_mb)')

  @functools.cached_property
  def examples(self) -> dict[str, jax.Array]:
    """The decoded training split, replicated on the mesh (decoded on the
    first use: the later stages, which never train, never pay for it)."""
    images, labels = self.data.decoded_train_part()
    sharding = parallel.replicated(self.mesh)
    return {k: jax.make_array_from_callback(v.shape, sharding,
                                            lambda index, v=v: v[index])
            for k, v in (('image', images), ('label', labels))}

  def build_batch(self, examples, positions, step):
    """The training batch at `positions` of `examples` for `step`, as the
    jitted step builds it (device_augment.training_batch of this config)."""
    config = self.config
    return device_augment.training_batch(
        examples, positions, step, seed=self.seed, augment=config.augment,
        mean=tuple(config.mean), std=tuple(config.std))

  def jit_step(self, step, num_replicated_args):
    build = self.build_batch

    def from_positions(state, batch, *args):
      *args, examples = args
      return step(state, build(examples, batch['position'], state.step),
                  *args)

    jitted = parallel.jit_train_step(from_positions, self.mesh,
                                     num_replicated_args + 1)
    examples = self.examples
    return lambda state, batch, *args: jitted(state, batch, *args, examples)

  @contextlib.contextmanager
  def batches(self, first_step, total_steps):
    yield ({'position': self.data.train_positions(step)}
           for step in range(first_step, total_steps))
