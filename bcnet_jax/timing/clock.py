"""How latency is measured here, and on what.

A jitted function is called once to compile (excluded), `warmup` more
times, then `repeats` times, each call waited for; its latency is the
median of those, in milliseconds, and its noise the half-width of their
interquartile range relative to the median. A shared machine's speed
drifts by tens of percent within seconds, so what is compared is timed
against a reference called in turn with it (`ratio`): the drift slows
both alike. `device()` names what the figures belong to: a table measured
on one device, backend, thread setting or jax version does not describe
another.

  ms, noise = clock.median_ms(jax.jit(f), (x,), repeats=30)
  times, noise = clock.ratio(fn, args, reference, reference_args,
                             repeats=20)
  times, noise = clock.ratios([(fn, args), (fn2, args2)], reference,
                              reference_args, repeats=20)     # in turns
  out = clock.networks_ms(model, {'full': ..., 'a': ...}, batch=1,
                          repeats=20)     # {'full': ms, 'a': ms, ...}
"""

from __future__ import annotations

import concurrent.futures
import os
import platform
import time
from typing import Any, Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from tqdm import tqdm

from bcnet_jax import models

# Timed calls per measurement where the caller does not say (the search's
# and retraining's comparisons).
REPEATS = 20


def median_ms(fn: Callable[..., Any], args: tuple[Any, ...], *,
              repeats: int, warmup: int = 3) -> tuple[float, float]:
  """(median ms of `repeats` calls of fn(*args), relative noise)."""
  for _ in range(1 + warmup):  # compile, then warm up
    jax.block_until_ready(fn(*args))
  median, noise = _median_and_noise(
      np.array([_seconds(fn, args) for _ in range(repeats)]))
  return 1e3 * median, noise


def _seconds(fn: Callable[..., Any], args: tuple[Any, ...]) -> float:
  """Wall seconds of one call of fn(*args), waited for."""
  start = time.perf_counter()
  jax.block_until_ready(fn(*args))
  return time.perf_counter() - start


def _median_and_noise(values: np.ndarray) -> tuple[float, float]:
  """(median, half the interquartile range over the median)."""
  q1, median, q3 = np.percentile(values, [25, 50, 75])
  return float(median), float((q3 - q1) / 2 / median)


def constant_variables(module, *args: Any, **kwargs: Any) -> Any:
  """`module`'s variables for `args`, every leaf 0.01: latency does not
  depend on the values, and nothing is drawn or compiled to make them."""
  shapes = jax.eval_shape(lambda: module.init(jax.random.key(0), *args,
                                              **kwargs))
  return jax.tree.map(lambda s: jnp.full(s.shape, 0.01, s.dtype), shapes)


def network_runner(model, widths: Any, *, batch: int
                   ) -> tuple[Callable[..., Any], tuple[Any, ...]]:
  """(jitted fn, args): the compact network of `widths` at inference on
  `batch` images, constant weights (latency does not depend on their
  values)."""
  compact = models.compact_like(model, widths)
  x = jnp.full(compact.dummy_input(batch).shape, 0.5, jnp.float32)
  variables = constant_variables(compact, compact.dummy_input(1),
                                 train=False)
  return (jax.jit(lambda v, x: compact.apply(v, x, train=False)[0]),
          (variables, x))


def networks_ms(model, networks: dict[str, Any], *, batch: int,
                repeats: int) -> dict[str, Any]:
  """{name: ms} of the compact networks {name: widths} of `model`, one of
  them 'full': its median ms, the others' their `ratios` to it (timed in
  turns) times that; with what they were measured at: 'batch', 'device',
  'repeats' and 'noise' (the median of the measurements' noise)."""
  reference = network_runner(model, networks['full'], batch=batch)
  full, spread = median_ms(*reference, repeats=repeats)
  others = [name for name in networks if name != 'full']
  times, spreads = ratios(
      [network_runner(model, networks[name], batch=batch)
       for name in others], *reference, repeats=repeats)
  return {'batch': batch, 'device': device()['device'], 'repeats': repeats,
          'full': full,
          **{name: float(t) * full for name, t in zip(others, times)},
          'noise': float(np.median([spread, *spreads]))}


def compile_all(
    runners: Sequence[tuple[Callable[..., Any], tuple[Any, ...]]], *,
    desc: str | None = None) -> None:
  """Compiles the runners' jitted functions for their arguments, as many at
  once as this process has cores (XLA compiles a program on about one): a
  jitted function's first call then finds its program compiled. Other
  functions, and a lone program (no others to compile beside it: the
  build's cells, compiled in sets, are timed one by one through `ratio`),
  are left to their first call. `desc`: a progress bar."""
  jitted = [(fn, args) for fn, args in runners if hasattr(fn, 'lower')]
  if len(jitted) < 2:
    return
  pool = concurrent.futures.ThreadPoolExecutor(_cores())
  try:
    compiled = pool.map(lambda runner: runner[0].lower(*runner[1]).compile(),
                        jitted)
    for _ in tqdm(compiled, total=len(jitted), desc=desc, unit='fn',
                  disable=desc is None, dynamic_ncols=True):
      pass
  finally:  # interrupted: the programs not started are not compiled
    pool.shutdown(cancel_futures=True)


def ratio(fn: Callable[..., Any], args: tuple[Any, ...],
          reference: Callable[..., Any], reference_args: tuple[Any, ...], *,
          repeats: int, warmup: int = 3) -> tuple[float, float]:
  """(median of fn's time over the reference's, relative noise): `ratios`
  of one function."""
  times, noise = ratios([(fn, args)], reference, reference_args,
                        repeats=repeats, warmup=warmup)
  return float(times[0]), float(noise[0])


def ratios(runners: Sequence[tuple[Callable[..., Any], tuple[Any, ...]]],
           reference: Callable[..., Any], reference_args: tuple[Any, ...], *,
           repeats: int, warmup: int = 3, desc: str | None = None
           ) -> tuple[np.ndarray, np.ndarray]:
  """([median of each fn's time over the reference's], [relative noise])
  of runners [(fn, args)]. Each call of a fn is timed against the mean of
  the reference's calls before and after it: a machine whose speed drifts
  (a shared virtual machine's) slows both alike, and the ratio keeps. The
  runners take turns, one call each per round in a new order each round
  (fixed seed), `repeats` rounds: a slower change of the machine (another
  tenant's load for a minute) reaches every runner alike rather than the
  one being timed then, and no runner always follows the same one.
  `desc`: progress bars over the compiling and the rounds."""
  if not runners:
    return np.empty(0), np.empty(0)
  compile_all(runners, desc=desc and f'{desc}: compiling')
  for fn, args in [*runners, (reference, reference_args)]:
    for _ in range(1 + warmup):  # compile (or find it compiled), warm up
      jax.block_until_ready(fn(*args))
  order = np.random.default_rng(0)
  before = _seconds(reference, reference_args)
  out = np.empty((repeats, len(runners)))
  for i in tqdm(range(repeats), desc=f'{desc}: timing in turns',
                unit='round', disable=desc is None, dynamic_ncols=True):
    for j in order.permutation(len(runners)):
      fn, args = runners[j]
      this = _seconds(fn, args)
      after = _seconds(reference, reference_args)
      out[i, j] = this / (0.5 * (before + after))
      before = after
  medians, noise = zip(*(_median_and_noise(column) for column in out.T))
  return np.array(medians), np.array(noise)


def _cpu_model() -> str:
  """The processor's name (Linux: /proc/cpuinfo), else platform's."""
  try:
    with open('/proc/cpuinfo') as f:
      for line in f:
        if line.startswith('model name'):
          return line.split(':', 1)[1].strip()
  except OSError:
    pass
  return platform.processor() or platform.machine()


def threads() -> str:
  """The thread setting latency was measured under: the cores this process
  may use and XLA_FLAGS (which can pin XLA's CPU threads)."""
  flags = os.environ.get('XLA_FLAGS', '').strip()
  return f'{_cores()} cores' + (f', XLA_FLAGS={flags}' if flags else '')


def _cores() -> int:
  """The cores this process may use."""
  return (len(os.sched_getaffinity(0)) if hasattr(os, 'sched_getaffinity')
          else os.cpu_count())


def device() -> dict[str, str]:
  """What measured latencies belong to: {'backend', 'device', 'threads',
  'jax'}; on a CPU the device is the processor and its core count."""
  backend = jax.default_backend()
  first = jax.local_devices()[0]
  name = (f'{_cpu_model()} ({os.cpu_count()} logical cores)'
          if backend == 'cpu' else first.device_kind)
  return {'backend': backend, 'device': name,
          'threads': threads() if backend == 'cpu' else 'n/a',
          'jax': jax.__version__}
