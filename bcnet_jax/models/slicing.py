"""slice_params: cut supernet variables down to one path's compact model."""

from __future__ import annotations

from typing import Any

import numpy as np
from flax import traverse_util

from bcnet_jax.models import layers
from bcnet_jax.models.layout import Layer, layer_table

SIDES = ('left', 'right')


def channel_indices(space, widths: Any, side: str) -> dict[str, np.ndarray]:
  """Per dim, the supernet channels of path L(c) or R(c)."""
  if side not in SIDES:
    raise ValueError(f'side must be one of {SIDES}, got {side!r}')
  chans = space.channels(widths)
  out = {}
  for d in space.dims:
    n = chans[d.name]
    start = 0 if side == 'left' else d.supernet_channels - n
    out[d.name] = np.arange(start, start + n)
  return out


def _axes(layer: Layer, leaf: str) -> dict[int, str]:
  """Which axis of a layer's variable `leaf` runs over which dim."""
  if layer.kind == 'dense':
    return {0: layer.in_dim} if leaf == 'kernel' else {}
  if leaf == 'kernel':
    axes = {3: layer.out_dim}
    if layer.kind == 'conv' and layer.in_dim is not None:
      axes[2] = layer.in_dim
    return axes
  return {0: layer.out_dim}  # conv bias; bn scale, bias, mean, var


def slice_params(model: layers.WidthModel, variables: Any, widths: Any,
                 side: str) -> dict[str, Any]:
  """The variables (params, batch_stats, ...) of path `side` of `widths`.

  Args:
    model: the supernet (or any model of the same architecture).
    variables: supernet variables, e.g. {'params': ..., 'batch_stats': ...}.
    widths: the width vector, bins per group.
    side: 'left' for L(c) or 'right' for R(c).

  Returns:
    Variables of `models.compact_like(model, widths)`, same collections.
  """
  index = channel_indices(model.space, widths, side)
  by_path = {layer.path: layer for layer in layer_table(model)}
  flat = traverse_util.flatten_dict(dict(variables))
  out = {}
  for key, value in flat.items():
    path, leaf = key[1:-1], key[-1]
    if path not in by_path:
      raise ValueError(f'variable {"/".join(key)} belongs to no width-aware '
                       'layer; slice_params cannot cut it')
    for axis, dim in _axes(by_path[path], leaf).items():
      value = np.take(np.asarray(value), index[dim], axis=axis)
    out[key] = value
  return traverse_util.unflatten_dict(out)
