"""Analytic MACs and params of width vectors, vectorized with numpy.

MACs count conv and dense multiply-accumulates (what papers call FLOPs) at the
model's input resolution; params count every trainable parameter, BN affine and
biases included (docs/design.md §2, §7). Both are sums over layers of coef x
channels(a) x channels(b), where a and b are dims or the constant 1; the terms
are built once from the model's layer table, then evaluated for any batch of
width vectors as one gather and one matrix product.

Synopsis:

  costs = CostModel(models.get_model('resnet20_cifar'))
  costs.macs(space.full())           # 40_813_184
  costs.params(space.sample(rng, 100_000))   # [100000] int64
"""

from __future__ import annotations

from typing import Any

import numpy as np

from bcnet_jax.models import layers
from bcnet_jax.models.layout import layer_table
from bcnet_jax.run import errors


class CostModel:
  """MACs and params of any width vector of one model at one resolution."""

  def __init__(self, model: layers.WidthModel):
    self.space = model.space
    self.resolution = model.resolution
    if hasattr(model, 'cost_terms'):  # a traced model's, from its trace
      macs, params = model.cost_terms()
    else:
      macs, params = _layer_terms(model)
    self._macs = _terms(macs)
    self._params = _terms(params)


  def _evaluate(self, terms, widths: Any) -> np.ndarray | int:
    widths = self.space.validate_widths(widths)
    chans = self.space.channel_matrix(widths)
    chans = np.concatenate([chans, np.ones((len(chans), 1), np.int64)], 1)
    coef, a, b = terms
    out = (chans[:, a] * chans[:, b]) @ coef
    return int(out[0]) if widths.ndim == 1 else out

  def macs(self, widths: Any) -> np.ndarray | int:
    """MACs of one width vector ([G] -> int) or a batch ([K, G] -> [K])."""
    return self._evaluate(self._macs, widths)

  def macs_terms(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(coef, a, b): MACs = Σ coef·channels(a)·channels(b), where a and b
    index space.dims and len(space.dims) stands for the constant 1."""
    return self._macs

  def uniform_within(self, budget: float) -> np.ndarray:
    """Uniform scaling: the largest all-b width vector with MACs <= budget
    (ValueError if even all-m exceeds it)."""
    for b in range(self.space.bins, self.space.min_bins - 1, -1):
      c = np.full(self.space.num_groups, b, np.int32)
      if self.macs(c) <= budget:
        return c
    raise errors.InvalidInput(
        f'a budget of {budget:,.0f} MACs is below the smallest '
        f'width vector of {self.space.model}')

  def params(self, widths: Any) -> np.ndarray | int:
    """Params of one width vector ([G] -> int) or a batch ([K, G] -> [K])."""
    return self._evaluate(self._params, widths)


def _layer_terms(model: layers.WidthModel) -> tuple[list, list]:
  """A built-in model's terms, from its layer table."""
  column = {d.name: i for i, d in enumerate(model.space.dims)}
  one = len(column)
  macs, params = [], []
  for layer in layer_table(model):
    a, coef_a = ((one, layer.in_channels) if layer.in_dim is None
                 else (column[layer.in_dim], 1))
    b, coef_b = ((one, layer.out_channels) if layer.out_dim is None
                 else (column[layer.out_dim], 1))
    if layer.kind == 'bn':
      params.append((2, b, one))
      continue
    k2 = layer.kernel_size ** 2
    if layer.kind == 'depthwise':
      a, coef_a = one, 1
    macs.append((k2 * layer.out_pixels * coef_a * coef_b, a, b))
    params.append((k2 * coef_a * coef_b, a, b))
    if layer.use_bias:
      params.append((coef_b, b, one))
  return macs, params


def _terms(terms: list[tuple[int, int, int]]):
  coef, a, b = zip(*terms)
  return np.array(coef, np.int64), np.array(a), np.array(b)
