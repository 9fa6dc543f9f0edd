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
  out = clock.networks_ms(model, {'full': ..., 'a': ...}, batch=1,
                          repeats=20)     # {'full': ms, 'a': ms, ...}
"""

from __future__ import annotations

import os
import platform
import time
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np

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
  them 'full': its median ms, the others' their `ratio` to it times that;
  with what they were measured at: 'batch', 'device', 'repeats' and
  'noise' (the median of the measurements' noise)."""
  reference = network_runner(model, networks['full'], batch=batch)
  full, spread = median_ms(*reference, repeats=repeats)
  out = {'batch': batch, 'device': device()['device'], 'repeats': repeats}
  noise = [spread]
  for name, widths in networks.items():
    if name == 'full':
      out[name] = full
      continue
    times, spread = ratio(*network_runner(model, widths, batch=batch),
                          *reference, repeats=repeats)
    out[name] = times * full
    noise.append(spread)
  out['noise'] = float(np.median(noise))
  return out


def ratio(fn: Callable[..., Any], args: tuple[Any, ...],
          reference: Callable[..., Any], reference_args: tuple[Any, ...], *,
          repeats: int, warmup: int = 3) -> tuple[float, float]:
  """(median of fn's time over the reference's, relative noise), the two
  called in turn, each of fn's calls against the mean of the reference's
  calls before and after it: a machine whose speed drifts (a shared
  virtual machine's) slows both alike, and the ratio keeps."""
  for _ in range(1 + warmup):  # compile, then warm up
    jax.block_until_ready(fn(*args))
  before = _seconds(reference, reference_args)
  ratios = np.empty(repeats)
  for i in range(repeats):
    this = _seconds(fn, args)
    after = _seconds(reference, reference_args)
    ratios[i] = this / (0.5 * (before + after))
    before = after
  return _median_and_noise(ratios)


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
  cores = (len(os.sched_getaffinity(0)) if hasattr(os, 'sched_getaffinity')
           else os.cpu_count())
  flags = os.environ.get('XLA_FLAGS', '').strip()
  return f'{cores} cores' + (f', XLA_FLAGS={flags}' if flags else '')


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
