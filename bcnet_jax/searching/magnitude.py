"""The magnitude baseline: the widths a global |γ| ranking keeps.

The standard structured-pruning baseline (network slimming, Liu et al.,
2017): every channel's importance is the |γ| of its BatchNorm in the trained
supernet's full-width left path (averaged over the BatchNorms of its group,
which share the channel); channels are ranked across all groups and the
most important kept until the budget (MACs or latency) is spent. A group
keeps at least its smallest width; the width of a group is the largest bin
whose channels fit its kept count. Groups without a BatchNorm keep the
fraction of channels the ranked groups keep overall.

Synopsis:

  widths = magnitude.widths_within(model, params, cost, budget)
"""

from __future__ import annotations

from typing import Any

from flax import traverse_util
import numpy as np

from bcnet_jax.models import layout
from bcnet_jax.run import errors


def bn_scales(model: Any, params: Any) -> dict[int, np.ndarray]:
  """Group -> mean |γ| per channel of its full-width left path ([N])."""
  space = model.space
  found: dict[int, list[np.ndarray]] = {}
  flat = traverse_util.flatten_dict(dict(params))
  if hasattr(model, 'structure'):  # traced: 1-D 'scale' params of a group
    s = model.structure
    for leaf, pieces in zip(s.tracer.leaves, s.leaf_pieces):
      if (leaf.collection == 'params' and leaf.path[-1] == 'scale' and
          len(pieces) == 1 and len(pieces[0]) == 1 and
          pieces[0][0][0] is not None):
        found.setdefault(pieces[0][0][0], []).append(flat[leaf.path])
  else:
    names = [d.name for d in space.dims]
    for layer in layout.layer_table(model):
      if layer.kind == 'bn':
        found.setdefault(names.index(layer.out_dim), []).append(
            flat[layer.path + ('scale',)])
  out = {}
  for g, scales in found.items():
    if 0 <= g < space.num_groups:
      n = space.dims[g].nominal
      out[g] = np.mean([np.abs(np.asarray(v)[:n]) for v in scales], axis=0)
  return out


def _widths(space, counts: np.ndarray) -> np.ndarray:
  """Per group, the largest bin (at least m) whose channels fit `counts`."""
  edges = space.edge_table()[:space.num_groups, :space.bins + 1]
  fits = edges <= counts[:, None]
  fits[:, :space.min_bins] = False
  best = np.where(fits.any(1), space.bins - np.argmax(fits[:, ::-1], 1),
                  space.min_bins)
  return np.maximum(best, space.min_bins).astype(np.int32)


def widths_within(model: Any, params: Any, cost: Any, budget: float
                  ) -> np.ndarray:
  """The width vector the global |γ| ranking keeps within `budget` of
  `cost` (costs.Cost): the most channels whose cost is within it."""
  space = model.space
  scales = bn_scales(model, params)
  if not scales:
    raise errors.InvalidInput(
        f'{space.model} has no BatchNorm in a searchable group: no '
        'magnitude baseline')
  ranked_groups = np.concatenate([np.full(len(v), g)
                                  for g, v in scales.items()])
  order = np.argsort(-np.concatenate(list(scales.values())), kind='stable')
  ranked_groups = ranked_groups[order]
  nominal = np.array([d.nominal for d in space.dims[:space.num_groups]])
  unranked = np.array([g not in scales for g in range(space.num_groups)])

  def vector(k: int) -> np.ndarray:
    counts = np.bincount(ranked_groups[:k], minlength=space.num_groups)
    kept = k / len(ranked_groups)
    counts = np.where(unranked, np.round(kept * nominal), counts)
    return _widths(space, counts)

  if cost(vector(0)) > budget:
    raise errors.InvalidInput(
        f'a budget of {cost.describe(budget)} is below the smallest width '
        f'vector of {space.model}')
  low, high = 0, len(ranked_groups)  # the most channels within budget
  while low < high:
    mid = (low + high + 1) // 2
    if cost(vector(mid)) <= budget:
      low = mid
    else:
      high = mid - 1
  return vector(low)
