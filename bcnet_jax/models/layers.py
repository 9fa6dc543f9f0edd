"""Width-aware layers: one definition, supernet mode and compact mode.

Every layer names the dims (docs/design.md §2) of its input and output
channels and receives a `Widths` context at call time:

- supernet mode: parameters have the supernet channels C' of their dims; the
  context carries traced path-id vectors. A kernel is masked to the
  block-diagonal path(in) == path(out) >= 0, BatchNorm keeps per-channel (so
  per-path) statistics, updates running statistics only on active channels,
  and zeroes inactive channels after normalization (docs/design.md §3 notes).
  A single path (`single_path`: paths.left/right) masks no kernel, and
  (`windowed`) runs in the N channels of each dim that can hold it, with
  N-channel slices of the parameters: the nominal network's shapes.
- compact mode: parameters have the channels of one static width vector;
  nothing is masked. `slicing.slice_params` cuts supernet parameters down to it.

Layers choose a lowering for speed (docs/design.md §3): 'native' is XLA's
convolution everywhere; 'cpu' writes 1x1 convs as einsum and depthwise convs as
shifted multiply-adds and zero-pads the channels of other convs to a multiple
of 4 (their kernel gradients' narrow outputs to 16), all of which XLA:CPU
runs several times faster; 'auto' picks 'cpu' on the CPU backend and
'native' elsewhere.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any, Callable

import flax.linen as nn
import jax
import jax.numpy as jnp
from jax import lax

from bcnet_jax import paths
from bcnet_jax.paths import NUM_PATHS, PathIds
from bcnet_jax.space import SearchSpace

LOWERINGS = ('auto', 'native', 'cpu')

conv_init = nn.initializers.variance_scaling(2.0, 'fan_out', 'normal')
dense_init = nn.initializers.variance_scaling(1.0 / 3, 'fan_in', 'uniform')


@dataclasses.dataclass(frozen=True)
class Widths:
  """What a layer needs to know about the widths of one forward pass."""
  space: SearchSpace
  widths: tuple[int, ...] | None  # static bins (compact mode) or None
  path_ids: PathIds | None  # traced ids (supernet mode) or None
  lowering: str
  bn_momentum: float | None = None  # overrides every BatchNorm's momentum
  single_path: bool = False  # ids hold one path: no kernel masks
  windowed: bool = True  # single path: compute only its window (below)

  @property
  def supernet(self) -> bool:
    return self.path_ids is not None

  def channels(self, dim: str) -> int:
    """The parameter size of `dim`: C' in a supernet."""
    d = self.space.dim(dim)
    if self.supernet:
      return d.supernet_channels
    return d.edges[self.widths[d.group]]

  def window(self, dim: str | None) -> tuple[jax.Array, int, int] | None:
    """(left, size, whole): the channels of `dim` a windowed pass computes.

    A left path uses channels [0, e[c]) and e[c] <= e[B] = N, a right path
    [C' - e[c], C'): one path always lies in the first or in the last N of
    the C' channels, so a single path computes N-channel activations with
    N-channel slices of every parameter (the nominal network's shapes)
    instead of C'. `left` (traced: the path's channel 0 is on) says which
    window; size = N, whole = C'. None where nothing is windowed.
    """
    if dim is None or not (self.windowed and self.single_path
                           and self.supernet):
      return None
    d = self.space.dim(dim)
    return self.path_ids[dim][0] >= 0, d.nominal, d.supernet_channels

  def crop(self, value: jax.Array, axes: dict[int, str | None]
           ) -> jax.Array:
    """`value` cut to the window of each dim on its axis (if any): a
    select between the two static slices a window can be."""
    for axis, dim in axes.items():
      window = self.window(dim)
      if window is not None:
        left, size, whole = window
        value = jnp.where(
            left, lax.slice_in_dim(value, 0, size, axis=axis),
            lax.slice_in_dim(value, whole - size, whole, axis=axis))
    return value

  def uncrop(self, whole: jax.Array, part: jax.Array, dim: str) -> jax.Array:
    """`whole` [C'] with its window of `dim` replaced by `part`."""
    window = self.window(dim)
    if window is None:
      return part
    left, size, channels = window
    return jnp.where(left, whole.at[:size].set(part),
                     whole.at[channels - size:].set(part))

  def ids(self, dim: str | None) -> jax.Array | None:
    """The path ids of `dim`'s channels as computed (its window's)."""
    if dim is None or not self.supernet:
      return None
    return self.crop(self.path_ids[dim], {0: dim})

  def active(self, dim: str) -> jax.Array | None:
    """Bool per channel of `dim`, True where on; None in compact mode."""
    ids = self.ids(dim)
    return None if ids is None else ids >= 0

  def resolved_lowering(self) -> str:
    return resolve_lowering(self.lowering)


def resolve_lowering(lowering: str) -> str:
  """'auto' made concrete for the backend this process runs on."""
  if lowering == 'auto':
    return 'cpu' if jax.default_backend() == 'cpu' else 'native'
  return lowering


def _padding(kernel_size: int) -> tuple[tuple[int, int], tuple[int, int]]:
  p = (kernel_size - 1) // 2  # symmetric, as in the PyTorch originals
  return ((p, p), (p, p))


def _conv_native(x, kernel, strides: int, groups: int):
  return lax.conv_general_dilated(
      x, kernel, (strides, strides), _padding(kernel.shape[0]),
      dimension_numbers=('NHWC', 'HWIO', 'NHWC'), feature_group_count=groups)


# XLA:CPU runs a 3x3 convolution over a channel count that is not a multiple
# of 4 two to three times slower than over the next multiple (measured: 17
# channels at 28x28 took 1.7x the time of 20). The supernet's C' = N + e[m]
# is such a count, so the 'cpu' lowering zero-pads channels of 8 or more.
_CPU_CHANNEL_MULTIPLE = 4
# Its kernel gradient is a convolution whose output features are the
# kernel's output channels, and that one is fast only on a multiple of the
# vector width (16 floats with AVX-512): measured at 32x32, batch 128,
# 17 -> 17 channels, 70 ms padded to 20 but 39 ms to 32. Above 32 channels
# the slow path costs ~1.2x, about what padding to 16 adds, so only narrower
# kernels are padded there.
_CPU_GRAD_CHANNEL_MULTIPLE = 16
_CPU_GRAD_PADDED_BELOW = 32


def _pad_channels(a: jax.Array, multiple: int, axis: int = -1) -> jax.Array:
  widths = [(0, 0)] * a.ndim
  widths[axis] = (0, -a.shape[axis] % multiple)
  return jnp.pad(a, widths)


def _cpu_multiple(channels: int) -> int:
  return _CPU_CHANNEL_MULTIPLE if channels >= 8 else 1


def _conv_padded_channels(x, kernel, strides: int):
  """The native conv with input and output channels zero-padded to a
  multiple of _CPU_CHANNEL_MULTIPLE (from 8 up); the same sums."""
  c_in, c_out = kernel.shape[2], kernel.shape[3]
  x = _pad_channels(x, _cpu_multiple(c_in))
  kernel = _pad_channels(_pad_channels(kernel, _cpu_multiple(c_in), axis=2),
                         _cpu_multiple(c_out))
  return _conv_native(x, kernel, strides, 1)[..., :c_out]


@functools.partial(jax.custom_vjp, nondiff_argnums=(2,))
def _conv_cpu(x, kernel, strides: int):
  """_conv_padded_channels whose kernel gradient pads narrow outputs to
  _CPU_GRAD_CHANNEL_MULTIPLE (see above); the same sums."""
  return _conv_padded_channels(x, kernel, strides)


def _conv_cpu_fwd(x, kernel, strides: int):
  return _conv_padded_channels(x, kernel, strides), (x, kernel)


def _conv_cpu_bwd(strides: int, residuals, dy):
  x, kernel = residuals
  _, x_vjp = jax.vjp(lambda x: _conv_padded_channels(x, kernel, strides), x)
  c_in, c_out = kernel.shape[2], kernel.shape[3]
  x_wide = _pad_channels(x, _cpu_multiple(c_in))
  dy_wide = _pad_channels(dy, _CPU_GRAD_CHANNEL_MULTIPLE
                          if c_out < _CPU_GRAD_PADDED_BELOW else 1)
  kernel_wide = jnp.zeros(
      kernel.shape[:2] + (x_wide.shape[-1], dy_wide.shape[-1]), kernel.dtype)
  _, kernel_vjp = jax.vjp(lambda k: _conv_native(x_wide, k, strides, 1),
                          kernel_wide)
  d_kernel = kernel_vjp(dy_wide)[0][:, :, :c_in, :c_out]
  return x_vjp(dy)[0], d_kernel


_conv_cpu.defvjp(_conv_cpu_fwd, _conv_cpu_bwd)


def _conv_1x1_einsum(x, kernel, strides: int):
  return jnp.einsum('nhwc,cd->nhwd', x[:, ::strides, ::strides, :],
                    kernel[0, 0])


def _conv_depthwise_shifted(x, kernel, strides: int):
  k = kernel.shape[0]
  (p, _), _ = _padding(k)
  n, h, w, c = x.shape
  ho, wo = (h + 2 * p - k) // strides + 1, (w + 2 * p - k) // strides + 1
  xp = jnp.pad(x, ((0, 0), (p, p), (p, p), (0, 0)))
  out = jnp.zeros((n, ho, wo, c), x.dtype)
  for i in range(k):
    for j in range(k):
      tap = xp[:, i:i + strides * (ho - 1) + 1:strides,
               j:j + strides * (wo - 1) + 1:strides, :]
      out = out + tap * kernel[i, j, 0]
  return out


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
    ids_in, ids_out = ctx.ids(self.in_dim), ctx.ids(self.out_dim)
    # One path needs no kernel mask: its inactive input channels arrive as
    # zeros (every activation is made from masked BatchNorm or biased-conv
    # outputs), and inactive outputs are masked after the BatchNorm.
    if ids_in is not None and not self.depthwise and not ctx.single_path:
      mask = (ids_in[:, None] == ids_out[None, :]) & (ids_out[None, :] >= 0)
      kernel = kernel * mask.astype(x.dtype)
    lowering = ctx.resolved_lowering()
    if self.depthwise and lowering == 'cpu':
      y = _conv_depthwise_shifted(x, kernel, self.strides)
    elif k == 1 and not self.depthwise and lowering == 'cpu':
      y = _conv_1x1_einsum(x, kernel, self.strides)
    elif not self.depthwise and lowering == 'cpu':
      y = _conv_cpu(x, kernel, self.strides)
    else:
      y = _conv_native(x, kernel, self.strides,
                       kernel.shape[3] if self.depthwise else 1)
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
    if train:
      mean = jnp.mean(x, axis=(0, 1, 2))
      var = jnp.mean(jnp.square(x - mean), axis=(0, 1, 2))
      if not self.is_initializing():
        m = self.momentum if ctx.bn_momentum is None else ctx.bn_momentum
        new_mean = m * old_mean + (1 - m) * mean
        new_var = m * old_var + (1 - m) * var
        if active is not None:
          new_mean = jnp.where(active, new_mean, old_mean)
          new_var = jnp.where(active, new_var, old_var)
        ra_mean.value = ctx.uncrop(ra_mean.value, new_mean, self.dim)
        ra_var.value = ctx.uncrop(ra_var.value, new_var, self.dim)
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
    lowering: 'auto', 'native' or 'cpu' (see module docstring).
    bn_momentum: if set, replaces every BatchNorm's momentum (0 for the
      BN recalibration of evaluate.py).
    single_path: the path ids carry one path (paths.left/right), so no
      kernel is masked: inactive channels stay zeros from BatchNorm on
      (module docstring).
    windowed: a single path computes only the N channels of each dim that
      can hold it (`Widths.window`): the nominal network's shapes instead
      of C'. Off where paths are vmapped: per-path windows of the kernels
      become batched kernels, which XLA lowers to grouped convolutions.
  """
  space: SearchSpace
  widths: tuple[int, ...] | None = None
  num_classes: int = 10
  in_channels: int = 3
  resolution: int = 32
  lowering: str = 'auto'
  bn_momentum: float | None = None  # 0: BN statistics := this batch's
  single_path: bool = False  # path ids hold one path (paths.left/right)
  windowed: bool = True  # a single path computes its N-channel window

  def context(self, path_ids: PathIds | None) -> Widths:
    if self.lowering not in LOWERINGS:
      raise ValueError(f'lowering must be one of {LOWERINGS}, got '
                       f'{self.lowering!r}')
    if (path_ids is None) == (self.widths is None):
      raise ValueError(
          'a supernet (widths=None) takes path ids (paths.left/right/pair); '
          'a compact model (static widths) takes none')
    if path_ids is not None:
      missing = [d.name for d in self.space.dims if d.name not in path_ids]
      if missing:
        raise ValueError(f'path ids missing for dims {missing}')
    if path_ids is not None and resolve_lowering(self.lowering) == 'cpu':
      path_ids = paths.materialized(path_ids)
    return Widths(self.space, self.widths, path_ids, self.lowering,
                  self.bn_momentum, self.single_path, self.windowed)

  def dummy_input(self, batch: int = 1) -> jax.Array:
    return jnp.zeros((batch, self.resolution, self.resolution,
                      self.in_channels), jnp.float32)
