"""Analytic MACs and params of width vectors, and the search's constraint.

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

The search constrains one `Cost`: a sum over terms of a table indexed by
the bins of two groups, so that its value and its exact expectation under
independent per-group distributions (the prior's) are the same code for
MACs (`costs.macs_cost()`: table = coef·channels(a)·channels(b)) and for a
measured latency (bcnet_jax/timing/predictor.py).

  cost = costs.macs_cost()
  cost(space.full()); cost.expected(probs); cost.uniform_within(budget)
"""

from __future__ import annotations

import hashlib
from typing import Any

import jax
import jax.numpy as jnp
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

  def macs_cost(self) -> Cost:
    """MACs as the search's constraint."""
    coef, a, b = self._macs
    return Cost.from_terms(self.space, 'macs', coef, a, b)

  def params(self, widths: Any) -> np.ndarray | int:
    """Params of one width vector ([G] -> int) or a batch ([K, G] -> [K])."""
    return self._evaluate(self._params, widths)


class Cost:
  """A constraint of the search: value(c) = constant + Σ_t T_t[c[g_a(t)],
  c[g_b(t)]], each table indexed by the bins (from m) of two groups.

  Attributes:
    space: the search space.
    name: 'macs' or 'latency_ms', the key of its values in records.
    tables: [T, W, W] float64, W = B - m + 1.
    group_a, group_b: [T] the groups indexing each table's rows and
      columns; num_groups stands for none (the table's first row/column).
    constant: added to every value.
  """

  def __init__(self, space, name: str, tables: np.ndarray,
               group_a: np.ndarray, group_b: np.ndarray,
               constant: float = 0.0):
    self.space, self.name, self.constant = space, name, float(constant)
    self.tables = np.asarray(tables, np.float64)
    self.group_a, self.group_b = np.asarray(group_a), np.asarray(group_b)

  @classmethod
  def from_terms(cls, space, name: str, coef: np.ndarray, a: np.ndarray,
                 b: np.ndarray, constant: float = 0.0) -> Cost:
    """Σ coef·channels(a)·channels(b), a and b index space.dims (len(dims)
    for the constant 1), as a Cost."""
    channels = np.concatenate([
        space.edge_table()[:, space.min_bins:space.bins + 1],
        np.ones((1, space.bins - space.min_bins + 1), np.int64)])
    group = np.array([d.group for d in space.dims] + [space.num_groups])
    tables = (np.asarray(coef, np.float64)[:, None, None] *
              channels[a][:, :, None] * channels[b][:, None, :])
    return cls(space, name, tables, group[a], group[b], constant)

  def fingerprint(self) -> str:
    """What tells two costs apart (a search state records it)."""
    digest = hashlib.sha256(self.name.encode())
    for array in (self.tables, self.group_a, self.group_b,
                  np.float64(self.constant)):
      digest.update(np.ascontiguousarray(array).tobytes())
    return digest.hexdigest()[:16]

  @property
  def unit(self) -> str:
    return 'ms' if self.name == 'latency_ms' else 'MACs'

  def describe(self, value: float) -> str:
    """'12,345,678 MACs' or '1.234 ms'."""
    if self.name == 'macs':
      return f'{value:,.0f} MACs'
    return f'{value:,.3f} ms'

  def __call__(self, widths: Any) -> np.ndarray | float:
    """The value of one width vector ([G] -> float) or a batch ([K, G] ->
    [K])."""
    widths = self.space.validate_widths(widths)
    index = widths.reshape(-1, self.space.num_groups) - self.space.min_bins
    index = np.concatenate([index, np.zeros((len(index), 1), np.int64)], 1)
    terms = np.arange(len(self.tables))
    out = self.constant + self.tables[
        terms, index[:, self.group_a], index[:, self.group_b]].sum(1)
    return float(out[0]) if widths.ndim == 1 else out

  def expected(self, probs: jax.Array) -> jax.Array:
    """Exact E[value] when group g has w bins with probability probs[g, w -
    m], independently across groups; differentiable in probs. A table of two
    groups is p_a·T·p_b; of one group (EfficientNet's SE dims) Σ_w p(w)·
    T[w, w], not a product of means."""
    point = jnp.zeros((1, probs.shape[1]), probs.dtype).at[0, 0].set(1)
    probs = jnp.concatenate([probs, point])  # 'none': always the first
    tables = jnp.asarray(self.tables, probs.dtype)
    p_a, p_b = probs[self.group_a], probs[self.group_b]
    cross = jnp.einsum('ti,tij,tj->t', p_a, tables, p_b)
    diagonal = jnp.einsum('ti,tii->t', p_a, tables)
    same = jnp.asarray(self.group_a == self.group_b)
    return self.constant + jnp.sum(jnp.where(same, diagonal, cross))

  def uniform_within(self, budget: float) -> np.ndarray:
    """Uniform scaling: the largest all-b width vector whose value is within
    `budget` (an error if even all-m exceeds it)."""
    for b in range(self.space.bins, self.space.min_bins - 1, -1):
      c = np.full(self.space.num_groups, b, np.int32)
      if self(c) <= budget:
        return c
    raise errors.InvalidInput(
        f'a budget of {self.describe(budget)} is below the smallest width '
        f'vector of {self.space.model}')


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
