"""The width search space: groups, channel edges, width vectors and arch JSON.

Numpy only (docs/design.md §2). A *group* is one searchable dimension; a *dim*
is one channel axis that layers refer to. Every group is a dim of the same
name; a model may add *derived* dims (EfficientNet's SE hidden units) that have
their own nominal channels and edge table but take their bins from a group, so
that the left and right paths stay disjoint there too.

Synopsis:

  space = SearchSpace.build('resnet20_cifar', [('stage1', 16), ...])
  c = space.sample(np.random.default_rng(0), 8)      # [8, G] bins
  space.validate_widths(c[0]); space.complement(c)   # B + m - c
  arch = space.arch(c[0], resolution=32, macs=..., params=...)
  write_arch(path, arch); space.widths_from_arch(read_arch(path))
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, Sequence

import numpy as np

from bcnet_jax.run import errors
from bcnet_jax.run import files

ARCH_FORMAT = 2  # 2: the latency fields (LATENCY_FIELDS); 1 still read
# Format 2's fields past format 1's, each None where not measured: the
# measured and predicted latency (ms), the latency budget of a latency
# search, the batch measured at, and uniform scaling at the same budget.
LATENCY_FIELDS = ('latency_ms', 'latency_ms_predicted', 'latency_budget_ms',
                  'latency_batch', 'uniform_widths')
DEFAULT_BINS = 20
DEFAULT_MIN_BINS = 1
SIDES = ('left', 'right')


def _round_half_up(x: float) -> int:
  return int(math.floor(x + 0.5))


def channel_edges(nominal: int, bins: int, min_bins: int,
                  name: str = '?', round_to: int = 1) -> tuple[int, ...]:
  """Edges e[0..B+m] of one dim (docs/design.md §2): width c is e[c] channels.

  Args:
    nominal: N, the dim's channels at full width (e[B] = N).
    bins: B.
    min_bins: m, the smallest width.
    name: the dim's name, for error messages.
    round_to: every edge a multiple of gcd(round_to, N) (8 for GPU tensor
      cores, 128 for TPU lanes; the gcd keeps e[B] = N and so the mirror).

  Returns:
    The B + m + 1 edges; the last is the supernet channels C' = N + e[m].

  Raises:
    ValueError: if the arguments are out of range or no edges meet the
      requirements (e.g. N = 4 with m = 7).
  """
  if not (isinstance(nominal, (int, np.integer)) and nominal >= 1):
    raise errors.InvalidInput(
        f'group {name!r}: nominal channels must be an integer '
        f'>= 1, got {nominal!r}')
  _check_bins(bins, min_bins)
  if not isinstance(round_to, (int, np.integer)) or round_to < 1:
    raise errors.InvalidInput(
        f'round_to must be an integer >= 1, got {round_to!r}')
  r = math.gcd(int(round_to), int(nominal))

  def rounded(x: float) -> int:
    return r * _round_half_up(x / r)

  top = bins + min_bins
  e_m = max(r, rounded(min_bins * nominal / bins))
  total = nominal + e_m
  if top % 2 == 0 and (total // r) % 2 == 1:  # a whole, rounded middle
    total += r
    e_m += r
  # Rounded, an edge below the middle could pass it: held at the last
  # multiple before (unrounded edges are left to _check_edges, as ever).
  half = r * (total // (2 * r)) if r > 1 else total
  e = [0] * (top + 1)
  for k in range(1, min_bins):
    e[k] = min(e_m, rounded(k * nominal / bins))
  for k in range(min_bins, top // 2 + 1):
    e[k] = min(half, max(e_m, rounded(k * nominal / bins)))
  e[min_bins] = e_m
  if top % 2 == 0:
    e[top // 2] = total // 2
  for k in range(0, (top + 1) // 2):
    e[top - k] = total - e[k]
  edges = tuple(int(v) for v in e)
  _check_edges(edges, nominal, bins, min_bins, name)
  return edges


def _check_bins(bins: int, min_bins: int) -> None:
  if not isinstance(bins, (int, np.integer)) or bins < 1:
    raise errors.InvalidInput(f'bins must be an integer >= 1, got {bins!r}')
  if not isinstance(min_bins, (int, np.integer)) or not 1 <= min_bins <= bins:
    raise errors.InvalidInput(
        f'min_bins must be an integer in [1, bins={bins}], '
        f'got {min_bins!r}')


def _check_edges(e: Sequence[int], nominal: int, bins: int, min_bins: int,
                 name: str) -> None:
  top = bins + min_bins
  problems = []
  if e[0] != 0:
    problems.append('e[0] != 0')
  if e[bins] != nominal:
    problems.append(f'e[B] = {e[bins]} != nominal {nominal}')
  if e[min_bins] < 1:
    problems.append('e[m] < 1')
  if any(b < a for a, b in zip(e, e[1:])):
    problems.append('edges decrease')
  if any(e[top - k] != e[top] - e[k] for k in range(top + 1)):
    problems.append("mirror e[B'-k] = C' - e[k] broken")
  if problems:
    raise errors.InvalidInput(
        f'group {name!r}: no channel edges for nominal {nominal} channels '
        f'with bins={bins}, min_bins={min_bins} ({"; ".join(problems)}); '
        'use a smaller min_bins or fewer bins')


@dataclasses.dataclass(frozen=True)
class Dim:
  """One channel axis: its bins come from `group`, channels from `edges`."""
  name: str
  group: int
  nominal: int
  edges: tuple[int, ...]

  @property
  def supernet_channels(self) -> int:
    return self.edges[-1]


@dataclasses.dataclass(frozen=True)
class SearchSpace:
  """The searchable groups of one model at one granularity (B, m)."""
  model: str
  bins: int
  min_bins: int
  dims: tuple[Dim, ...]  # the groups first, in order, then derived dims
  num_groups: int
  round_to: int = 1  # channel counts rounded to multiples (channel_edges)

  @classmethod
  def build(cls, model: str, groups: Sequence[tuple[str, int]],
            derived: Sequence[tuple[str, str, int]] = (),
            bins: int = DEFAULT_BINS,
            min_bins: int = DEFAULT_MIN_BINS,
            round_to: int = 1) -> SearchSpace:
    """Builds a space from (name, nominal) groups and (name, group, nominal).

    Raises:
      ValueError: for bad bins/min_bins, duplicate names or unbuildable edges.
    """
    _check_bins(bins, min_bins)
    index = {}
    dims = []
    for name, nominal in groups:
      index[name] = len(dims)
      dims.append(Dim(name, len(dims), nominal,
                      channel_edges(nominal, bins, min_bins, name, round_to)))
    for name, group, nominal in derived:
      if group not in index:
        raise ValueError(f'derived dim {name!r} refers to unknown group '
                         f'{group!r}')
      dims.append(Dim(name, index[group], nominal,
                      channel_edges(nominal, bins, min_bins, name, round_to)))
    names = [d.name for d in dims]
    if len(set(names)) != len(names):
      raise ValueError(f'{model}: duplicate dim names in {names}')
    return cls(model, bins, min_bins, tuple(dims), len(groups), round_to)

  # ---- structure -------------------------------------------------------------

  @property
  def groups(self) -> tuple[str, ...]:
    return tuple(d.name for d in self.dims[:self.num_groups])

  def dim(self, name: str) -> Dim:
    for d in self.dims:
      if d.name == name:
        return d
    raise KeyError(f'{self.model} has no dim {name!r}')

  @property
  def supernet_bins(self) -> int:
    return self.bins + self.min_bins

  def edge_table(self) -> np.ndarray:
    """[D, B'+1] int64: row d holds the edges of dim d."""
    return np.array([d.edges for d in self.dims], np.int64)

  # ---- width vectors ---------------------------------------------------------

  def full(self) -> np.ndarray:
    return np.full(self.num_groups, self.bins, np.int32)

  def smallest(self) -> np.ndarray:
    return np.full(self.num_groups, self.min_bins, np.int32)

  def sample(self, rng: np.random.Generator, n: int | None = None
             ) -> np.ndarray:
    """Uniform width vectors: one ([G]) or n of them ([n, G]), int32."""
    shape = (self.num_groups,) if n is None else (n, self.num_groups)
    return rng.integers(self.min_bins, self.bins + 1, shape).astype(np.int32)

  def complement(self, widths: Any) -> Any:
    """c̄ = B + m - c: L(c) ⊔ R(c̄) = R(c) ⊔ L(c̄) covers every channel.

    The one formula for host width vectors (validated here) and traced ones
    inside a step (taken as they are).
    """
    if isinstance(widths, (np.ndarray, np.generic, list, tuple, int)):
      widths = self.validate_widths(widths)
    return self.supernet_bins - widths

  def validate_widths(self, widths: Any) -> np.ndarray:
    """Returns widths as int32 [..., G] or raises a ValueError that says why."""
    arr = np.asarray(widths)
    if arr.ndim == 0 or arr.shape[-1] != self.num_groups:
      raise errors.InvalidInput(
          f'{self.model}: a width vector has {self.num_groups} entries (one '
          f'per group: {", ".join(self.groups)}), got shape {arr.shape}')
    if arr.dtype.kind not in 'iu':
      if arr.dtype.kind != 'f' or not np.all(np.mod(arr, 1) == 0):
        raise errors.InvalidInput(
            f'{self.model}: widths must be integer bins in '
            f'[{self.min_bins}, {self.bins}], got {arr.tolist()}')
    flat = arr.reshape(-1, self.num_groups)
    bad = np.argwhere((flat < self.min_bins) | (flat > self.bins))
    if bad.size:
      row, g = bad[0]
      value = flat[row, g]
      raise errors.InvalidInput(
          f'{self.model}: group {self.groups[g]!r} has width {value}, allowed '
          f'range is [{self.min_bins}, {self.bins}] bins')
    return arr.astype(np.int32)

  def channels(self, widths: Any) -> dict[str, int]:
    """Channels of every dim (groups and derived) for one width vector."""
    c = self.validate_widths(widths)
    if c.ndim != 1:
      raise ValueError(f'expected one width vector, got shape {c.shape}')
    return {d.name: d.edges[int(c[d.group])] for d in self.dims}

  def channel_indices(self, widths: Any, side: str) -> dict[str, np.ndarray]:
    """Per dim, the supernet channels of path L(c) (side 'left') or R(c)."""
    if side not in SIDES:
      raise ValueError(f'side must be one of {SIDES}, got {side!r}')
    chans = self.channels(widths)
    out = {}
    for d in self.dims:
      start = 0 if side == 'left' else d.supernet_channels - chans[d.name]
      out[d.name] = np.arange(start, start + chans[d.name])
    return out

  def channel_matrix(self, widths: Any) -> np.ndarray:
    """[K, D] int64 channels of every dim for a batch of width vectors."""
    c = self.validate_widths(widths).reshape(-1, self.num_groups)
    groups = np.array([d.group for d in self.dims])
    return self.edge_table()[np.arange(len(self.dims)), c[:, groups]]

  def channel_key(self, widths: Any) -> bytes:
    """What makes two width vectors the same network: their channels (with
    N < B several bin values give the same channels)."""
    return self.channel_matrix(widths).tobytes()

  def parse_widths(self, text: str) -> np.ndarray:
    """Parses '4,3,2,...' (bins per group) from the command line."""
    try:
      values = [int(v) for v in text.replace(' ', '').split(',') if v]
    except ValueError:
      raise errors.InvalidInput(
          f'{self.model}: widths must be comma-separated integer '
          f'bins in [{self.min_bins}, {self.bins}], got {text!r}') from None
    return self.validate_widths(values)

  # ---- arch JSON -------------------------------------------------------------

  def _check_latency_fields(self, arch: dict[str, Any]) -> None:
    """Format 2's latency fields: numbers or null, and uniform_widths a
    width vector by group or null."""
    for field in LATENCY_FIELDS[:-1]:
      if arch[field] is not None and not _is_number(arch[field]):
        raise errors.InvalidInput(
            f'arch {field!r} must be a number or null, got {arch[field]!r}')
    uniform = arch['uniform_widths']
    if uniform is None:
      return
    if not isinstance(uniform, dict) or set(uniform) != set(self.groups):
      raise errors.InvalidInput(
          f'arch \'uniform_widths\' must be null or an object with the '
          f'groups of {self.model} ({", ".join(self.groups)}) -> bins')
    self.validate_widths([uniform[g] for g in self.groups])

  def arch(self, widths: Any, *, resolution: int, macs: int, params: int,
           macs_budget: int | None = None, score: float | None = None,
           supernet_step: int | None = None, **latency: Any
           ) -> dict[str, Any]:
    """The arch JSON object of docs/design.md §2 for one width vector;
    `latency`: LATENCY_FIELDS (unset ones None)."""
    unknown = set(latency) - set(LATENCY_FIELDS)
    if unknown:
      raise TypeError(f'arch() got unknown fields {sorted(unknown)}')
    c = self.validate_widths(widths)
    chans = self.channels(c)
    uniform = latency.get('uniform_widths')
    return {
        'format': ARCH_FORMAT, 'model': self.model, 'bins': self.bins,
        'min_bins': self.min_bins, 'resolution': int(resolution),
        'widths': {g: int(w) for g, w in zip(self.groups, c)},
        'channels': {g: chans[g] for g in self.groups},
        'macs': int(macs), 'params': int(params),
        'macs_budget': None if macs_budget is None else int(macs_budget),
        'score': None if score is None else float(score),
        'supernet_step': None if supernet_step is None else int(supernet_step),
        **{k: latency.get(k) for k in LATENCY_FIELDS},
        'uniform_widths': None if uniform is None else {
            g: int(w) for g, w in zip(self.groups,
                                      self.validate_widths(uniform))},
    }

  def widths_from_arch(self, arch: dict[str, Any]) -> np.ndarray:
    """Validates an arch object against this space; returns its widths.

    Raises:
      ValueError: for another format, model or granularity, unknown or
        missing groups, or bins and channels that disagree.
    """
    if not isinstance(arch, dict):
      raise errors.InvalidInput(
          f'an arch must be a JSON object, got {type(arch)}')
    if arch.get('format') not in (1, ARCH_FORMAT):
      raise errors.InvalidInput(
          f'arch format {arch.get("format")!r} is not supported '
          f'(expected 1 or {ARCH_FORMAT})')
    keys = {'format', 'model', 'bins', 'min_bins', 'resolution', 'widths',
            'channels', 'macs', 'params', 'macs_budget', 'score',
            'supernet_step'}
    if arch['format'] == ARCH_FORMAT:
      keys |= set(LATENCY_FIELDS)
    missing, unknown = keys - set(arch), set(arch) - keys
    if missing or unknown:
      raise errors.InvalidInput(
          f'arch fields: missing {sorted(missing)}, unknown '
          f'{sorted(unknown)}; expected exactly {sorted(keys)} (format '
          f'{arch["format"]})')
    if arch['model'] != self.model:
      raise errors.InvalidInput(f'arch is for model {arch["model"]!r}, not '
                                f'{self.model!r}')
    if (arch['bins'], arch['min_bins']) != (self.bins, self.min_bins):
      raise errors.InvalidInput(
          f'arch has bins={arch["bins"]}, min_bins={arch["min_bins"]}; this '
          f'space has bins={self.bins}, min_bins={self.min_bins}')
    for field in ('widths', 'channels'):
      got = arch[field]
      if not isinstance(got, dict):
        raise errors.InvalidInput(
            f'arch {field!r} must be an object group -> int')
      missing = [g for g in self.groups if g not in got]
      unknown = [g for g in got if g not in self.groups]
      if missing or unknown:
        raise errors.InvalidInput(
            f'arch {field!r} for {self.model}: missing groups '
            f'{missing}, unknown groups {unknown}')
    if arch['format'] == ARCH_FORMAT:
      self._check_latency_fields(arch)
    c = self.validate_widths([arch['widths'][g] for g in self.groups])
    chans = self.channels(c)
    wrong = {g: (arch['channels'][g], chans[g]) for g in self.groups
             if arch['channels'][g] != chans[g]}
    if wrong:
      detail = ', '.join(f'{g}: {a} channels but its bins give {b}'
                         for g, (a, b) in wrong.items())
      raise errors.InvalidInput(f'arch widths and channels disagree: {detail}')
    return c


def _is_number(value: Any) -> bool:
  return isinstance(value, (int, float)) and not isinstance(value, bool)


def read_arch(path: str) -> dict[str, Any]:
  """Reads an arch JSON file (validate it with SearchSpace.widths_from_arch)."""
  return files.read_json(path)


def write_arch(path: str, arch: dict[str, Any]) -> None:
  """Writes an arch JSON file atomically (a crash never leaves half a file)."""
  files.write_json_atomic(path, arch)
