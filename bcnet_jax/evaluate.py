"""The search fitness (docs/design.md §4), written once: the batch evaluator.

score(c) = ½[acc(L(c)) + acc(R(c))]. Running statistics gathered at mixed
widths fit no single sub-network, so before a path is scored its BatchNorm
statistics are re-estimated on calibration batches: the mean and variance
pooled over all their examples (Chan et al.'s pairwise update, not a mean
of per-batch variances), in train mode without dropout; then the path is
evaluated in inference mode on the eval batches.

`Evaluator.score` scores any number of width vectors, K per call: each
jitted call runs K candidates × 2 sides on one batch and accumulates on the
device (widths are traced, so one compiled program serves every candidate
set). On a mesh the K candidates are split across the devices; K is rounded
up to a multiple of the device count and a short last set is padded.
Training's periodic evaluation, the search, its baselines and the rank CLI
all call it; one width vector is the K = 1 case.

As a command, it scores a trained supernet without writing anything:

  python -m bcnet_jax.evaluate --config=configs/demo.py --workdir=DIR \
      [--widths=4,8,...] [--config.eval.split=eval]
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any, Callable, Iterable

from absl import flags
import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import PartitionSpec as P

from bcnet_jax import app
from bcnet_jax import models
from bcnet_jax import parallel
from bcnet_jax import paths
from bcnet_jax.models import layers
from bcnet_jax.models import slicing

SIDES = ('left', 'right')
Batches = Callable[[], Iterable[dict[str, Any]]]


def _maps_paths(model: layers.WidthModel) -> bool:
  """Paths run one after another (lax.map), not vmapped: see _per_path."""
  return layers.resolve_lowering(model.lowering) == 'cpu'


def _single_path_model(model: layers.WidthModel, **changes: Any
                      ) -> layers.WidthModel:
  """`model` for one path at a time, windowed where paths are not vmapped
  (layers.WidthModel.windowed)."""
  return model.clone(single_path=True, windowed=_maps_paths(model),
                     parent=None, **changes)


def calibration_model(model: layers.WidthModel) -> layers.WidthModel:
  """One path, BN momentum 0 (stats := the batch's), no dropout."""
  off = {k: 0.0 for k in ('dropout_rate', 'drop_path_rate')
         if hasattr(model, k)}
  return _single_path_model(model, bn_momentum=0.0, **off)


def _side_ids(space, widths: jax.Array) -> paths.PathIds:
  """{dim: [2, C']}: the ids of L(c) and of R(c)."""
  left, right = paths.left(space, widths), paths.right(space, widths)
  return {k: jnp.stack([left[k], right[k]]) for k in left}


def _per_path(fn, model, mesh, candidates, shared, *per_path):
  """fn(shared, ids, *per_path_args) for every candidate [K] and side [2].

  `candidates`: {'widths': [K, G], 'valid': [K]} (False: padding). The K
  axis is split across the devices (shard_map; `shared` is replicated).
  Within a device the paths are vmapped on accelerators, but run one after
  another (lax.map) with the 'cpu' lowering, where a K-times larger batch
  only spills the caches (measured 1.1-1.3x more paths/s than vmap on 2
  cores) and padding is skipped.
  """
  def local(candidates, shared, *per_path):
    k = candidates['widths'].shape[0]
    ids = jax.vmap(functools.partial(_side_ids, model.space))(
        candidates['widths'])
    valid = jnp.repeat(candidates['valid'][:, None], 2, axis=1)
    paths_args = jax.tree.map(lambda a: a.reshape((2 * k,) + a.shape[2:]),
                              (valid, ids, *per_path))

    def one(path):
      return fn(shared, *path[1:])

    def skipped(path):
      return jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype),
                          jax.eval_shape(one, path))

    if _maps_paths(model):
      out = jax.lax.map(lambda p: jax.lax.cond(p[0], one, skipped, p),
                        paths_args)
    else:
      out = jax.vmap(one)(paths_args)
    return jax.tree.map(lambda a: a.reshape((k, 2) + a.shape[1:]), out)

  split = P(parallel.AXIS)
  return jax.shard_map(local, mesh=mesh, in_specs=(split, P()) + (split,) *
                       len(per_path), out_specs=split, check_vma=False)(
                           candidates, shared, *per_path)


def _is_bn(tree) -> bool:
  return isinstance(tree, dict) and set(tree) == {'mean', 'var'}


@functools.partial(jax.jit, static_argnames=('model', 'mesh'),
                   donate_argnames='pooled')
def pool_batch(params, batch_stats, images, candidates, pooled, *, model,
               mesh):
  """`pooled` BN statistics of every candidate and side, updated with this
  batch: {'count': examples so far, 'sums': batch_stats-like, 'mean' the
  pooled mean and 'var' the sum of squared deviations, [K, 2, C] leaves}."""
  calib = calibration_model(model)

  def batch_moments(shared, ids):
    params, batch_stats, images = shared
    _, new = calib.apply({'params': params, 'batch_stats': batch_stats},
                         images, ids, train=True, mutable=['batch_stats'])
    return new['batch_stats']

  moments = _per_path(batch_moments, model, mesh, candidates,
                      (params, batch_stats, images))
  return pool(pooled, moments, images.shape[0])


def pool(pooled, moments, n_b: int):
  """`pooled` merged with the BN statistics `moments` of a batch of `n_b`
  examples (Chan, Golub & LeVeque's pairwise rule, stable in float32)."""
  n_a = pooled['count']
  n = n_a + n_b

  def merge(sums, batch):
    delta = batch['mean'] - sums['mean']
    return {'mean': sums['mean'] + delta * (n_b / n),
            'var': sums['var'] + batch['var'] * n_b
                   + jnp.square(delta) * (n_a * n_b / n)}

  return {'count': n,
          'sums': jax.tree.map(merge, pooled['sums'], moments,
                               is_leaf=_is_bn)}


def pooled_stats(pooled) -> Any:
  """batch_stats of every candidate and side ([K, 2, C] leaves)."""
  return jax.tree.map(lambda s: {'mean': s['mean'],
                                 'var': s['var'] / pooled['count']},
                      pooled['sums'], is_leaf=_is_bn)


@functools.partial(jax.jit, static_argnames=('model', 'mesh'),
                   donate_argnames='tally')
def count_correct(params, pooled, batch, candidates, tally, *, model, mesh):
  """`tally` {'correct': [K, 2], 'examples'} plus this batch (its mask
  applied), each path with its pooled statistics."""
  scorer = _single_path_model(model)

  def hits(shared, ids, stats):
    params, batch = shared
    logits, _ = scorer.apply({'params': params, 'batch_stats': stats},
                             batch['image'], ids, train=False)
    hit = jnp.argmax(logits[0], axis=-1) == batch['label']
    return jnp.sum(hit & batch['mask'], dtype=jnp.int32)

  correct = _per_path(hits, model, mesh, candidates, (params, batch),
                      pooled_stats(pooled))
  return {'correct': tally['correct'] + correct,
          'examples': tally['examples'] + jnp.sum(batch['mask'],
                                                  dtype=jnp.int32)}


@dataclasses.dataclass(frozen=True)
class Evaluator:
  """Scores width vectors of one supernet, `candidates_per_call` at a time.

  Attributes:
    model: the supernet.
    mesh: the devices; candidates are split across its `data` axis.
    candidates_per_call: K, rounded up to a multiple of the device count.
  """
  model: layers.WidthModel
  mesh: jax.sharding.Mesh
  candidates_per_call: int = 8

  @property
  def call_size(self) -> int:
    """K: candidates_per_call rounded up to whole devices. Fixed, so one
    compiled program serves every call; a short set is padded (skipped
    on the CPU)."""
    k = max(1, self.candidates_per_call)
    return -(-k // self.mesh.size) * self.mesh.size

  def _replicated(self, value) -> jax.Array:
    """A scalar on every device, as the jitted calls return it (an
    uncommitted one would compile each call a second time)."""
    return jax.device_put(value, parallel.replicated(self.mesh))

  def _sharded(self, array: np.ndarray) -> jax.Array:
    """A host array split over the mesh along its first (candidate) axis."""
    return jax.make_array_from_callback(
        array.shape, parallel.data_sharded(self.mesh),
        lambda index: array[index])

  def recalibrate(self, params, batch_stats, candidates: dict[str, jax.Array],
                  calibration: Iterable[dict[str, Any]]) -> Any:
    """Pooled BN statistics of K candidates' paths (see `pool_batch`)."""
    k = candidates['widths'].shape[0]
    pooled = {'count': self._replicated(np.float32(0)), 'sums': jax.tree.map(
        lambda v: self._sharded(np.zeros((k, 2) + v.shape, np.float32)),
        batch_stats)}
    for batch in calibration:
      pooled = pool_batch(params, batch_stats, batch['image'], candidates,
                          pooled, model=self.model, mesh=self.mesh)
    if not int(pooled['count']):
      raise ValueError('BN recalibration needs at least one calibration '
                       'batch')
    return pooled

  def score(self, params, batch_stats, widths, *, calibration: Batches,
            eval_batches: Batches,
            status: Callable[[int, int], None] = lambda done, total: None
            ) -> dict[str, np.ndarray]:
    """{'left', 'right', 'score': [n] accuracies, 'examples'} of n widths.

    Args:
      params: the supernet's params.
      batch_stats: its BN statistics (kept on channels off a path).
      widths: [n, groups] bins.
      calibration: returns fresh device batches (image) for BN statistics.
      eval_batches: returns fresh device batches (image, label, mask).
      status: called with (scored, n) before each call's set.
    """
    # Legal widths only: a single path's window holds at most B bins.
    widths = self.model.space.validate_widths(widths).reshape(
        -1, self.model.space.num_groups)
    n, k = len(widths), self.call_size
    correct, examples = np.zeros((n, 2), np.int64), 0
    for start in range(0, n, k):
      status(start, n)
      chunk = widths[start:start + k]
      pad = k - len(chunk)
      candidates = {
          'widths': self._sharded(np.concatenate(
              [chunk, np.repeat(chunk[-1:], pad, axis=0)])),
          'valid': self._sharded(np.arange(k) < len(chunk))}
      pooled = self.recalibrate(params, batch_stats, candidates,
                                calibration())
      tally = {'correct': self._sharded(np.zeros((k, 2), np.int32)),
               'examples': self._replicated(np.int32(0))}
      for batch in eval_batches():
        tally = count_correct(params, pooled, batch, candidates, tally,
                              model=self.model, mesh=self.mesh)
      tally = jax.device_get(jax.device_put(tally,
                                            parallel.replicated(self.mesh)))
      correct[start:start + k] = tally['correct'][:len(chunk)]
      examples = int(tally['examples'])
    status(n, n)
    if not examples:
      raise ValueError('the eval split has no examples to score on')
    acc = correct / examples
    return {'left': acc[:, 0], 'right': acc[:, 1],
            'score': acc.mean(axis=1), 'examples': examples}


def compact_accuracy(compact: layers.WidthModel, variables, *,
                     calibration: Batches, eval_batches: Batches) -> float:
  """Top-1 of a compact model, BN recalibrated by the same pooling: what a
  static-width implementation computes for one path (one compile per
  width vector). The reference the batch evaluator is tested against."""
  calib = calibration_model(compact)

  @jax.jit
  def moments(images):
    return calib.apply(variables, images, train=True,
                       mutable=['batch_stats'])[1]['batch_stats']

  pooled = {'count': jnp.float32(0), 'sums': jax.tree.map(
      jnp.zeros_like, variables['batch_stats'])}
  for batch in calibration():
    pooled = pool(pooled, moments(batch['image']), batch['image'].shape[0])
  return accuracy(compact, {**variables, 'batch_stats': pooled_stats(pooled)},
                  eval_batches())


@functools.partial(jax.jit, static_argnames='model')
def _compact_correct(variables, batch, *, model):
  logits, _ = model.apply(variables, batch['image'], train=False)
  hit = jnp.argmax(logits, axis=-1) == batch['label']
  return jnp.sum(hit & batch['mask']), jnp.sum(batch['mask'])


def accuracy(compact: layers.WidthModel, variables: Any,
             batches: Iterable[dict[str, Any]]) -> float:
  """Top-1 of a compact model with the BN statistics in `variables`."""
  hits = total = 0
  for batch in batches:
    c, n = _compact_correct(variables, batch, model=compact)
    hits, total = hits + int(c), total + int(n)
  if not total:
    raise ValueError('the eval split has no examples to score on')
  return hits / total


def compact_scores(model: layers.WidthModel, variables, widths, *,
                   calibration: Batches, eval_batches: Batches
                   ) -> dict[str, float]:
  """{'left', 'right', 'score'} of one width vector from the compact
  models of both paths, sliced from the supernet's `variables`."""
  out = {side: compact_accuracy(
      models.compact_like(model, widths),
      slicing.slice_params(model, variables, widths, side),
      calibration=calibration, eval_batches=eval_batches) for side in SIDES}
  out['score'] = (out['left'] + out['right']) / 2
  return out


def fixed_widths(space, num_random: int, seed: int) -> dict[str, np.ndarray]:
  """The width vectors periodic evaluation follows, by name: 'smallest'
  (m bins in every group), 'full' (B bins: the nominal network) and
  'random0', 'random1'... (uniform, fixed by the seed)."""
  rng = np.random.default_rng([seed, 0xE7A1])
  out = {'smallest': space.smallest(), 'full': space.full()}
  for i in range(num_random):
    out[f'random{i}'] = space.sample(rng)
  return out


def _main(argv: list[str]) -> None:
  """`python -m bcnet_jax.evaluate`: prints the scores as one JSON line."""
  del argv
  # Imported here, not above: supernet imports this module.
  from bcnet_jax import supernet  # pylint: disable=g-import-not-at-top
  config = app.CONFIG.value
  widths = None
  if _WIDTHS.value:
    space = models.get_space(config.model.name, config.model.bins,
                             config.model.min_bins)
    widths = {'given': space.parse_widths(_WIDTHS.value)}
  app.print_result(supernet.evaluate_workdir(config, app.WORKDIR.value,
                                              widths))


if __name__ == '__main__':
  # Defined only when run: importing this module defines no flag.
  _WIDTHS = flags.DEFINE_string(
      'widths', None, 'bins per group, comma-separated (default: the fixed '
      'width vectors of training\'s evaluation)')
  app.run(_main)
