"""slice_params: cut supernet variables down to one path's compact model."""

from __future__ import annotations

from typing import Any

from flax import traverse_util
import numpy as np

from bcnet_jax.models import layers
from bcnet_jax.models.layout import Layer
from bcnet_jax.models.layout import layer_table


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
  if hasattr(model, 'slice_variables'):  # a traced model's, from its trace
    return model.slice_variables(variables, widths, side)
  index = model.space.channel_indices(widths, side)
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
