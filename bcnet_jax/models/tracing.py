"""A user's Flax CNN as jaxprs: the programs the channel analysis reads.

A linen or NNX module is called once per mode on a batch of zeros under
`jax.make_jaxpr`, over its flattened variables, so every jaxpr input is one
variable (its collection and path known) or the image, or the dropout key:

  eval     (variables..., image, key)  -> (logits,)
  train    (variables..., image, key)  -> (logits, new batch_stats...)
  moments  train with Dropout layers switched off (BN recalibration, which
           the built-ins run in inference mode: no dropout)

Jaxprs carry the batch size (BatchNorm divides by the count as a literal),
so a model is traced once per batch size it runs at (`Tracer.program`).

How the model is told to train: a call argument (`train`, `training`, or
the inverted `deterministic` / `use_running_average`, found in the call's
signature or named by the user; '!name' inverts any other name) or, without
one, whether `batch_stats` is mutable (linen) / `model.train()` (NNX).
"""

from __future__ import annotations

import dataclasses
import inspect
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from bcnet_jax.run import errors

MODES = ('eval', 'train', 'moments')
TRAIN_ARGS = ('train', 'training', 'deterministic', 'use_running_average')
INVERTED = ('deterministic', 'use_running_average')
STATS = 'batch_stats'


@dataclasses.dataclass(frozen=True)
class Leaf:
  """One variable of the model: collection, path within it, shape."""
  collection: str
  path: tuple[str, ...]
  shape: tuple[int, ...]
  dtype: Any

  @property
  def name(self) -> str:
    return '/'.join(self.path)


@dataclasses.dataclass(frozen=True, eq=False)
class Program:
  """One mode's jaxpr; `stats` are the leaves its extra outputs update."""
  jaxpr: Any  # jax.extend.core.ClosedJaxpr
  stats: tuple[int, ...]  # leaf index of each output after the logits


def _key_name(key: Any) -> str:
  for attr in ('key', 'name', 'idx'):
    if hasattr(key, attr):
      return str(getattr(key, attr))
  return str(key)


def _train_kwargs(argument: str | None, train: bool) -> dict[str, bool]:
  if argument is None:
    return {}
  if argument.startswith('!'):
    return {argument[1:]: not train}
  return {argument: not train if argument in INVERTED else train}


def train_argument(module: Any, name: str | None) -> str | None:
  """The call argument that switches training ('' or None: found in the
  signature of the module's __call__, else switched by mutability)."""
  if name:
    return name
  params = inspect.signature(type(module).__call__).parameters
  return next((a for a in TRAIN_ARGS if a in params), None)


class Tracer:
  """Traces one user module (linen or NNX) at one input shape per batch."""

  def __init__(self, module: Any, image_shape: tuple[int, int, int],
               train_arg: str | None = None):
    self.module = module
    self.image_shape = tuple(image_shape)
    self.nnx = _is_nnx(module)
    self.argument = train_argument(module, train_arg)
    self._programs: dict[tuple[int, str], Program] = {}
    self.init = jax.jit(self._init)
    variables = jax.eval_shape(self._init, jax.random.key(0))
    flat, self.treedef = jax.tree_util.tree_flatten_with_path(variables)
    self.leaves = tuple(
        Leaf(_key_name(path[0]), tuple(_key_name(k) for k in path[1:]),
             tuple(value.shape), value.dtype) for path, value in flat)
    bad = sorted({leaf.collection for leaf in self.leaves}
                 - {'params', STATS})
    if bad:
      raise errors.InvalidInput(
          f'{type(module).__name__} has variable collections {bad}; a '
          "searchable model holds only 'params' and 'batch_stats'")

  def image(self, batch: int) -> jax.Array:
    return jnp.zeros((batch,) + self.image_shape, jnp.float32)

  def _init(self, key: jax.Array) -> dict[str, Any]:
    """The module's own variables at its own widths ({'params', ...});
    jitted as `init`. An NNX module holds its variables already: `key`
    permutes their channels instead (see `permuted`)."""
    if self.nnx:
      from flax import nnx  # pylint: disable=g-import-not-at-top
      _, params, stats, _ = nnx.split(self.module, nnx.Param, nnx.BatchStat,
                                      ...)
      return {'params': nnx.to_pure_dict(params),
              **({STATS: nnx.to_pure_dict(stats)} if stats else {})}
    variables = self.module.init(
        {'params': key, 'dropout': key}, self.image(1),
        **_train_kwargs(self.argument, False))
    return {c: v for c, v in dict(variables).items()}

  @property
  def permuted(self) -> bool:
    """Whether `init` returns the same values for every key, to be
    drawn again by permuting channels (NNX: no constructor to call)."""
    return self.nnx

  def call(self, variables: dict[str, Any], image: jax.Array, mode: str,
           key: jax.Array | None) -> tuple[jax.Array, dict[str, Any]]:
    """(logits, new batch_stats; {} in eval mode)."""
    if mode not in MODES:
      raise ValueError(f'mode must be one of {MODES}, got {mode!r}')
    if self.nnx:
      return _nnx_call(self.module, variables, image, mode, key)
    kwargs = _train_kwargs(self.argument, mode != 'eval')
    if mode == 'eval':
      return self.module.apply(variables, image, **kwargs), {}
    with nn.intercept_methods(
        _without_dropout if mode == 'moments' else _as_is):
      logits, new = self.module.apply(variables, image, **kwargs,
                                      mutable=[STATS], rngs={'dropout': key})
    return logits, dict(new).get(STATS, {})

  def program(self, batch: int, mode: str) -> Program:
    """The jaxpr of one mode at one batch size (traced once)."""
    if (batch, mode) not in self._programs:
      self._programs[batch, mode] = self._trace(batch, mode)
    return self._programs[batch, mode]

  def _trace(self, batch: int, mode: str) -> Program:
    index = {(leaf.collection, leaf.path): i
             for i, leaf in enumerate(self.leaves)}
    stats_order = []

    def fn(leaves, image, key):
      variables = jax.tree_util.tree_unflatten(self.treedef, leaves)
      logits, new = self.call(variables, image, mode, key)
      if not isinstance(logits, jax.Array) or logits.ndim != 2:
        raise errors.InvalidInput(
            f'{type(self.module).__name__} must return logits [batch, '
            f'classes]; it returned {jax.tree.map(jnp.shape, logits)}')
      flat = jax.tree_util.tree_flatten_with_path(new)[0]
      stats_order[:] = [index[(STATS, tuple(_key_name(k) for k in p))]
                        for p, _ in flat]
      return [logits] + [v for _, v in flat]

    leaves = [jax.ShapeDtypeStruct(leaf.shape, leaf.dtype)
              for leaf in self.leaves]
    # Traced apart from any mesh of the caller (a training step's, the
    # evaluator's shard_map): the program runs under whichever calls it.
    with jax.sharding.use_abstract_mesh(jax.sharding.AbstractMesh((), ())):
      closed = jax.make_jaxpr(fn)(leaves, jax.ShapeDtypeStruct(
          (batch,) + self.image_shape, jnp.float32), jax.random.key(0))
    return Program(closed, tuple(stats_order))


def _is_nnx(module: Any) -> bool:
  try:
    from flax import nnx  # pylint: disable=g-import-not-at-top
  except ImportError:
    return False
  return isinstance(module, nnx.Module)


def _as_is(next_fun, args, kwargs, context):
  del context
  return next_fun(*args, **kwargs)


def _without_dropout(next_fun, args, kwargs, context):
  """nn.Dropout passes its input through; every other call as it is."""
  if isinstance(context.module, nn.Dropout) and (
      context.method_name == '__call__'):
    return args[0]
  return next_fun(*args, **kwargs)


def _nnx_call(module, variables, image, mode, key):
  from flax import nnx  # pylint: disable=g-import-not-at-top
  graphdef, params, stats, rest = nnx.split(module, nnx.Param, nnx.BatchStat,
                                            ...)
  nnx.replace_by_pure_dict(params, variables['params'])
  if stats:
    nnx.replace_by_pure_dict(stats, variables[STATS])
  model = nnx.merge(graphdef, params, stats, rest)
  if mode == 'eval':
    model.eval()
  else:
    model.train()
    nnx.reseed(model, dropout=key)
    if mode == 'moments':  # Dropout off, BatchNorm on the batch
      model.set_attributes(nnx.Dropout, deterministic=True)
  logits = model(image)
  if mode == 'eval':
    return logits, {}
  return logits, nnx.to_pure_dict(nnx.state(model, nnx.BatchStat))
