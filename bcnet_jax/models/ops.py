"""Platform-specific ops, chosen when a program is lowered for a platform.

Each op has XLA's native form (the default: GPU, TPU) and may have faster
forms for some platforms, in a table {platform: implementation}. `by_platform`
puts every form in the trace (`jax.lax.platform_dependent`) and the lowering
keeps the one of the platform it lowers for, so one trace serves every
platform: `model.jax_export`, traced on a CPU host and exported for cpu and
cuda, runs XLA's native convolutions on a GPU. Adding a TPU or GPU variant is
one table entry here plus one test parameter (tests/ops_test.py).

The CPU forms (docs/design.md §3): 1x1 convs as einsum, depthwise convs as
shifted multiply-adds, other convs with channels zero-padded to a multiple of
4 (their kernel gradients' narrow outputs to 16), path ids materialized into
buffers, and the evaluator's paths run one after another instead of vmapped:
all measured several times faster on XLA:CPU, and all the same sums.

`accelerator_ops()` makes programs traced inside it take the default forms
on every platform: how tests and benches run the GPU/TPU code on a CPU.
"""

from __future__ import annotations

import functools
from typing import Any, Callable

import jax
from jax import lax
import jax.numpy as jnp

# True inside accelerator_ops(); part of jit's cache key, so a program
# traced with one value is never reused for the other.
_DEFAULT_FORMS = jax.make_user_context(default_value=False)


def accelerator_ops():
  """A context in which every op takes its default (native) form."""
  return _DEFAULT_FORMS(True)


def by_platform(table: dict[str, Callable[..., Any]],
                default: Callable[..., Any], *args: Any) -> Any:
  """default(*args), or table[platform](*args) on a platform of `table`."""
  if _DEFAULT_FORMS.value or not table:
    return default(*args)
  return lax.platform_dependent(*args, default=default, **table)


def _padding(kernel_size: int) -> tuple[tuple[int, int], tuple[int, int]]:
  p = (kernel_size - 1) // 2  # symmetric, as in the PyTorch originals
  return ((p, p), (p, p))


def conv_native(x, kernel, strides: int, groups: int = 1):
  return lax.conv_general_dilated(
      x, kernel, (strides, strides), _padding(kernel.shape[0]),
      dimension_numbers=('NHWC', 'HWIO', 'NHWC'), feature_group_count=groups)


# XLA:CPU runs a 3x3 convolution over a channel count that is not a multiple
# of 4 two to three times slower than over the next multiple (measured: 17
# channels at 28x28 took 1.7x the time of 20). The supernet's C' = N + e[m]
# is such a count, so the CPU form zero-pads channels of 8 or more.
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
  return conv_native(x, kernel, strides)[..., :c_out]


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
  _, kernel_vjp = jax.vjp(lambda k: conv_native(x_wide, k, strides),
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


def _depthwise_native(x, kernel, strides: int):
  return conv_native(x, kernel, strides, kernel.shape[3])


# {platform: form} per op; a form takes the op's arguments, strides static.
CONV = {'cpu': _conv_cpu}
CONV_1X1 = {'cpu': _conv_1x1_einsum}
DEPTHWISE = {'cpu': _conv_depthwise_shifted}


def conv(x: jax.Array, kernel: jax.Array, strides: int, *,
         depthwise: bool = False) -> jax.Array:
  """NHWC x HWIO convolution, 'same'-style symmetric padding."""
  if depthwise:
    table, default = DEPTHWISE, _depthwise_native
  elif kernel.shape[:2] == (1, 1):
    table, default = CONV_1X1, conv_native
  else:
    table, default = CONV, conv_native
  def bind(form):
    return lambda x, kernel: form(x, kernel, strides)

  return by_platform({p: bind(f) for p, f in table.items()}, bind(default),
                     x, kernel)


def _materialized_cpu(ids):
  """`ids`, computed once into buffers rather than fused into their users.

  XLA fuses cheap producers into every consumer: on XLA:CPU the whole chain
  from a width vector to its ids (edge lookup, iota, compare, select) was
  recomputed for every element of every activation a mask touched, which
  made a masked pass of CBM MobileNet 1.4x a plain one (1.0x with this). A
  conditional's outputs cannot be fused into its consumers; its predicate
  (ids are never below -1) is traced data, so it cannot be folded away.
  """
  first = jax.tree.leaves(ids)[0]
  return lax.cond(jnp.all(first >= -1), lambda: ids,
                  lambda: jax.tree.map(jnp.zeros_like, ids))


MATERIALIZED = {'cpu': _materialized_cpu}


def materialized(ids: dict[str, jax.Array]) -> dict[str, jax.Array]:
  """The path ids as the platform's layers read them best."""
  return by_platform(MATERIALIZED, lambda ids: ids, ids)


def _vmapped(fn, paths):
  return jax.vmap(fn)(paths)


def _mapped_skipping(fn, paths):
  """One path after another; paths whose `valid` (first leaf) is False are
  skipped: zeros, no compute."""
  def skipped(path):
    return jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype),
                        jax.eval_shape(fn, path))
  return lax.map(lambda p: lax.cond(p[0], fn, skipped, p), paths)


# The evaluator's paths: vmapped on accelerators; on the CPU one after
# another, where a K-times larger batch only spills the caches (measured
# 1.1-1.3x more paths/s than vmap on 2 cores) and padding is skipped.
MAP_PATHS = {'cpu': _mapped_skipping}


def map_paths(fn: Callable[[Any], Any], paths: Any) -> Any:
  """fn over the leading axis of `paths`, a tuple whose first element is
  a bool [n] (False: padding, whose output is unused)."""
  return by_platform({p: functools.partial(f, fn)
                      for p, f in MAP_PATHS.items()},
                     functools.partial(_vmapped, fn), paths)
