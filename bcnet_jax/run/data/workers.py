"""Training batches built by grain worker processes (input.workers > 0).

Decoding and augmenting ImageNet-size batches is CPU work that one Python
process cannot spread over a host's cores (the GIL): worker processes build
whole batches, each with `Input.train_batch`, the one definition of a batch.
So the batch of a step is the same, bit for bit, with 0 or N workers, and a
resumed run starts the workers at the checkpoint's step.

Step s goes to worker (s - first_step) % N; grain interleaves the workers'
outputs round-robin, so batches arrive in step order. Each worker holds a
copy of the `Input` (pickled once, by the training process) and builds its
batches with `threads` threads. It has no jax runtime: it reports the
training process's jax process index and count, as `train_batch` reads them
to pick this host's part of the global batch. grain starts the workers
with `spawn`: each imports the program's main module again, which must run
nothing on import (`if __name__ == '__main__':`).

  with workers.train_batches(data, first_step, total_steps, 8) as batches:
    for step, batch in zip(range(first_step, total_steps), batches):
      ...
"""

from __future__ import annotations

import dataclasses
import functools
import os
import pickle
import signal
import threading
import time
import traceback
from typing import Any, Iterator, NoReturn

from absl import flags
import jax

from bcnet_jax.run import errors
from bcnet_jax.run.data import pipeline


def _import_grain(num_workers: int):
  try:
    import grain  # pylint: disable=g-import-not-at-top
  except ImportError as e:
    raise errors.InvalidInput(
        f"input.workers={num_workers} needs grain: pip install -e '.[grain]' "
        '(or set input.workers=0)') from e
  return grain


def _exit_with_parent(parent: int) -> None:
  # A training process killed outright (SIGKILL, OOM) runs no clean-up:
  # its workers would wait on their full queues forever.
  while os.getppid() == parent:
    time.sleep(1)
  os._exit(0)


def _init_worker(process_index: int, process_count: int, parent: int,
                 worker_index: int, worker_count: int) -> None:
  """Runs first in each worker process (grain's worker_init_fn)."""
  del worker_index, worker_count
  # Ctrl-C reaches the whole process group: the training process stops the
  # workers itself, rather than each printing its own KeyboardInterrupt.
  signal.signal(signal.SIGINT, signal.SIG_IGN)
  threading.Thread(target=_exit_with_parent, args=(parent,),
                   daemon=True).start()
  # No accelerator (the training process holds it) and no distributed
  # runtime here: this process builds host `process_index`'s batches.
  jax.config.update('jax_platforms', 'cpu')
  jax.process_index = lambda backend=None: process_index
  jax.process_count = lambda backend=None: process_count


class _BatchOfStep:
  """step -> data.train_batch(step), for grain to pickle into each worker.

  The Input is pickled once here, not once per worker by grain (an
  ImageNet image folder's file list takes seconds), and unpickled on the
  worker's first batch.
  """

  def __init__(self, data: pipeline.Input, threads: int):
    # A fresh Input: data's thread pool, once used, cannot be pickled.
    self._pickled = pickle.dumps(
        dataclasses.replace(data, num_threads=threads))
    self._data = None

  def __call__(self, step: int) -> pipeline.Batch:
    if self._data is None:
      self._data = pickle.loads(self._pickled)
    try:
      return self._data.train_batch(int(step))
    except Exception as e:  # pylint: disable=broad-except
      _raise_picklable(e, step)


def _raise_picklable(error: Exception, step: int) -> NoReturn:
  """Raises `error`, or a RuntimeError saying it, if it cannot be pickled.

  grain sends a worker's error to the training process pickled, where it
  is raised as is (an errors.UserError stays one, its message intact). One
  that does not survive pickling would reach it as an unrelated TypeError,
  or not at all (the worker's queue drops it: training waits forever).
  """
  try:
    pickle.loads(pickle.dumps(error))
  except Exception:  # pylint: disable=broad-except
    raise RuntimeError(
        f'a worker failed to build the batch of step {step}:\n'
        + ''.join(traceback.format_exception(error)).rstrip()) from None
  raise error


class Batches:
  """This host's training batches in step order, from worker processes.

  An iterator and a context manager: leaving the `with` block, close(), the
  last batch or an error stops the workers. A batch's arrays are in shared
  memory, released when the batch is dropped.
  """

  def __init__(self, iterator: Any):
    self._iterator = iterator

  def __iter__(self) -> Iterator[pipeline.Batch]:
    return self

  def __next__(self) -> pipeline.Batch:
    try:
      return next(self._iterator)
    except BaseException:
      self.close()
      raise

  def close(self) -> None:
    self._iterator.close()

  def __enter__(self) -> Batches:
    return self

  def __exit__(self, *exc_info) -> None:
    self.close()


def train_batches(data: pipeline.Input, first_step: int, total_steps: int,
                  num_workers: int, *, threads: int = 1) -> Batches:
  """The batches of steps first_step..total_steps-1, built by `num_workers`
  processes with `threads` threads each.

  Each worker runs up to four batches ahead of the training process (in
  grain's queues, in shared memory: /dev/shm), plus the one it builds.
  """
  grain = _import_grain(num_workers)
  profiling = 'grain_enable_multiprocess_worker_profiling'
  if not flags.FLAGS.is_parsed() and profiling in flags.FLAGS:
    # The Python API, not an absl app: grain 0.2.18 reads this flag of its
    # own unguarded when it starts the workers (UnparsedFlagAccessError).
    # Its default is what we want.
    flags.FLAGS[profiling].present = True
  init = functools.partial(_init_worker, jax.process_index(),
                           jax.process_count(), os.getpid())
  steps = grain.MapDataset.range(first_step, total_steps).map(
      _BatchOfStep(data, threads))
  # The workers' parallelism is the processes: each builds one batch at a
  # time, in its main thread (no read-ahead thread pool, no 500-deep buffer).
  steps = steps.to_iter_dataset(
      grain.ReadOptions(num_threads=0, prefetch_buffer_size=0))
  steps = steps.mp_prefetch(
      grain.MultiprocessingOptions(num_workers=num_workers,
                                   per_worker_buffer_size=1),
      worker_init_fn=init)
  return Batches(iter(steps))
