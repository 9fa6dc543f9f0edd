"""Runs a traced model's jaxpr at other channel counts, or with masks.

The jaxpr traced at the model's own widths is re-evaluated equation by
equation rather than re-running the user's Python (which may branch on
shapes and silently skip a projection). Two changes are possible:

- `sizes` (group -> channels): every variable takes the channels of its
  groups; shape-carrying parameters (reshape, broadcast_in_dim, iota,
  random bits, a depthwise convolution's group count) are rewritten to
  match. The compact network of a width vector.
- `masks` (group -> [channels] bool): each contraction over a group's
  channels (a conv's or Dense's kernel input axis) sees only the channels
  that are on: the weight is multiplied by the mask along that axis. Off
  channels may hold anything elsewhere; nothing else mixes channels (the
  analysis fixes every group something else reduces), so the outputs
  equal the sliced network's. A supernet path in its window.
"""

from __future__ import annotations

from typing import Any, Callable

import jax
import jax.extend.core as jcore
import jax.numpy as jnp
import numpy as np

from bcnet_jax.models import channels

Pieces = tuple[tuple[int | None, int], ...]  # (group or None, nominal size)


class Interpreter:
  """Evaluates one analysed program at `sizes` and/or with `masks`."""

  def __init__(self, analysis: channels.Analysis,
               pieces: Callable[[int], Pieces],
               sizes: dict[int, int] | None = None,
               masks: dict[int, jax.Array] | None = None):
    self.analysis = analysis
    self.pieces = pieces
    self.sizes = sizes
    self.masks = masks
    self.contractions = {(c.scope, c.index): c
                         for c in analysis.contractions}

  def axis_size(self, node: int) -> int:
    if self.sizes is None:
      return self.analysis.size[node]
    return sum(n if g is None else self.sizes[g]
               for g, n in self.pieces(node))

  def shape(self, scope, var) -> tuple[int, ...]:
    return tuple(self.axis_size(n)
                 for n in self.analysis.nodes[(scope, var)])

  def mask(self, node: int, dtype) -> jax.Array | None:
    """The on/off vector of an axis (None: nothing off)."""
    pieces = self.pieces(node)
    if self.masks is None or all(g is None for g, _ in pieces):
      return None
    return axis_mask(pieces, self.masks).astype(dtype)

  def run(self, closed: Any, *args: jax.Array) -> list[jax.Array]:
    return self._run(closed.jaxpr, closed.consts, args, ())

  def _run(self, jaxpr, consts, args, scope) -> list[jax.Array]:
    env: dict[Any, jax.Array] = {}

    def read(atom):
      if isinstance(atom, jcore.Literal):
        return atom.val
      return env[atom]

    for var, value in zip(jaxpr.constvars, consts):
      env[var] = value
    for var, value in zip(jaxpr.invars, args):
      env[var] = value
    for index, eqn in enumerate(jaxpr.eqns):
      invals = [read(v) for v in eqn.invars]
      sub = channels.subjaxpr(eqn)
      if sub is not None and self._inline(eqn, scope + (index,)):
        outvals = self._run(sub[0], sub[1], invals, scope + (index,))
      else:
        contraction = self.contractions.get((scope, index))
        if (contraction is not None and self.masks is not None and
            contraction.kind in ('conv', 'dense')):
          invals = self._masked(contraction, invals)
        params = (self._params(eqn, scope, index) if self.sizes
                  else eqn.params)
        outvals = _bind(eqn.primitive, invals, params)
      for var, value in zip(eqn.outvars, outvals):
        if self.sizes is not None and (scope, var) in self.analysis.nodes:
          want = self.shape(scope, var)
          if tuple(np.shape(value)) != want:
            raise AssertionError(
                f'{eqn.primitive.name} made {np.shape(value)}, expected '
                f'{want} ({channels.module_of(eqn)})')
        env[var] = value
    return [read(v) for v in jaxpr.outvars]

  def _inline(self, eqn, inner: tuple[int, ...]) -> bool:
    """Whether a call runs equation by equation: where its shapes change
    or a contraction inside takes a mask. Otherwise it is bound as it was
    traced, its custom derivative rules kept (at other widths a
    custom_jvp's body is differentiated instead)."""
    if self.masks is not None and any(
        c.scope[:len(inner)] == inner for c in self.contractions.values()):
      return True
    scope = inner[:-1]
    return self.sizes is not None and any(
        tuple(np.shape(v.aval)) != self.shape(scope, v)
        for v in list(eqn.invars) + list(eqn.outvars)
        if not isinstance(v, jcore.Literal) and
        (scope, v) in self.analysis.nodes)

  def _masked(self, contraction: channels.Contraction, invals):
    weight = invals[contraction.weight]
    mask = self.mask(contraction.in_node, weight.dtype)
    if mask is None:
      return invals
    invals = list(invals)
    invals[contraction.weight] = weight * along(mask, weight.ndim,
                                                contraction.axis)
    return invals

  def _params(self, eqn, scope, index) -> dict[str, Any]:
    """eqn.params with shape-carrying entries rewritten to `sizes`."""
    params = dict(eqn.params)
    name = eqn.primitive.name
    out = self.shape(scope, eqn.outvars[0]) if eqn.outvars else ()
    if name in ('broadcast_in_dim', 'iota', 'random_bits'):
      params['shape'] = out
    elif name == 'reshape':
      params['new_sizes'] = out
    elif (name == 'conv_general_dilated' and
          self.contractions[(scope, index)].kind == 'depthwise'):
      lhs = self.shape(scope, eqn.invars[0])
      spec = params['dimension_numbers'].lhs_spec
      params['feature_group_count'] = lhs[spec[1]]
    return params


def _bind(primitive, invals, params) -> list[jax.Array]:
  """primitive applied as jax's own jaxpr evaluation applies it."""
  bind_params = primitive.get_bind_params(params)
  subfuns = ()
  if isinstance(bind_params, tuple):  # (subfuns, params) in some versions
    subfuns, bind_params = bind_params
  out = primitive.bind(*subfuns, *invals, **bind_params)
  return out if primitive.multiple_results else [out]


def axis_mask(pieces: Pieces, masks: dict[int, jax.Array]) -> jax.Array:
  """An axis's on/off vector: each group piece's mask, fixed pieces on."""
  return jnp.concatenate([masks[g] if g is not None else jnp.ones((n,), bool)
                          for g, n in pieces])


def along(vector: Any, ndim: int, axis: int) -> Any:
  """`vector` shaped to broadcast along `axis` of an ndim-array."""
  shape = [1] * ndim
  shape[axis] = -1
  return vector.reshape(shape)
