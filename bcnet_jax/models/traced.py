"""Any Flax CNN as a BCNet supernet: its groups found by tracing.

  from bcnet_jax import models
  model = models.from_flax(MyCNN(num_classes=10), (32, 32, 3))
  model.space.groups                       # found by tracing
  variables = model.init(key, model.dummy_input(1))      # supernet: C'
  logits, _ = model.apply(variables, x, paths.left(model.space, c),
                          train=False)     # [1, B, K]: L(c)
  compact = model.clone(widths=c)          # the real, narrower network
  compact.apply(slicing.slice_params(model, variables, c, 'left'), x,
                train=False)               # == logits[0]

The model keeps the user's variable tree (the same paths; narrower or, in a
supernet, wider arrays), so compact variables load into the user's module
built at those widths. How it works (docs/design.md §11): tracing.py makes
the jaxprs, channels.py finds the groups, interpret.py runs them at other
widths or with masks.
"""

from __future__ import annotations

import collections
import dataclasses
import itertools
from typing import Any, Sequence

import jax
import jax.extend.core as jcore
import jax.numpy as jnp
import numpy as np

from bcnet_jax.models import channels
from bcnet_jax.models import interpret
from bcnet_jax.models import tracing
from bcnet_jax.run import errors
from bcnet_jax.space import paths as paths_lib
from bcnet_jax.space import search_space as space_lib

# The batch the structure is read at (batch 1 links no batch axis).
CANONICAL_BATCH = 2
BATCH_MOMENTS = 'batch_moments'  # = layers.BATCH_MOMENTS
Pieces = interpret.Pieces


@dataclasses.dataclass(frozen=True, eq=False)
class Analysed:
  """One program with its analysis and which of its classes are groups."""
  program: tracing.Program | None  # None: the analysis alone
  analysis: channels.Analysis
  group_of: dict[int, int]  # root -> group index

  def pieces(self, node: int) -> Pieces:
    a = self.analysis
    return tuple((self.group_of.get(r), a.size[r]) for r in a.pieces(node))


class Structure:
  """The groups of one user module at one input shape, and its programs."""

  def __init__(self, module: Any, image_shape: tuple[int, int, int], *,
               train_arg: str | None = None, fixed: Sequence[str] = ()):
    self.tracer = tracing.Tracer(module, image_shape, train_arg)
    self.fixed = tuple(fixed)
    leaves = self.tracer.leaves
    unknown = [f for f in self.fixed
               if not any(_under(leaf, f) for leaf in leaves)]
    if unknown:
      raise errors.InvalidInput(
          f'model.fixed names {unknown}, which hold no variable; variable '
          f'paths: {sorted({"/".join(l.path[:-1]) for l in leaves})}')
    self._analyses, self._programs = {}, {}
    self._fixed_leaves = frozenset(
        i for i, leaf in enumerate(leaves)
        if any(_under(leaf, f) for f in self.fixed))
    analyses = [self._analysis(CANONICAL_BATCH, mode)
                for mode in ('train', 'eval')]
    unused = [leaves[i].name for i in analyses[0].unused_leaves
              if leaves[i].collection == 'params']
    if unused:
      raise errors.InvalidInput(
          f'{type(module).__name__}: parameters {unused} take no part in '
          'its training pass; remove them (a searched network has no use '
          'for them, and their channels would follow no group)')
    families = [self._group_sets(a) for a in analyses]
    common = [s for s in families[0] if s in families[1]]
    train = analyses[0]
    order = _network_order(train, common)
    self.members = [common[i] for i in order]  # frozensets of (leaf, axis)
    self.names = _names(train, self.members, leaves)
    self.nominal = [train.size[train.find(train.leaf_nodes[leaf][axis])]
                    for leaf, axis in (min(s) for s in self.members)]
    canonical = self._with_groups(train)
    # Dims: the groups, then squeeze-excite hidden units (derived dims).
    self.parent = _squeeze_excite(canonical)
    dims = ([g for g in range(len(self.members)) if g not in self.parent] +
            [g for g in range(len(self.members)) if g in self.parent])
    self.members = [self.members[g] for g in dims]
    self.names = [self.names[g] for g in dims]
    self.nominal = [self.nominal[g] for g in dims]
    self.parent = {dims.index(h): dims.index(g)
                   for h, g in self.parent.items()}
    self.num_groups = len(dims) - len(self.parent)
    canonical = self._with_groups(train)
    self.leaf_pieces = [
        tuple(canonical.pieces(n) for n in nodes)
        for nodes in train.leaf_nodes]
    self.contractions = [(c, canonical.pieces(c.in_node),
                          canonical.pieces(c.out_node)
                          if c.out_node is not None else ())
                         for c in train.contractions]
    for a in analyses:
      self._check(self._with_groups(a))
    self._stats_factor = None
    logits = self.tracer.program(CANONICAL_BATCH, 'eval').jaxpr.out_avals[0]
    self.num_classes = int(logits.shape[-1])

  # ---- analysis -------------------------------------------------------------

  def _analysis(self, batch: int, mode: str) -> channels.Analysis:
    if (batch, mode) not in self._analyses:
      program = self.tracer.program(batch, mode)
      self._analyses[batch, mode] = channels.Analysis(
          program.jaxpr, len(self.tracer.leaves), self._fixed_leaves)
    return self._analyses[batch, mode]

  def _group_sets(self, a: channels.Analysis) -> list[frozenset]:
    by_root = collections.defaultdict(set)
    for leaf, axis, root in a.leaf_axes():
      if a.is_group(root):
        by_root[root].add((leaf, axis))
    return [frozenset(s) for s in by_root.values()]

  def _with_groups(self, a: channels.Analysis,
                   program: tracing.Program | None = None) -> Analysed:
    group_of = {}
    for g, members in enumerate(self.members):
      roots = {a.find(a.leaf_nodes[leaf][axis]) for leaf, axis in members}
      if len(roots) != 1 or not a.is_group(next(iter(roots))):
        raise errors.InvalidInput(
            f'group {self.names[g]!r} links differently at another batch '
            'size; declare it fixed (model.fixed)')
      group_of[roots.pop()] = g
    return Analysed(program, a, group_of)

  def _check(self, analysed: Analysed) -> None:
    """An unknown primitive touching a group's channels is an error."""
    for name, module, shapes, nodes in analysed.analysis.unknown:
      hit = sorted({g for n in nodes for g, _ in analysed.pieces(n)
                    if g is not None})
      if hit:
        groups = ', '.join(repr(self.names[g]) for g in hit)
        path = next((self.names[g] for g in hit
                     if not self.names[g].endswith('_in')), self.names[hit[0]])
        raise errors.InvalidInput(
            f'{name} in {module} (shapes {shapes}) touches the channels of '
            f'group {groups}, and the channel analysis does not know this '
            'operation. Keep those channels as they are: '
            f'--config.model.fixed={path} (models.from_flax(..., '
            f"fixed=['{path}'])), which fixes every group next to it; or "
            'write the operation with primitives the analysis knows '
            '(README "Your own model")')

  def program(self, batch: int, mode: str) -> Analysed:
    """The analysed program of one mode (tracing.MODES) at one batch."""
    if (batch, mode) not in self._programs:
      analysed = self._with_groups(self._analysis(batch, mode),
                                   self.tracer.program(batch, mode))
      self._check(analysed)
      self._programs[batch, mode] = analysed
    return self._programs[batch, mode]

  # ---- the search space and costs -------------------------------------------

  def space(self, model: str, bins: int | None = None,
            min_bins: int | None = None, round_to: int = 1
            ) -> space_lib.SearchSpace:
    g = self.num_groups
    return space_lib.SearchSpace.build(
        model, list(zip(self.names[:g], self.nominal[:g])),
        [(self.names[h], self.names[self.parent[h]], self.nominal[h])
         for h in range(g, len(self.names))],
        bins=space_lib.DEFAULT_BINS if bins is None else bins,
        min_bins=space_lib.DEFAULT_MIN_BINS if min_bins is None else min_bins,
        round_to=round_to)

  def cost_terms(self, one: int) -> tuple[list, list]:
    """(macs, params) terms (coef, a, b): Σ coef·channels(a)·channels(b),
    with `one` standing for the constant 1."""
    macs = collections.Counter()
    for c, ins, outs in self.contractions:
      if c.kind == 'depthwise':
        ins = ((None, 1),)
      elif c.kind == 'grouped':
        ins = tuple((g, n // c.groups) for g, n in ins)
      for (ga, na), (gb, nb) in itertools.product(ins, outs or ((None, 1),)):
        macs[_term(c.kernel_size * c.out_pixels, ga, na, gb, nb, one)] += 1
    params = collections.Counter()
    for leaf, pieces in zip(self.tracer.leaves, self.leaf_pieces):
      if leaf.collection != 'params':
        continue
      for combo in itertools.product(*pieces):
        groups = [g for g, _ in combo if g is not None]
        if len(groups) > 2:
          raise errors.InvalidInput(
              f'variable {leaf.name} has {len(groups)} searchable axes; '
              'costs are defined for at most two')
        coef = int(np.prod([n for g, n in combo if g is None]))
        a, b = (groups + [one, one])[:2]
        params[(coef, a, b)] += 1
    return ([(coef * k, a, b) for (coef, a, b), k in macs.items()],
            [(coef * k, a, b) for (coef, a, b), k in params.items()])

  # ---- indices along leaf axes ----------------------------------------------

  def leaf_index(self, leaf: int, axis: int,
                 picks: dict[int, np.ndarray], base: dict[int, int]
                 ) -> np.ndarray:
    """Positions along a leaf's axis: per piece, `picks[g]` (positions in
    the group's `base[g]` channels), offset by the pieces before it."""
    out, offset = [], 0
    for g, n in self.leaf_pieces[leaf][axis]:
      out.append(offset + (picks[g] if g is not None else np.arange(n)))
      offset += base[g] if g is not None else n
    return np.concatenate(out)

  def take(self, leaf: int, value: jax.Array, picks, base) -> jax.Array:
    for axis, pieces in enumerate(self.leaf_pieces[leaf]):
      if any(g is not None for g, _ in pieces):
        value = jnp.take(value, self.leaf_index(leaf, axis, picks, base),
                         axis=axis)
    return value

  # ---- BatchNorm's running statistics --------------------------------------

  def stats_factor(self) -> dict[int, float]:
    """Per running-statistics leaf, 1 - momentum: the train program writes
    m·old + (1 - m)·batch, so with old = 0 it gives the batch's moments
    times this (BN recalibration). Measured once on a probe batch."""
    if self._stats_factor is None:
      with jax.ensure_compile_time_eval():
        self._stats_factor = self._measure_stats_factor()
    return self._stats_factor

  def _measure_stats_factor(self) -> dict[int, float]:
    program = self.program(CANONICAL_BATCH, 'moments')
    leaves = self.tracer.leaves
    base = jax.tree_util.tree_leaves(self.tracer.init(jax.random.key(0)))
    image = jax.random.normal(jax.random.key(1), self.tracer.image(
        CANONICAL_BATCH).shape)
    run = jax.jit(jcore.jaxpr_as_fun(program.program.jaxpr))
    outs = []
    for old in (0.0, 1.0, 2.0):
      args = [jnp.full(leaf.shape, old, leaf.dtype)
              if leaf.collection == tracing.STATS else value
              for leaf, value in zip(leaves, base)]
      outs.append(run(*args, image, jax.random.key(0))[1:])
    factor = {}
    for i, leaf in enumerate(program.program.stats):
      o0, o1, o2 = (np.asarray(o[i]) for o in outs)
      m = o1 - o0
      if (not np.allclose(o2 - o1, m, atol=1e-5) or
          not np.allclose(m, m.flat[0], atol=1e-6) or
          not 0 <= m.flat[0] < 1):
        raise errors.InvalidInput(
            f'batch statistic {leaves[leaf].name} is not a running average '
            '(m·old + (1 - m)·batch with one momentum m); BN '
            'recalibration cannot read the batch\'s moments from it')
      factor[leaf] = float(1 - m.flat[0])
    return factor


def _under(leaf: tracing.Leaf, prefix: str) -> bool:
  name = '/'.join(leaf.path)
  return name == prefix or name.startswith(prefix.rstrip('/') + '/')


def _term(coef, ga, na, gb, nb, one):
  if ga is None:
    coef, ga = coef * na, one
  if gb is None:
    coef, gb = coef * nb, one
  return (coef, ga, gb)


def _squeeze_excite(a: Analysed) -> dict[int, int]:
  """{hidden group: the group its bins come from} for squeeze-excite units.

  A group H is an SE's hidden units when every layer writing it reads one
  group G pooled to a single pixel and every layer reading it writes G
  (the gate). As in EfficientNet, its width follows the block's input: the
  group G's one 1x1 expansion reads, or G itself where nothing expands it.
  """
  writers, readers = collections.defaultdict(list), collections.defaultdict(
      list)
  for c in a.analysis.contractions:
    ins = a.pieces(c.in_node)
    outs = a.pieces(c.out_node) if c.out_node is not None else ()
    for g, _ in outs:
      if g is not None:
        writers[g].append((c, ins))
    for g, _ in ins:
      if g is not None:
        readers[g].append((c, outs))
  derived = {}
  for h in writers:
    sources = {ins for c, ins in writers[h]}
    targets = {outs for c, outs in readers.get(h, ())}
    if (len(sources) != 1 or sources != targets or
        len(next(iter(sources))) != 1 or
        any(c.out_pixels != 1 for c, _ in writers[h] + readers.get(h, []))):
      continue
    (g, _), = next(iter(sources))
    if g is None or g == h:
      continue
    expansions = [ins for c, ins in writers[g]
                  if c.kind == 'conv' and c.kernel_size == 1 and
                  len(ins) == 1 and ins[0][0] not in (None, h)]
    derived[h] = expansions[0][0][0] if len(expansions) == 1 else g
  return {h: g for h, g in derived.items() if g not in derived}


def _network_order(a: channels.Analysis, sets: list[frozenset]) -> list[int]:
  """Groups in the order a contraction first writes (or reads) them."""
  root_of = [a.find(a.leaf_nodes[leaf][axis]) for leaf, axis in
             (min(s) for s in sets)]
  first = {}
  for k, c in enumerate(a.contractions):
    for node in (c.out_node, c.in_node):
      if node is None:
        continue
      for r in a.pieces(node):
        first.setdefault(r, k)
  return sorted(range(len(sets)),
                key=lambda i: (first.get(root_of[i], len(first)), i))


def _names(a: channels.Analysis, sets, leaves) -> list[str]:
  """A group is named after the layer that first writes it: its kernel's
  module path (else the writing equation's), or its first reader's + _in."""
  kernel_of = {nodes: '/'.join(leaves[i].path[:-1])
               for i, nodes in enumerate(a.leaf_nodes)}
  names = []
  for s in sets:
    roots = {a.find(a.leaf_nodes[leaf][axis]) for leaf, axis in s}
    writer = next((kernel_of.get(c.weight_nodes) or c.module
                   for c in a.contractions
                   if c.out_node is not None and a.find(c.out_node) in roots),
                  None)
    if not writer:
      leaf, _ = min(s)
      writer = '/'.join(leaves[leaf].path[:-1]) + '_in'
    name, k = writer, 2
    while name in names:
      name, k = f'{writer}#{k}', k + 1
    names.append(name)
  return names


@dataclasses.dataclass(frozen=True)
class TracedModel:
  """A traced user module: the supernet (widths None) or a compact model.

  The interface of layers.WidthModel (init, apply, clone, dummy_input,
  space, widths, num_classes, in_channels, resolution): every stage takes
  either. Supernet paths are single (left/right): no fused pair pass.
  """
  structure: Structure = dataclasses.field(compare=True, hash=True)
  space: space_lib.SearchSpace
  widths: tuple[int, ...] | None = None
  num_classes: int = 10
  in_channels: int = 3
  resolution: int = 32

  supports_pair = False

  def clone(self, *, widths=None, parent=None) -> TracedModel:
    del parent
    return dataclasses.replace(self, widths=widths)

  def dummy_input(self, batch: int = 1) -> jax.Array:
    return jnp.zeros((batch, self.resolution, self.resolution,
                      self.in_channels), jnp.float32)

  # ---- sizes ----------------------------------------------------------------

  def _nominal(self) -> dict[int, int]:
    return dict(enumerate(self.structure.nominal))

  def _supernet(self) -> dict[int, int]:
    return {g: d.supernet_channels for g, d in enumerate(self.space.dims)}

  def _compact(self) -> dict[int, int]:
    chans = self.space.channels(self.widths)
    return {g: chans[d.name] for g, d in enumerate(self.space.dims)}

  # ---- variables ------------------------------------------------------------

  def _leaves(self, variables) -> list[jax.Array]:
    try:
      return [_lookup(variables, leaf) for leaf in self.structure.tracer.leaves]
    except KeyError as e:
      raise errors.InvalidInput(
          f'variables lack {e.args[0]}: not this model\'s') from None

  def _tree(self, leaves: dict[int, jax.Array]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for i, value in leaves.items():
      leaf = self.structure.tracer.leaves[i]
      node = out.setdefault(leaf.collection, {})
      for key in leaf.path[:-1]:
        node = node.setdefault(key, {})
      node[leaf.path[-1]] = value
    return out

  def init(self, rngs: Any, x: jax.Array | None = None, paths: Any = None,
           *, train: bool = False) -> dict[str, Any]:
    """Variables at the supernet's channels (each leaf's own initializer
    at the module's widths, tiled: a supernet channel past N takes a second
    draw's) or a compact model's (the first channels of one draw)."""
    del x, paths, train
    key = rngs['params'] if isinstance(rngs, dict) else rngs
    tracer = self.structure.tracer
    nominal = self._nominal()
    if self.widths is not None:  # NNX: draw 1, the first to follow the key
      picks = {g: np.arange(n) for g, n in self._compact().items()}
      draw = self._draws(key, 2 if tracer.permuted else 1)[-1]
      return self._tree({i: self.structure.take(i, v, picks, nominal)
                         for i, v in enumerate(draw)})
    draws = self._draws(key, 4)
    supernet = self._supernet()
    picks = {g: np.concatenate([np.arange(n), np.arange(supernet[g] - n)])
             for g, n in nominal.items()}
    out = {}
    for i, value in enumerate(draws[0]):
      choice, gathers = 0, []
      for axis, pieces in enumerate(self.structure.leaf_pieces[i]):
        if all(g is None for g, _ in pieces):
          continue
        extra = np.concatenate([
            np.arange(supernet[g]) >= n if g is not None
            else np.zeros(n, bool) for g, n in pieces]).astype(np.int32)
        choice = choice + interpret.along(extra << len(gathers), value.ndim,
                                          axis)
        gathers.append((axis, self.structure.leaf_index(
            i, axis, picks, nominal)))
      if len(gathers) > 2:
        raise errors.InvalidInput(
            f'variable {tracer.leaves[i].name} has {len(gathers)} '
            'searchable axes; at most two are supported')
      candidates = []
      for draw in draws[:2 ** len(gathers)]:
        v = draw[i]
        for axis, index in gathers:
          v = jnp.take(v, index, axis=axis)
        candidates.append(v)
      out[i] = (candidates[0] if not gathers else jnp.choose(
          np.broadcast_to(choice, candidates[0].shape), candidates,
          mode='clip'))
    return self._tree(out)

  def _draws(self, key: jax.Array, n: int) -> list[list[jax.Array]]:
    """n draws of the module's variables at its own widths (flat)."""
    tracer = self.structure.tracer
    first = jax.tree_util.tree_leaves(tracer.init(jax.random.fold_in(key, 0)))
    return [first] + [
        self._permuted(first, jax.random.fold_in(key, k)) if tracer.permuted
        else jax.tree_util.tree_leaves(tracer.init(jax.random.fold_in(key, k)))
        for k in range(1, n)]

  def _permuted(self, leaves: list[jax.Array], key: jax.Array
                ) -> list[jax.Array]:
    """Another draw of `leaves`: each group's channels permuted, the same
    permutation wherever the group appears (the initializer's distribution
    is kept; used where the module cannot be initialized again)."""
    nominal = self._nominal()
    perms = {g: np.asarray(jax.random.permutation(jax.random.fold_in(key, g),
                                                   n))
             for g, n in nominal.items()}
    return [self.structure.take(i, v, perms, nominal)
            for i, v in enumerate(leaves)]

  # ---- apply ----------------------------------------------------------------

  def apply(self, variables, x: jax.Array, paths: Any = None, *,
            train: bool, mutable: Any = False, rngs: Any = None,
            **unused: Any):
    """(logits, {}) or, with `mutable`, ((logits, {}), collections):
    batch_stats in train mode, batch_moments for BN recalibration."""
    if unused:
      raise TypeError(f'unexpected arguments {sorted(unused)}')
    mutable = [mutable] if isinstance(mutable, str) else list(mutable or [])
    moments = BATCH_MOMENTS in mutable
    mode = 'moments' if moments else 'train' if train else 'eval'
    key = (rngs or {}).get('dropout') if train else None
    key = jax.random.key(0) if key is None else key
    x = x.astype(jnp.float32)  # as traced: the module keeps its own dtypes
    if not isinstance(x.shape[0], int):  # a symbolic batch (jax.export)
      return self._per_example(variables, x, paths, mode != 'eval', mutable)
    analysed = self.structure.program(int(x.shape[0]), mode)
    leaves = self._leaves(variables)
    if (paths is None) == (self.widths is None):
      raise ValueError('a supernet (widths=None) takes paths; a compact '
                       'model takes none')
    if paths is None:
      logits, new = self._compact_run(analysed, leaves, x, key, moments)
    else:
      logits, new = self._path_run(analysed, leaves, x, key, paths, moments)
    if not mutable:
      return logits, {}
    collection = BATCH_MOMENTS if moments else tracing.STATS
    return (logits, {}), {collection: self._tree(new)[tracing.STATS]
                          if new else {}}

  def _per_example(self, variables, x, paths, train, mutable):
    """Inference at a batch size unknown when traced: the batch-1 program
    mapped over the examples (equal to the batch's: no batch statistics)."""
    if train or mutable:
      raise errors.InvalidInput(
          'a traced model trains at a fixed batch size; only inference '
          'takes a symbolic one')
    logits = jax.vmap(lambda image: self.apply(
        variables, image[None], paths, train=False)[0])(x)
    logits = logits[:, 0] if paths is None else jnp.moveaxis(
        logits[:, :, 0], 0, 1)
    return logits, {}

  def _compact_run(self, analysed, leaves, x, key, moments):
    sizes = self._compact()
    stats = analysed.program.stats
    if moments:
      leaves = [jnp.zeros_like(v) if i in stats else v
                for i, v in enumerate(leaves)]
    outs = interpret.Interpreter(analysed.analysis, analysed.pieces,
                                 sizes=sizes).run(analysed.program.jaxpr,
                                                  *leaves, x, key)
    new = dict(zip(stats, outs[1:]))
    if moments:
      factor = self.structure.stats_factor()
      new = {i: v / factor[i] for i, v in new.items()}
    return outs[0], new

  def _path_run(self, analysed, leaves, x, key, paths, moments):
    if not isinstance(paths, paths_lib.Paths) or paths.space != self.space:
      raise ValueError('a supernet takes paths.left/right(space, widths) of '
                       'its own space')
    if not paths.single:
      raise errors.InvalidInput(
          'a traced model runs one path per pass: use '
          "supernet.implementation='reference' (the fused pair pass is for "
          'the built-in models)')
    nominal, supernet = self._nominal(), self._supernet()
    start = {g: 0 if paths.kind == 'left' else supernet[g] - n
             for g, n in nominal.items()}
    window = {g: start[g] + np.arange(n) for g, n in nominal.items()}
    table = jnp.asarray(self.space.edge_table(), jnp.int32)
    widths = jnp.asarray(paths.widths, jnp.int32)
    masks = {}
    for g, n in nominal.items():
      e = table[g, widths[self.space.dims[g].group]]
      i = jnp.arange(n)
      masks[g] = i < e if paths.kind == 'left' else i >= n - e
    cropped = [self.structure.take(i, v, window, supernet)
               for i, v in enumerate(leaves)]
    stats = analysed.program.stats
    args = [jnp.zeros_like(v) if moments and i in stats else v
            for i, v in enumerate(cropped)]
    interpreter = interpret.Interpreter(analysed.analysis, analysed.pieces,
                                        masks=masks)
    outs = interpreter.run(analysed.program.jaxpr, *args, x, key)
    new = {}
    factor = self.structure.stats_factor() if moments else {}
    for i, value in zip(stats, outs[1:]):
      if moments:
        value = value / factor[i]
      for axis, pieces in enumerate(self.structure.leaf_pieces[i]):
        if any(g is not None for g, _ in pieces):
          mask = interpret.axis_mask(pieces, masks)
          value = jnp.where(interpret.along(mask, value.ndim, axis), value,
                            cropped[i])
      new[i] = _put(leaves[i], value, [
          self.structure.leaf_index(i, a, window, supernet)
          for a in range(value.ndim)])
    return outs[0][None], new

  # ---- slicing and costs ----------------------------------------------------

  def slice_variables(self, variables, widths, side: str) -> dict[str, Any]:
    """The variables of path `side` of `widths` in the compact model's
    shapes (the user's tree, narrower arrays)."""
    index = self.space.channel_indices(widths, side)
    picks = {g: index[d.name] for g, d in enumerate(self.space.dims)}
    leaves = self._leaves(variables)
    return self._tree({
        i: self.structure.take(i, np.asarray(v), picks, self._supernet())
        for i, v in enumerate(leaves)})

  def check_compact(self, widths) -> None:
    """The compact network of `widths` computes what the supernet's left
    path does (a probe batch, eval mode), else an error: a compact network
    built wrong is caught before it is trained."""
    widths = tuple(int(w) for w in self.space.validate_widths(widths))
    variables = self.init(jax.random.key(0))
    x = jax.random.normal(jax.random.key(1), self.dummy_input(2).shape)
    path = paths_lib.left(self.space, jnp.asarray(widths))
    supernet = jax.jit(lambda v: self.apply(v, x, path, train=False)[0][0])
    compact = self.clone(widths=widths)
    want = np.asarray(supernet(variables))
    got = np.asarray(jax.jit(lambda v: compact.apply(v, x, train=False)[0])(
        self.slice_variables(variables, widths, 'left')))
    scale = float(np.max(np.abs(want))) or 1.0
    if not np.allclose(got, want, rtol=1e-4, atol=1e-4 * scale):
      raise errors.InvalidInput(
          f'{self.space.model}: the compact network of widths {widths} '
          'computes other logits than the supernet path it is cut from '
          f'(max difference {np.max(np.abs(got - want)):.3g}); declare the '
          'groups around the layer at fault fixed (model.fixed)')

  def cost_terms(self):
    return self.structure.cost_terms(len(self.space.dims))

  def members(self) -> dict[str, list[str]]:
    """Dim -> the parameters its channels run along (a kernel's input
    axis marked '(in)'), by path."""
    s = self.structure
    out = {}
    for name, members in zip(s.names, s.members):
      found = []
      for leaf, axis in sorted(members):
        leaf = s.tracer.leaves[leaf]
        if leaf.collection == 'params':
          inward = len(leaf.shape) > 1 and axis != len(leaf.shape) - 1
          found.append(leaf.name + (' (in)' if inward else ''))
      out[name] = found
    return out


def _lookup(variables, leaf: tracing.Leaf):
  node = variables[leaf.collection]
  for key in leaf.path:
    node = node[key]
  return node


def _put(whole: jax.Array, part: jax.Array, index: list[np.ndarray]
         ) -> jax.Array:
  """`whole` with `part` written at the outer product of `index`."""
  return whole.at[np.ix_(*index)].set(part)


def from_flax(module: Any, image_shape: Sequence[int], *,
              name: str | None = None, num_classes: int | None = None,
              bins: int | None = None, min_bins: int | None = None,
              train_arg: str | None = None, fixed: Sequence[str] = ()
              ) -> TracedModel:
  """The supernet of a user's Flax module (linen or NNX).

  Args:
    module: the CNN at its full widths; called as module(images, <train
      argument>) on NHWC float32 images, it returns logits [batch, classes].
    image_shape: (height, width, channels) of its input.
    name: the model's name in arch files (default: the module's class).
    num_classes: checked against the module's logits if given.
    bins, min_bins: B and m (default 20 and 1).
    train_arg: the call argument that switches training (default: found).
    fixed: module paths whose channels stay as they are.
  """
  h, w, c = (int(v) for v in image_shape)
  if h != w:
    raise errors.InvalidInput(f'square images only, got {h}x{w}')
  structure = Structure(module, (h, w, c), train_arg=train_arg, fixed=fixed)
  classes = structure.num_classes
  if num_classes is not None and num_classes != classes:
    raise errors.InvalidInput(
        f'{type(module).__name__} outputs {classes} classes; the data has '
        f'{num_classes}')
  name = name or type(module).__name__
  return TracedModel(structure, structure.space(name, bins, min_bins),
                     num_classes=classes, in_channels=c, resolution=h)
