"""The per-layer table: every width-aware layer of a model run alone at every
channel count its bins give, timed on this device.

A layer's latency depends on its input and output channels only, so a
conv of group a into group b has a table T[w_a, w_b] over the bins (a
BatchNorm or depthwise conv, of one dim: T[w]). Layers of one shape share
their measurements: a `cell` is one (layer shape, input channels, output
channels) and is timed once, whichever layers and bins need it. The
search's constraint is their sum, corrected by a fit on networks or
their segments (predictor.py).

  cells = layers.cells(model, step=3)          # {key: Cell}
  fn, args = layers.runner(cells[key], model.space, batch=1)
  tables, group_a, group_b = layers.tables(model, measured, 3)  # {key: ms}
  stream_groups, segment = layers.streams(model)   # predictor.py's segments
  classes = layers.alike_groups(model)   # [(segment, groups)] sharing values
"""

from __future__ import annotations

import collections
import dataclasses
from typing import Any, Callable, Iterator

import jax
import jax.numpy as jnp
import numpy as np

from bcnet_jax.models import layers as layers_lib
from bcnet_jax.models import layout
from bcnet_jax.run import errors
from bcnet_jax.timing import clock


@dataclasses.dataclass(frozen=True)
class Cell:
  """One layer shape at one pair of channel counts, and how to run it."""
  layer: layout.Layer
  widths: tuple[int, ...]  # a width vector giving the layer these channels
  in_channels: int
  out_channels: int

  @property
  def key(self) -> str:
    """What makes two cells one measurement."""
    layer, module = self.layer, self.layer.module
    strides = getattr(module, 'strides', 1)
    spatial = 'x'.join(str(d) for d in self.layer.in_shape[:-1]) or '-'
    return (f'{layer.kind} k{layer.kernel_size} s{strides} '
            f'b{int(layer.use_bias)} {spatial} '
            f'{self.in_channels}>{self.out_channels}')


def _dims(space, layer: layout.Layer) -> tuple[Any, Any]:
  """The dims (or None) its table's rows and columns are the bins of:
  one dim for a BatchNorm or depthwise conv."""
  dim = lambda name: None if name is None else space.dim(name)  # noqa: E731
  if layer.kind in ('bn', 'depthwise'):
    return dim(layer.out_dim), None
  return dim(layer.in_dim), dim(layer.out_dim)


def grid(space, step: int) -> list[int]:
  """The bins measured: every `step`-th from m, and B."""
  return sorted(set(range(space.min_bins, space.bins + 1, step)) |
                {space.bins})


def _layer_cells(model, layer: layout.Layer, bins: list[int]
                 ) -> Iterator[tuple[int, int, Cell]]:
  """(row bin, column bin, cell) of the layer's table at `bins`; a fixed
  side (the image, the classes) is bin m."""
  space = model.space
  dim_a, dim_b = _dims(space, layer)
  for i in bins if dim_a is not None else (space.min_bins,):
    for j in bins if dim_b is not None else (space.min_bins,):
      if dim_a and dim_b and dim_a.group == dim_b.group and i != j:
        continue  # one group: only its diagonal exists
      widths = space.full()
      if dim_a is not None:
        widths[dim_a.group] = i
      if dim_b is not None:
        widths[dim_b.group] = j
      a = layer.in_channels if dim_a is None else dim_a.edges[i]
      b = layer.out_channels if dim_b is None else dim_b.edges[j]
      if layer.kind in ('bn', 'depthwise'):
        a = b = dim_a.edges[i]
      yield i, j, Cell(layer, tuple(int(w) for w in widths), int(a), int(b))


def check_supported(model) -> tuple[layout.Layer, ...]:
  """The model's layer table; a model without one (traced from Flax) is an
  error saying so."""
  if hasattr(model, 'cost_terms'):
    raise errors.InvalidInput(
        f'{model.space.model}: a latency table is measured layer by layer, '
        'and a model traced from Flax has no layer table yet; search it '
        'under a MACs budget (search.macs_fraction)')
  return layout.layer_table(model)


def cells(model, step: int) -> dict[str, Cell]:
  """Every distinct cell of the model's layers at the grid's bins, in layer
  order."""
  out = {}
  for layer in check_supported(model):
    for _, _, cell in _layer_cells(model, layer, grid(model.space, step)):
      out.setdefault(cell.key, cell)
  return out


def runner(cell: Cell, space, *, batch: int
           ) -> tuple[Callable[..., Any], tuple[Any, ...]]:
  """(jitted fn, args): the cell's layer alone (compact mode, inference),
  one run per call; constant inputs and weights (latency does not depend
  on their values).

  Not several runs chained in a loop: the chain's dependency (a reduction
  of the output into the next input) adds passes over the activations that
  grow with the widths, as large as a BatchNorm itself, which no correction
  removes. A call's launch cost is about the same for every layer, so the
  sum over a network's layers carries the same amount for every width
  vector, and the fit's offset takes it out.
  """
  module, layer = cell.layer.module, cell.layer
  ctx = layers_lib.Widths(space, cell.widths, None)
  kwargs = {'train': False} if layer.kind == 'bn' else {}
  x = jnp.full((batch, *layer.in_shape[:-1], cell.in_channels), 0.5,
               jnp.float32)
  variables = clock.constant_variables(module, x, ctx, **kwargs)
  # Weights as arguments, as in a network: closed over, XLA would fold
  # them into the program as constants.
  return (jax.jit(lambda v, x: module.apply(v, x, ctx, **kwargs)),
          (variables, x))


def streams(model) -> tuple[list[int], np.ndarray]:
  """(stream groups, segment of each layer): the model's residual streams,
  and which stream's segment each layer of its table belongs to.

  A layer belongs to the group of its output channels where they are a
  group's own dim, else (a classifier's classes, an SE reduction's derived
  dim) to its input's (a stem's input, the image, has none: its output's);
  a stream is a group whose layers come in more than one run in call
  order, the channels a residual add ties across blocks (ResNet-20:
  stage1..3; a stage of one block has none). A segment runs
  from one stream group to the next in the space's group order, which
  follows the blocks (within a block the models may number a group before
  one called earlier: ResNet-20's stage2 before stage2_block1_mid, so that
  block's first conv is stage 2's, where MobileNetV2's is the stage
  before's); groups before the first stream join the first segment. A model
  without residual adds has no stream, and all its layers are segment 0.
  """
  space = model.space
  groups = set(space.groups)
  owner = [space.dim(layer.out_dim if layer.out_dim in groups
                     else layer.in_dim or layer.out_dim).group
           for layer in check_supported(model)]
  runs = collections.Counter(g for i, g in enumerate(owner)
                             if i == 0 or owner[i - 1] != g)
  stream_groups = sorted(g for g, n in runs.items() if n > 1)
  return stream_groups, _segment_of_groups(space, stream_groups)[owner]


def _segment_of_groups(space, stream_groups: list[int]) -> np.ndarray:
  """The segment each group is in, by the space's group order."""
  return np.maximum(np.searchsorted(stream_groups, np.arange(space.num_groups),
                                    side='right') - 1, 0)


def alike_groups(model) -> list[tuple[int, list[int]]]:
  """[(segment, groups)]: the groups other than streams, in classes of one
  segment and the same channels at every bin (ResNet-20: the mid widths of
  one stage; MobileNetV2: the expansions of one segment of equal channels;
  a group of channels no other has is a class of its own). Their layers
  are alike (ResNet-20's: a conv from the stream and one back, the first
  block's strided), so a correction shares one value per width between
  them: as many values as one group's, learned from all of them."""
  space = model.space
  stream_groups, _ = streams(model)
  segment_of = _segment_of_groups(space, stream_groups)
  classes = {}
  for g in range(space.num_groups):
    if g not in stream_groups:
      key = (int(segment_of[g]), tuple(space.dims[g].edges))
      classes.setdefault(key, []).append(g)
  return [(segment, groups) for (segment, _), groups in classes.items()]


def tables(model, measured: dict[str, float], step: int
           ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
  """(tables [L, W, W] ms, group_a [L], group_b [L]) of the model's layers,
  as costs.Cost takes them: the measured cells ({key: ms}) at the grid's
  bins, linear in the bins between them."""
  space = model.space
  bins = grid(space, step)
  every = np.arange(space.min_bins, space.bins + 1)
  out, group_a, group_b = [], [], []
  for layer in check_supported(model):
    dim_a, dim_b = _dims(space, layer)
    rows = bins if dim_a is not None else [space.min_bins]
    columns = bins if dim_b is not None else [space.min_bins]
    one_group = dim_a and dim_b and dim_a.group == dim_b.group
    at = {(i, j): measured[cell.key]
          for i, j, cell in _layer_cells(model, layer, bins)}
    if one_group:  # its diagonal
      diagonal = np.interp(every, bins, [at[b, b] for b in bins])
      table = np.diag(diagonal)
    else:
      values = np.array([[at[i, j] for j in columns] for i in rows])
      if len(columns) > 1:
        values = np.stack([np.interp(every, columns, v) for v in values])
      if len(rows) > 1:
        values = np.stack([np.interp(every, rows, v) for v in values.T], 1)
      table = np.zeros((len(every), len(every)))
      table[:values.shape[0], :values.shape[1]] = values
    out.append(table)
    group_a.append(space.num_groups if dim_a is None else dim_a.group)
    group_b.append(space.num_groups if dim_b is None else dim_b.group)
  return np.stack(out), np.array(group_a), np.array(group_b)
