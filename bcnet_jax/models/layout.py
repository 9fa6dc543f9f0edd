"""The layer table: every width-aware layer of a model, read off its trace.

One source of truth for the cost model and for `slice_params`: rather than a
second hand-written description of each architecture, the model is traced
once (shapes only) with `nn.intercept_methods`, and every Conv, BatchNorm and
Classifier reports its dims, kernel and output size.
"""

from __future__ import annotations

import dataclasses
import functools

from flax import traverse_util
import flax.linen as nn
import jax
import jax.numpy as jnp

from bcnet_jax.models import layers
from bcnet_jax.run import errors
from bcnet_jax.space import paths


@dataclasses.dataclass(frozen=True)
class Layer:
  """One width-aware layer.

  Attributes:
    path: module path of its variables, e.g. ('stage1_block1_conv1',).
    kind: 'conv', 'depthwise', 'bn' or 'dense'.
    in_dim: dim of the input channels; None for a fixed count (the image).
    out_dim: dim of the output channels; None for a fixed count (classes).
    in_channels: the fixed input count where in_dim is None.
    out_channels: the fixed output count where out_dim is None.
    kernel_size: k of a k x k kernel (1 for bn and dense).
    out_pixels: output height x width (1 for dense).
    use_bias: whether the layer has a bias.
    in_shape: its input's shape past the batch axis, at full width.
    module: the layer itself, unbound (timing/layers.py runs it alone).
  """
  path: tuple[str, ...]
  kind: str
  in_dim: str | None
  out_dim: str | None
  in_channels: int
  out_channels: int
  kernel_size: int = 1
  out_pixels: int = 1
  use_bias: bool = False
  in_shape: tuple[int, ...] = ()
  module: nn.Module | None = dataclasses.field(default=None, compare=False,
                                               repr=False)


def _record(module: nn.Module, x, y) -> Layer | None:
  path = tuple(module.path)
  seen = {'in_shape': tuple(x.shape[1:]),
          'module': module.clone(parent=None, name=module.name)}
  if isinstance(module, layers.Conv):
    return Layer(path, 'depthwise' if module.depthwise else 'conv',
                 module.in_dim, module.out_dim, x.shape[-1], y.shape[-1],
                 module.kernel_size, y.shape[1] * y.shape[2], module.use_bias,
                 **seen)
  if isinstance(module, layers.BatchNorm):
    return Layer(path, 'bn', module.dim, module.dim, x.shape[-1],
                 x.shape[-1], **seen)
  if isinstance(module, layers.Classifier):
    return Layer(path, 'dense', module.in_dim, None, x.shape[-1],
                 module.num_classes, use_bias=True, **seen)
  return None


@functools.lru_cache(maxsize=64)
def layer_table(model: layers.WidthModel) -> tuple[Layer, ...]:
  """The layers of `model` in call order, traced at `model.resolution`."""
  supernet = model.clone(widths=None, parent=None)
  space = supernet.space
  records = []

  def interceptor(next_fun, args, kwargs, context):
    y = next_fun(*args, **kwargs)
    if context.method_name == '__call__':
      layer = _record(context.module, args[0], y)
      if layer is not None and layer.path not in {r.path for r in records}:
        records.append(layer)
    return y

  def init(rng):
    ids = paths.pair(space, jnp.asarray(space.full()))
    return supernet.init(rng, supernet.dummy_input(1), ids, train=False)

  with nn.intercept_methods(interceptor):
    variables = jax.eval_shape(init, jax.random.key(0))
  covered = {r.path for r in records}
  for key in traverse_util.flatten_dict(dict(variables)):
    if key[1:-1] not in covered:
      raise errors.InvalidInput(
          f'{type(model).__name__}: variable {"/".join(key)} belongs to no '
          'width-aware layer (layers.Conv, BatchNorm, Classifier): its '
          'channels would be costed and sliced by nobody. Write the layer '
          'with the width-aware layers, or trace the model instead '
          '(models.from_flax)')
  return tuple(records)
