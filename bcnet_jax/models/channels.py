"""Coupled channels of a traced model: which axes must keep one width.

Every axis of every jaxpr variable is a node; each equation links the nodes
it ties (an element-wise op its operands' axes, a convolution its input's
channels to its kernel's input axis, a residual add both streams, ...) in a
union-find. A class whose members include a variable axis (a kernel's, a
BatchNorm's) and that nothing fixes is a *group*: one searchable width.

Composite axes: a concatenation along channels is one axis made of segments
(each input's class), a flatten of [.., H, W, C] into one axis is H·W
repeats of C's class (NHWC: the channel varies fastest). Classes that meet
keep the same segments.

Fixed: the image's axes, the logits' axes, a class reduced over (LayerNorm,
softmax over C; the batch and spatial axes BatchNorm and pooling reduce),
a grouped convolution's channels, constants, axes a contraction between two
activations runs over, and what the user declares fixed. Any primitive
the analysis does not know is recorded with the nodes it touches: if one
of them ends up in a group, `check` raises an error naming the primitive,
its module path and shapes, and how to declare the group fixed.

Jaxprs called from several places (`jit`-wrapped activations) are analysed
per call site: their variables are scoped by the path of equation indices
that leads to them, so two call sites never share nodes.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Iterator

import jax.extend.core as jcore
import numpy as np

from bcnet_jax.run import errors

ELEMENTWISE = frozenset('''
abs acos acosh add add_any and asin asinh atan atan2 atanh cbrt ceil clamp
convert_element_type copy copy_p cos cosh div eq erf erf_inv erfc exp exp2
expm1 floor ge gt imag integer_pow is_finite le lgamma digamma log log1p
logistic lt max min mul ne neg nextafter not or pow real reduce_precision
rem round rsqrt select_n sign sin sinh sqrt square stop_gradient sub tan
tanh xor optimization_barrier sharding_constraint mesh_cast bitcast_convert_type
shift_left shift_right_logical shift_right_arithmetic population_count clz
'''.split())
REDUCTIONS = frozenset('''reduce_sum reduce_max reduce_min reduce_prod
reduce_and reduce_or argmax argmin'''.split())
# Calls whose body is analysed inline (per call site). A custom_vjp is not:
# its backward rule is written for the traced widths (an unknown op), nor
# are loops and conditionals (their bodies run more or less than once).
CALLS = frozenset('pjit jit closed_call core_call checkpoint remat '
                  'custom_jvp_call'.split())
# Ops over some axes: those they leave alone are linked, others unknown.
WINDOWED = frozenset('''pad slice reduce_window_sum reduce_window_max
reduce_window_min reduce_window cumsum cumlogsumexp cummax cummin cumprod
rev'''.split())
DECLARED = 'declared fixed'  # the reason of the user's `fixed` paths
# Ops that create arrays from a shape: new, unlinked axes.
CREATORS = frozenset('random_bits random_seed random_wrap random_unwrap '
                     'random_fold_in random_split threefry2x32'.split())


@dataclasses.dataclass(frozen=True)
class Contraction:
  """A conv or dot_general whose weight operand mixes channels."""
  scope: tuple[int, ...]
  index: int  # the equation's index in its jaxpr
  kind: str  # 'conv', 'depthwise', 'grouped' or 'dense'
  groups: int  # feature groups (1 but for grouped convs)
  weight: int  # operand index of the weight (kernel)
  axis: int  # the weight's contracting (input channel) axis
  in_node: int  # node of the activation's contracted axis
  out_node: int | None  # node of the output's channel axis
  kernel_size: int  # product of the kernel's spatial sizes
  out_pixels: int  # product of the output's other per-example sizes
  module: str
  weight_nodes: tuple[int, ...] = ()  # the weight operand's axes


class Analysis:
  """The union-find over all variable axes of one program."""

  def __init__(self, jaxpr: Any, num_leaves: int,
               fixed_leaves: frozenset[int] = frozenset()):
    self.parent: list[int] = []
    self.size: list[int] = []
    self.fixed: set[int] = set()
    self.structure: dict[int, tuple[tuple[int, int], ...]] = {}
    self.nodes: dict[tuple[tuple[int, ...], Any], tuple[int, ...]] = {}
    self.contractions: list[Contraction] = []
    self.unknown: list[tuple[str, str, str, tuple[int, ...]]] = []
    self.reasons: dict[int, str] = {}
    self.activations: set[tuple[tuple[int, ...], Any]] = set()
    self.scope_module: dict[tuple[int, ...], str] = {}
    jaxpr = jaxpr.jaxpr
    self.leaf_nodes = []
    for i, var in enumerate(jaxpr.invars):
      if i < num_leaves:
        nodes = self._new_axes(var)
        if i in fixed_leaves:
          for n in nodes:
            self.fix(n, DECLARED)
        self.leaf_nodes.append(nodes)
      else:  # the image, the dropout key
        nodes = self._new_axes(var, fixed='the model input')
        if i == num_leaves:
          self.activations.add(((), var))
      self.nodes[((), var)] = nodes
    for var in jaxpr.constvars:
      self.nodes[((), var)] = self._new_axes(var, fixed='a constant')
    self._walk(jaxpr, ())
    used = {v for eqn in jaxpr.eqns for v in eqn.invars
            if not isinstance(v, jcore.Literal)} | set(jaxpr.outvars)
    self.unused_leaves = [i for i, var in enumerate(jaxpr.invars[:num_leaves])
                          if var not in used]
    for var in jaxpr.outvars[:1]:
      for n in self.of((), var):
        self.fix(n, 'the logits')
    self._fix_through_unknown()
    # The union-find is final: the roots a group must be among.
    self._leaf_roots = {self.find(n) for nodes in self.leaf_nodes
                        for n in nodes}
    self._contracted_roots = {r for c in self.contractions
                              for n in (c.in_node, c.out_node)
                              if n is not None for r in self.pieces(n)}

  def _fix_through_unknown(self) -> None:
    """An unknown op is safe only where every channel axis it touches is
    fixed: one the user declared fixed fixes the others it touches (and no
    other reason does: an unknown op touching a group is an error)."""
    changed = True
    while changed:
      changed = False
      for name, _, _, nodes in self.unknown:
        roots = {r for n in nodes for r in self.pieces(n)}
        declared = [r for r in roots if r in self.fixed and
                    self.reasons.get(r, '').startswith(DECLARED)]
        if declared and not roots <= self.fixed:
          for r in roots - self.fixed:
            self.fix(r, f'{DECLARED} next to {name}')
          changed = True

  # ---- union-find ------------------------------------------------------------

  def new(self, size: int, fixed: str | None = None) -> int:
    self.parent.append(len(self.parent))
    self.size.append(int(size))
    if fixed:
      self.fix(self.parent[-1], fixed)
    return self.parent[-1]

  def find(self, n: int) -> int:
    while self.parent[n] != n:
      self.parent[n] = self.parent[self.parent[n]]
      n = self.parent[n]
    return n

  def union(self, a: int, b: int) -> None:
    a, b = self.find(a), self.find(b)
    if a == b:
      return
    if self.size[a] != self.size[b]:
      raise errors.InvalidInput(
          f'two channel axes of {self.size[a]} and {self.size[b]} channels '
          'meet (concatenations or flattens of different make-up, e.g. '
          'added together); declare the module paths fixed')
    sa, sb = self.structure.pop(a, None), self.structure.pop(b, None)
    self.parent[b] = a
    if b in self.fixed:
      self.fixed.add(a)
      self.reasons.setdefault(a, self.reasons.get(b, ''))
    if sa is not None and sb is not None:
      if [r for _, r in sa] != [r for _, r in sb] or len(sa) != len(sb):
        raise errors.InvalidInput(
            'two channel axes of different make-up meet (a concatenation or '
            'flatten against another); declare the group fixed')
      for (x, _), (y, _) in zip(sa, sb):
        self.union(x, y)
    if sa is not None or sb is not None:
      self.structure[a] = sa if sa is not None else sb
    if a in self.fixed:
      self._fix_segments(a)

  def fix(self, n: int, reason: str) -> None:
    r = self.find(n)
    if r not in self.fixed:
      self.fixed.add(r)
      self.reasons[r] = reason
    self._fix_segments(r)

  def _fix_segments(self, r: int) -> None:
    for seg, _ in self.structure.get(r, ()):
      if self.find(seg) not in self.fixed:
        self.fix(seg, self.reasons.get(r, ''))

  def pieces(self, n: int) -> list[int]:
    """The atomic classes along axis class `n`, in order."""
    r = self.find(n)
    if r not in self.structure:
      return [r]
    out = []
    for seg, rep in self.structure[r]:
      out += self.pieces(seg) * rep
    return out

  def composite(self, n: int, segments: list[tuple[int, int]]) -> None:
    r = self.find(n)
    self.structure[r] = tuple(segments)
    if r in self.fixed:
      self._fix_segments(r)

  # ---- the walk --------------------------------------------------------------

  def _new_axes(self, var: Any, fixed: str | None = None) -> tuple[int, ...]:
    return tuple(self.new(s, fixed) for s in getattr(var.aval, 'shape', ()))

  def of(self, scope: tuple[int, ...], atom: Any) -> tuple[int, ...]:
    if isinstance(atom, jcore.Literal):
      return tuple(self.new(s, 'a constant')
                   for s in np.shape(atom.val))
    return self.nodes[(scope, atom)]

  def _link(self, a: tuple[int, ...], b: tuple[int, ...]) -> None:
    for x, y in zip(a, b):
      if self.size[x] > 1 and self.size[y] > 1:
        self.union(x, y)

  def _walk(self, jaxpr: Any, scope: tuple[int, ...]) -> None:
    for index, eqn in enumerate(jaxpr.eqns):
      ins = [self.of(scope, v) for v in eqn.invars]
      active = [(scope, v) in self.activations
                if not isinstance(v, jcore.Literal) else False
                for v in eqn.invars]
      sub = subjaxpr(eqn)
      if sub is not None:
        inner = sub[0]
        inner_scope = scope + (index,)
        self.scope_module[inner_scope] = self.module(eqn, scope)
        for var, nodes, act in zip(inner.invars, ins, active):
          self.nodes[(inner_scope, var)] = nodes
          if act:
            self.activations.add((inner_scope, var))
        for var in inner.constvars:
          self.nodes[(inner_scope, var)] = self._new_axes(var, 'a constant')
        self._walk(inner, inner_scope)
        outs = [self.of(inner_scope, v) for v in inner.outvars]
      else:
        outs = self._equation(eqn, ins, scope, index, active)
      for var, nodes in zip(eqn.outvars, outs):
        self.nodes[(scope, var)] = nodes
        if any(active):
          self.activations.add((scope, var))

  def _equation(self, eqn, ins, scope, index, active
                ) -> list[tuple[int, ...]]:
    name, params = eqn.primitive.name, eqn.params
    outs = [self._new_axes(v) for v in eqn.outvars]
    out = outs[0] if outs else ()
    if name in ELEMENTWISE:
      for nodes in ins:
        if len(nodes) == len(out):
          self._link(nodes, out)
    elif name == 'broadcast_in_dim':
      dims = params['broadcast_dimensions']
      self._link(ins[0], [out[d] for d in dims])
    elif name == 'reshape':
      self._reshape(eqn, ins[0], out, scope)
    elif name == 'squeeze':
      kept = [n for i, n in enumerate(ins[0]) if i not in params['dimensions']]
      self._link(kept, out)
    elif name == 'expand_dims':
      kept = [n for i, n in enumerate(out) if i not in params['dimensions']]
      self._link(ins[0], kept)
    elif name == 'transpose':
      self._link([ins[0][p] for p in params['permutation']], out)
    elif name in REDUCTIONS:
      axes = params['axes']
      for a in axes:
        self.fix(ins[0][a], f'reduced over by {name}')
      self._link([n for i, n in enumerate(ins[0]) if i not in axes], out)
    elif name == 'concatenate':
      d = params['dimension']
      for nodes in ins:
        self._link([n for i, n in enumerate(nodes) if i != d],
                   [n for i, n in enumerate(out) if i != d])
      self.composite(out[d], [(nodes[d], 1) for nodes in ins])
    elif name in WINDOWED:
      self._windowed(eqn, ins, out, scope)
    elif name == 'conv_general_dilated':
      self._conv(eqn, ins, out, scope, index, active)
    elif name == 'dot_general':
      self._dot(eqn, ins, out, scope, index, active)
    elif name in CREATORS:
      pass
    elif name == 'iota':  # positions: they do not follow a width
      for n in out:
        self.fix(n, 'an iota')
    else:
      self._unknown(eqn, ins + outs, scope)
    return outs

  def _unknown(self, eqn, node_lists, scope, detail: str = '') -> None:
    nodes = tuple(n for nodes in node_lists for n in nodes
                  if self.size[n] > 1)
    shapes = ', '.join(str(tuple(getattr(v.aval, 'shape', ())))
                       for v in list(eqn.invars) + list(eqn.outvars))
    self.unknown.append((eqn.primitive.name + detail,
                         self.module(eqn, scope), shapes, nodes))

  def module(self, eqn, scope) -> str:
    """The module path of an equation (of its caller's, inside a jit)."""
    return module_of(eqn) or self.scope_module.get(scope, '(top level)')

  def _reshape(self, eqn, a: tuple[int, ...], b: tuple[int, ...],
               scope) -> None:
    """Axes mapped one to one, size-1 axes dropped or added, and flattens
    of [..., C] (C fastest) into one axis; anything else is unknown."""
    ia = [i for i, n in enumerate(a) if self.size[n] > 1]
    ib = [i for i, n in enumerate(b) if self.size[n] > 1]
    i = j = 0
    while i < len(ia) and j < len(ib):
      run_a, run_b = [ia[i]], [ib[j]]
      pa, pb = self.size[a[ia[i]]], self.size[b[ib[j]]]
      while pa != pb:
        if pa < pb:
          i += 1
          run_a.append(ia[i])
          pa *= self.size[a[ia[i]]]
        else:
          j += 1
          run_b.append(ib[j])
          pb *= self.size[b[ib[j]]]
      i, j = i + 1, j + 1
      if len(run_a) == 1 and len(run_b) == 1:
        self.union(a[run_a[0]], b[run_b[0]])
      elif len(run_b) == 1:  # a flatten: the last axis varies fastest
        outer = int(np.prod([self.size[a[k]] for k in run_a[:-1]]))
        for k in run_a[:-1]:
          self.fix(a[k], 'flattened with a faster axis')
        self.composite(b[run_b[0]], [(a[run_a[-1]], outer)])
      else:
        self._unknown(eqn, [[a[k] for k in run_a], [b[k] for k in run_b]],
                      scope, ' (an axis split)')

  def _windowed(self, eqn, ins, out, scope) -> None:
    """Pads, slices and windows: axes they leave alone are linked."""
    name, params = eqn.primitive.name, eqn.params
    x = ins[0]
    touched = []
    for axis, (n, m) in enumerate(zip(x, out)):
      untouched = self.size[n] == self.size[m]
      if name == 'pad':
        untouched = tuple(params['padding_config'][axis]) == (0, 0, 0)
      elif name.startswith('reduce_window'):
        untouched = (params['window_dimensions'][axis] == 1 and
                     params['window_strides'][axis] == 1 and
                     tuple(params['padding'][axis]) == (0, 0))
      elif name.startswith('cum'):
        untouched = axis != params['axis']
      elif name == 'rev':
        untouched = axis not in params['dimensions']
      if untouched:
        self._link([n], [m])
      else:
        touched += [n, m]
    if touched:
      self._unknown(eqn, [touched], scope, ' (over this axis)')

  def _conv(self, eqn, ins, out, scope, index, active) -> None:
    params = eqn.params
    lhs, rhs = ins
    if active[1]:
      self._unknown(eqn, [lhs, rhs, out], scope, ' (a kernel computed from '
                    'the image)')
      return
    dn = params['dimension_numbers']
    (l_n, l_c, *_), (r_o, r_i, *r_sp), (o_n, o_c, *o_sp) = (
        dn.lhs_spec, dn.rhs_spec, dn.out_spec)
    self._link([lhs[l_n]], [out[o_n]])
    for a in o_sp:
      self.fix(out[a], 'spatial')
    for a in r_sp:
      self.fix(rhs[a], 'spatial')
    groups = params['feature_group_count']
    c_in = self.size[lhs[l_c]]
    if params['batch_group_count'] != 1:
      self._unknown(eqn, [lhs, rhs, out], scope, ' (batch groups)')
      return
    if groups == 1:
      kind = 'conv'
      self.union(lhs[l_c], rhs[r_i])
      self._link([rhs[r_o]], [out[o_c]])
    elif groups == c_in and self.size[rhs[r_o]] == c_in:
      kind = 'depthwise'
      self._link([lhs[l_c]], [rhs[r_o]])
      self._link([rhs[r_o]], [out[o_c]])
    else:
      kind = 'grouped'
      for n in (lhs[l_c], rhs[r_i], rhs[r_o], out[o_c]):
        self.fix(n, 'a grouped convolution')
    self.contractions.append(Contraction(
        scope, index, kind, groups, 1, r_i, lhs[l_c], out[o_c],
        int(np.prod([self.size[rhs[a]] for a in r_sp])),
        int(np.prod([self.size[out[a]] for a in o_sp])),
        self.module(eqn, scope), rhs))

  def _dot(self, eqn, ins, out, scope, index, active) -> None:
    (lc, rc), (lb, rb) = eqn.params['dimension_numbers']
    lhs, rhs = ins
    for a, b in zip(lc, rc):
      self._link([lhs[a]], [rhs[b]])
    for a, b in zip(lb, rb):
      self._link([lhs[a]], [rhs[b]])
    free_l = [n for i, n in enumerate(lhs) if i not in lc and i not in lb]
    free_r = [n for i, n in enumerate(rhs) if i not in rc and i not in rb]
    self._link([lhs[a] for a in lb] + free_l + free_r, out)
    weight = 1 if not active[1] else 0 if not active[0] else None
    if weight is None or len(lc) != 1:  # between activations: costed, fixed
      for n in [lhs[a] for a in lc] + list(out):
        self.fix(n, 'a product of two activations')
      self.contractions.append(Contraction(
          scope, index, 'product', 1, 0, lc[0] if lc else 0,
          lhs[lc[0]] if lc else lhs[0], None, int(np.prod(
              [self.size[lhs[a]] for a in lc[1:]])),
          int(np.prod([self.size[n] for n in out[1:]])),
          self.module(eqn, scope)))
      return
    w_axis, x_nodes = (rc[0], lhs) if weight == 1 else (lc[0], rhs)
    x_axis = lc[0] if weight == 1 else rc[0]
    w_free = free_r if weight == 1 else free_l
    for n in w_free[:-1]:  # DenseGeneral's leading output axes
      self.fix(n, 'a Dense output axis before the last')
    x_free = free_l if weight == 1 else free_r
    pixels = int(np.prod([self.size[n] for n in x_free[1:] + w_free[:-1]]))
    self.contractions.append(Contraction(
        scope, index, 'dense', 1, weight, w_axis, x_nodes[x_axis],
        w_free[-1] if w_free else None, 1, pixels, self.module(eqn, scope),
        ins[weight]))

  # ---- results ---------------------------------------------------------------

  def is_group(self, root: int) -> bool:
    """A variable's axis that a convolution or Dense layer reads or
    writes, and that nothing fixes."""
    root = self.find(root)
    return (root not in self.fixed and root not in self.structure and
            self.size[root] > 1 and root in self._leaf_roots and
            root in self._contracted_roots)

  def leaf_axes(self) -> Iterator[tuple[int, int, int]]:
    """(leaf, axis, root) of every variable axis."""
    for leaf, nodes in enumerate(self.leaf_nodes):
      for axis, n in enumerate(nodes):
        yield leaf, axis, self.find(n)


def subjaxpr(eqn) -> tuple[Any, tuple] | None:
  """(jaxpr, consts) of a call the analysis walks inline, else None."""
  if eqn.primitive.name not in CALLS:
    return None
  sub = eqn.params.get('jaxpr', eqn.params.get('call_jaxpr'))
  if isinstance(sub, jcore.ClosedJaxpr):
    return sub.jaxpr, tuple(sub.consts)
  if isinstance(sub, jcore.Jaxpr):
    return sub, ()
  return None


def module_of(eqn) -> str:
  """The module path of an equation (linen records it in the name stack)."""
  stack = getattr(eqn.source_info, 'name_stack', None)
  text = str(stack) if stack is not None else ''
  return text.split('/', 1)[-1] if '/' in text else text
