"""Width-aware layers: one definition, supernet mode and compact mode.

Every layer names the dims (docs/design.md §2) of its input and output
channels and receives a `Widths` context at call time:

- supernet mode: parameters have the supernet channels C' of their dims; the
  context carries traced path-id vectors. A kernel is masked to the
  block-diagonal path(in) == path(out) >= 0, BatchNorm keeps per-channel (so
  per-path) statistics, updates running statistics only on active channels,
  and zeroes inactive channels after normalization (docs/design.md §3 notes).
  The kind of the paths (paths.Paths) decides the rest: a single path
  (paths.left/right) masks no kernel and runs in the N channels of each dim
  that can hold it, with N-channel slices of the parameters: the nominal
  network's shapes.
- compact mode: parameters have the channels of one static width vector;
  nothing is masked. `slicing.slice_params` cuts supernet parameters down to it.

Convolutions and path ids take each platform's fastest form when the
program is lowered (ops.py). BN recalibration asks for the `BATCH_MOMENTS`
collection: BatchNorm then normalizes with the batch's own statistics and
writes them there (docs/design.md §4).
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any, Callable

import flax.linen as nn
import jax
from jax import lax
import jax.numpy as jnp

from bcnet_jax.models import ops
from bcnet_jax.space import paths as paths_lib
from bcnet_jax.space.paths import NUM_PATHS
from bcnet_jax.space.search_space import SearchSpace

# The collection BatchNorm writes its batch's mean and variance to when it
# is mutable (BN recalibration): normalized with them, running stats kept.
BATCH_MOMENTS = 'batch_moments'

conv_init = nn.initializers.variance_scaling(2.0, 'fan_out', 'normal')
dense_init = nn.initializers.variance_scaling(1.0 / 3, 'fan_in', 'uniform')


@dataclasses.dataclass(frozen=True)
class Widths:
  """What a layer needs to know about the widths of one forward pass."""
  space: SearchSpace
  widths: tuple[int, ...] | None  # static bins (compact mode) or None
  paths: paths_lib.Paths | None  # supernet mode: its paths, else None
  path_ids: dict[str, jax.Array] | None = None  # paths.ids(), computed once

  @property
  def supernet(self) -> bool:
    return self.paths is not None

  @property
  def masked(self) -> bool:
    """Kernels are masked to the paths' blocks: two paths share the
    channels. One path needs no mask: its inactive input channels arrive
    as zeros (every activation is made from masked BatchNorm or biased-conv
    outputs), and inactive outputs are masked after the BatchNorm."""
    return self.supernet and not self.paths.single

  def channels(self, dim: str) -> int:
    """The parameter size of `dim`: C' in a supernet."""
    d = self.space.dim(dim)
    if self.supernet:
      return d.supernet_channels
    return d.edges[self.widths[d.group]]

  def window(self, dim: str | None) -> tuple[int, int] | None:
    """(start, size): the channels of `dim` a single path computes.

    A left path uses channels [0, e[c]) and e[c] <= e[B] = N, a right path
    [C' - e[c], C'): one path always lies in the first or in the last N of
    the C' channels, so it computes N-channel activations with N-channel
    slices of every parameter (the nominal network's shapes) instead of C'.
    Static: the kind of the paths says which. None where nothing is cut.
    """
    if dim is None or not self.supernet or not self.paths.single:
      return None
    d = self.space.dim(dim)
    start = 0 if self.paths.kind == 'left' else d.supernet_channels - d.nominal
    return start, d.nominal

  def crop(self, value: jax.Array, axes: dict[int, str | None]
           ) -> jax.Array:
    """`value` cut to the window of each dim on its axis (if any)."""
    for axis, dim in axes.items():
      window = self.window(dim)
      if window is not None:
        start, size = window
        value = lax.slice_in_dim(value, start, start + size, axis=axis)
    return value

  def uncrop(self, whole: jax.Array, part: jax.Array, dim: str) -> jax.Array:
    """`whole` [C'] with its window of `dim` replaced by `part`."""
    window = self.window(dim)
    if window is None:
      return part
    start, size = window
    return whole.at[start:start + size].set(part)

  def ids(self, dim: str | None) -> jax.Array | None:
    """The path ids of `dim`'s channels as computed (its window's)."""
    if dim is None or not self.supernet:
      return None
    return self.crop(self.path_ids[dim], {0: dim})

  def active(self, dim: str) -> jax.Array | None:
    """Bool per channel of `dim`, True where on; None in compact mode."""
    ids = self.ids(dim)
    return None if ids is None else ids >= 0


class Conv(nn.Module):
  """Conv from dim `in_dim` (None: the input image) to dim `out_dim`."""
  in_dim: str | None
  out_dim: str
  kernel_size: int = 3
  strides: int = 1
  depthwise: bool = False
  use_bias: bool = False

  @nn.compact
  def __call__(self, x: jax.Array, ctx: Widths) -> jax.Array:
    features = ctx.channels(self.out_dim)
    k = self.kernel_size
    if self.depthwise:
      shape = (k, k, 1, features)
    else:
      shape = (k, k, x.shape[-1] if self.in_dim is None
               else ctx.channels(self.in_dim), features)
    kernel = ctx.crop(
        self.param('kernel', conv_init, shape, jnp.float32),
        {3: self.out_dim, 2: None if self.depthwise else self.in_dim}
    ).astype(x.dtype)
    if x.shape[-1] != kernel.shape[2] * (kernel.shape[3]
                                         if self.depthwise else 1):
      raise ValueError(f'{self.name}: kernel {kernel.shape} does not fit '
                       f'{x.shape[-1]} input channels')
    if ctx.masked and self.in_dim is not None and not self.depthwise:
      ids_in, ids_out = ctx.ids(self.in_dim), ctx.ids(self.out_dim)
      mask = (ids_in[:, None] == ids_out[None, :]) & (ids_out[None, :] >= 0)
      kernel = kernel * mask.astype(x.dtype)
    y = ops.conv(x, kernel, self.strides, depthwise=self.depthwise)
    if self.use_bias:
      y = y + ctx.crop(self.param('bias', nn.initializers.zeros, (features,),
                                  jnp.float32), {0: self.out_dim}
                       ).astype(y.dtype)
    active = ctx.active(self.out_dim)
    if active is not None and self.use_bias:  # the bias must not leak
      y = y * active.astype(y.dtype)
    return y


class BatchNorm(nn.Module):
  """BatchNorm over one dim; masked channels keep their running statistics."""
  dim: str
  momentum: float = 0.9
  epsilon: float = 1e-5

  @nn.compact
  def __call__(self, x: jax.Array, ctx: Widths, *, train: bool) -> jax.Array:
    c = ctx.channels(self.dim) if ctx.supernet else x.shape[-1]
    crop = functools.partial(ctx.crop, axes={0: self.dim})
    scale = crop(self.param('scale', nn.initializers.ones, (c,), jnp.float32))
    bias = crop(self.param('bias', nn.initializers.zeros, (c,), jnp.float32))
    ra_mean = self.variable('batch_stats', 'mean', jnp.zeros, (c,),
                            jnp.float32)
    ra_var = self.variable('batch_stats', 'var', jnp.ones, (c,), jnp.float32)
    old_mean, old_var = crop(ra_mean.value), crop(ra_var.value)
    active = ctx.active(self.dim)
    dtype = x.dtype
    x = x.astype(jnp.promote_types(dtype, jnp.float32))  # statistics >= f32
    moments = (self.is_mutable_collection(BATCH_MOMENTS) and
               not self.is_initializing())
    if train or moments:
      mean = jnp.mean(x, axis=(0, 1, 2))
      var = jnp.mean(jnp.square(x - mean), axis=(0, 1, 2))

      def updated(variable, value, old):
        """`variable` with `value` on the active channels (in the window)."""
        if active is not None:
          value = jnp.where(active, value, old)
        return ctx.uncrop(variable.value, value, self.dim)

      if moments:
        self.put_variable(BATCH_MOMENTS, 'mean',
                          updated(ra_mean, mean, old_mean))
        self.put_variable(BATCH_MOMENTS, 'var', updated(ra_var, var, old_var))
      if train and not self.is_initializing():
        m = self.momentum
        ra_mean.value = updated(ra_mean, m * old_mean + (1 - m) * mean,
                                old_mean)
        ra_var.value = updated(ra_var, m * old_var + (1 - m) * var, old_var)
    else:
      mean, var = old_mean, old_var
    multiplier = lax.rsqrt(var + self.epsilon) * scale
    if active is not None:  # inactive channels out as zeros; per channel,
      # not a pass over the activations
      multiplier, bias = multiplier * active, bias * active
    return ((x - mean) * multiplier + bias).astype(dtype)


class Classifier(nn.Module):
  """Dense head from dim `in_dim` to fixed classes, one logit set per path.

  Supernet mode returns [paths, batch, classes]: path k sees only its own
  features, the bias is shared. Compact mode returns [batch, classes].
  """
  in_dim: str
  num_classes: int

  @nn.compact
  def __call__(self, x: jax.Array, ctx: Widths) -> jax.Array:
    in_features = (ctx.channels(self.in_dim) if ctx.supernet
                   else x.shape[-1])
    kernel = ctx.crop(self.param('kernel', dense_init,
                                 (in_features, self.num_classes),
                                 jnp.float32), {0: self.in_dim}
                      ).astype(x.dtype)
    bias = self.param('bias', nn.initializers.zeros, (self.num_classes,),
                      jnp.float32).astype(x.dtype)
    ids = ctx.ids(self.in_dim)
    if ids is None:
      return x @ kernel + bias
    per_path = jnp.stack([(ids == k) for k in range(NUM_PATHS)]).astype(
        x.dtype)
    return jnp.einsum('bc,pc,cn->pbn', x, per_path, kernel) + bias


def conv_bn(x: jax.Array, ctx: Widths, in_dim: str | None, out_dim: str, *,
            name: str, train: bool, suffix: str = '', kernel_size: int = 3,
            strides: int = 1,
            depthwise: bool = False,
            act: Callable[[jax.Array], jax.Array] | None = None,
            bn_kwargs: dict[str, Any] | None = None) -> jax.Array:
  """Conv `{name}_conv{suffix}` + BatchNorm `{name}_bn{suffix}` (+ act)."""
  x = Conv(in_dim, out_dim, kernel_size, strides, depthwise,
           name=f'{name}_conv{suffix}')(x, ctx)
  x = BatchNorm(out_dim, **(bn_kwargs or {}), name=f'{name}_bn{suffix}')(
      x, ctx, train=train)
  return x if act is None else act(x)


def classify(x: jax.Array, ctx: Widths, dim: str, num_classes: int, *,
             train: bool, dropout_rate: float = 0.0
             ) -> tuple[jax.Array, dict[str, jax.Array]]:
  """Global average pool, dropout, `classifier`: a model's (logits, aux)."""
  features = jnp.mean(x, axis=(1, 2))
  x = nn.Dropout(dropout_rate, deterministic=not train)(features)
  logits = Classifier(dim, num_classes, name='classifier')(x, ctx)
  return logits, {'features': features}


class WidthModel(nn.Module):
  """Base of every model: supernet mode if `widths` is None, else compact.

  Attributes:
    space: the model's search space (groups, bins, edges).
    widths: static bins per group for a compact model; None for the supernet.
    num_classes: classifier outputs.
    in_channels: channels of the input image.
    resolution: input height = width, used by `dummy_input` and cost model.
  """
  space: SearchSpace
  widths: tuple[int, ...] | None = None
  num_classes: int = 10
  in_channels: int = 3
  resolution: int = 32

  supports_pair = True  # paths.pair: the fused complementary pass

  def context(self, paths: paths_lib.Paths | None) -> Widths:
    if paths is not None and not isinstance(paths, paths_lib.Paths):
      raise TypeError('a supernet takes paths.left/right/pair(space, widths)'
                      f', not {type(paths).__name__}')
    if (paths is None) == (self.widths is None):
      raise ValueError(
          'a supernet (widths=None) takes paths (paths.left/right/pair); '
          'a compact model (static widths) takes none')
    if paths is None:
      return Widths(self.space, self.widths, None)
    if paths.space != self.space:
      raise ValueError(f'paths of the space of {paths.space.model!r} '
                       f'(bins {paths.space.bins}), not of this model\'s')
    return Widths(self.space, None, paths, ops.materialized(paths.ids()))

  def dummy_input(self, batch: int = 1) -> jax.Array:
    return jnp.zeros((batch, self.resolution, self.resolution,
                      self.in_channels), jnp.float32)
