"""A network's segments run alone: its compiled program cut where one
residual stream's segment of layers (layers.streams) ends and the next
begins.

Why: on the CPU measured, a whole network is not the sum of its layers
timed alone, but its stages timed alone, summed and fitted, rank networks
as well as networks repeat, and what the layers miss in a stage follows
the stage's stream width (experiments/README.md). Timing each segment of
the fit's networks gives the correction per stream its own measurement of
every segment, where whole networks give only their sum. The cut is made
in the traced program, so it needs nothing of the model but its layer
table: each operation belongs to the layer whose module traced it (its
name stack), and one the model itself traced (a residual add, an
activation) to the layer before it.

  fns = segments.runners(model, widths, batch=32)  # [(jitted fn, args)]
"""

from __future__ import annotations

from typing import Any, Callable

import jax
from jax.extend import core as jax_core
import jax.numpy as jnp
import numpy as np

from bcnet_jax.models import channels
from bcnet_jax.run import errors
from bcnet_jax.timing import clock
from bcnet_jax.timing import layers


def runners(model, widths: Any, *, batch: int
            ) -> list[tuple[Callable[..., Any], tuple[Any, ...]]]:
  """[(jitted fn, args)] of the compact network's segments, in order: each
  runs that segment's operations of the whole network's program on constant
  inputs (its weights and the activations it reads), returning what later
  segments read."""
  jaxpr, consts = program(*clock.network_runner(model, widths, batch=batch))
  consts = dict(zip(jaxpr.constvars, consts))
  owner = _owners(model, jaxpr.eqns)
  out = []
  for s in range(owner.max() + 1):
    where = np.flatnonzero(owner == s)
    eqns = jaxpr.eqns[where[0]:where[-1] + 1]
    read_later = set(_variables(
        [v for e in jaxpr.eqns[where[-1] + 1:] for v in e.invars] +
        jaxpr.outvars))
    defined = {v for e in eqns for v in e.outvars}
    read = list(dict.fromkeys(
        v for v in _variables([v for e in eqns for v in e.invars])
        if v not in defined))
    constants = [v for v in read if v in consts]
    inputs = [v for v in read if v not in consts]
    outputs = [v for e in eqns for v in e.outvars if v in read_later]
    segment = jax_core.ClosedJaxpr(jax_core.Jaxpr(
        constants, inputs, outputs, eqns, debug_info=jax_core.DebugInfo(
            'segment', f'segment {s} of {model.space.model}', None, None)),
        [consts[v] for v in constants])
    out.append((jax.jit(jax_core.jaxpr_as_fun(segment)),
                tuple(jnp.full(v.aval.shape, 0.01, v.aval.dtype)
                      for v in inputs)))
  return out


def program(fn: Callable[..., Any], args: tuple[Any, ...]
            ) -> tuple[Any, tuple[Any, ...]]:
  """(jaxpr, its constants) of fn(*args): a jitted fn's body."""
  closed = jax.make_jaxpr(fn)(*args)
  jaxpr = closed.jaxpr
  if len(jaxpr.eqns) == 1 and channels.subjaxpr(jaxpr.eqns[0]):
    return channels.subjaxpr(jaxpr.eqns[0])
  return jaxpr, tuple(closed.consts)


def _variables(atoms: list[Any]) -> list[Any]:
  """The variables among a program's operands (not its literals)."""
  return [a for a in atoms if not isinstance(a, jax_core.Literal)]


def _owners(model, eqns) -> np.ndarray:
  """The segment of each operation: its layer's (the longest layer path
  its module path begins with), else the last layer's before it. A layer
  that traced no operation (its module path not in the name stack: a layer
  called through a model's method or a transform), or segments that
  interleave in the program, cannot be cut apart: an error."""
  table = layers.check_supported(model)
  _, segment = layers.streams(model)
  of_path = {'/'.join(layer.path): int(s) for layer, s in zip(table, segment)}
  owner, found, current = [], set(), 0
  for eqn in eqns:
    scopes = channels.module_of(eqn).split('/')
    for end in range(len(scopes), 0, -1):
      path = '/'.join(scopes[:end])
      if path in of_path:
        current = of_path[path]
        found.add(path)
        break
    owner.append(current)
  owner = np.array(owner)
  missing = [path for path in of_path if path not in found]
  if missing:
    raise errors.InvalidInput(
        f'{model.space.model}: no operation of its program was traced by '
        f'the layers {missing[:5]} (their module paths are not in the '
        'operations\' name stacks), so its segments cannot be timed apart')
  if np.any(np.diff(owner) < 0):
    raise errors.InvalidInput(
        f'{model.space.model}: its program runs the residual streams\' '
        'segments of layers interleaved, so they cannot be timed apart')
  return owner
