"""The search fitness (docs/design.md §4), written once: the batch evaluator.

score(c) = the mean accuracy of the paths the supernet trains: ½[acc(L(c)) +
acc(R(c))] for BCNet, acc(L(c)) for a unilateral (`ua`) supernet, whose
right path is never trained (scoring it would reward random features).
`Evaluator.sides` says which paths; only those are run. Running statistics
gathered at mixed widths fit no single sub-network, so before a path is
scored its BatchNorm statistics are re-estimated on calibration batches:
the mean and variance pooled over all their examples (Chan et al.'s
pairwise update, not a mean of per-batch variances), in train mode without
dropout; then the path is evaluated in inference mode on the eval batches.

`Evaluator.score` scores any number of width vectors, K per call: each
jitted call runs K candidates × the scored sides on one batch (widths are
traced, so one compiled program serves every candidate set). On a mesh
the K candidates are split across the devices; K is rounded up to a
multiple of the device count and a short last set is padded. Within a
device the candidates of a side are vmapped on accelerators and run one
after another on the CPU (ops.map_paths), each in its N-channel window.
Training's periodic evaluation, the search, its baselines and the rank CLI
all call it; one width vector is the K = 1 case. Per-example hits and losses
come back with the accuracies: a score's standard error, and the paired
error of two scores measured on the same images, follow from them
(`standard_error`, `paired_difference`).

`python -m bcnet_jax.evaluate` is this module as a command.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any, Callable, Iterable

import jax
import jax.numpy as jnp
from jax.sharding import PartitionSpec as P
import numpy as np
import optax

from bcnet_jax import models
from bcnet_jax.learning import evaluation
from bcnet_jax.models import layers
from bcnet_jax.models import ops
from bcnet_jax.models import slicing
from bcnet_jax.run import errors
from bcnet_jax.run import parallel
from bcnet_jax.space import paths
from bcnet_jax.space import sampling

SIDES = tuple(paths.SIDES)
Batches = Callable[[], Iterable[dict[str, Any]]]


def batch_statistics(model: layers.WidthModel, variables, images,
                     *model_paths: paths.Paths) -> Any:
  """The BN statistics of this batch alone (batch_stats-like): a pass in
  inference mode (no dropout) whose BatchNorms normalize with the batch's
  own mean and variance and report them (layers.BATCH_MOMENTS)."""
  _, moments = model.apply(variables, images, *model_paths, train=False,
                           mutable=[layers.BATCH_MOMENTS])
  return moments[layers.BATCH_MOMENTS]


def trained_sides(objective: str) -> tuple[str, ...]:
  """The paths a supernet objective trains (sampling.subnetwork_table):
  the ones its score averages."""
  trained = {side for side, _ in sampling.subnetwork_table(
      objective, complementary=True)}
  return tuple(side for side in SIDES if side in trained)


def _per_path(fn, model, sides, mesh, candidates, shared, *per_path):
  """fn(shared, paths, *per_path_args) for every candidate [K] and side [S].

  `candidates`: {'widths': [K, G], 'valid': [K]} (False: padding);
  `per_path` leaves are [K, S, ...]. The K axis is split across the devices
  (shard_map; `shared` is replicated); within a device, one side after
  another, its candidates mapped by ops.map_paths.
  """
  def local(candidates, shared, *per_path):
    outs = []
    for i, side in enumerate(sides):
      side_paths = jax.vmap(functools.partial(paths.SIDES[side],
                                              model.space))(
                                                  candidates['widths'])
      side_args = jax.tree.map(lambda a, i=i: a[:, i], per_path)
      outs.append(ops.map_paths(
          lambda path: fn(shared, *path[1:]),
          (candidates['valid'], side_paths, *side_args)))
    return jax.tree.map(lambda *a: jnp.stack(a, axis=1), *outs)

  split = P(parallel.AXIS)
  return jax.shard_map(local, mesh=mesh, in_specs=(split, P()) + (split,) *
                       len(per_path), out_specs=split, check_vma=False)(
                           candidates, shared, *per_path)


def _is_bn(tree) -> bool:
  return isinstance(tree, dict) and set(tree) == {'mean', 'var'}


@functools.partial(jax.jit, static_argnames=('model', 'sides', 'mesh'),
                   donate_argnames='pooled')
def pool_batch(params, batch_stats, images, candidates, pooled, *, model,
               sides, mesh):
  """`pooled` BN statistics of every candidate and side, updated with this
  batch: {'count': examples so far, 'sums': batch_stats-like, 'mean' the
  pooled mean and 'var' the sum of squared deviations, [K, S, C] leaves}."""
  def batch_moments(shared, path):
    params, batch_stats, images = shared
    return batch_statistics(
        model, {'params': params, 'batch_stats': batch_stats}, images, path)

  moments = _per_path(batch_moments, model, sides, mesh, candidates,
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
  """batch_stats of every candidate and side ([K, S, C] leaves)."""
  return jax.tree.map(lambda s: {'mean': s['mean'],
                                 'var': s['var'] / pooled['count']},
                      pooled['sums'], is_leaf=_is_bn)


@functools.partial(jax.jit, static_argnames=('model', 'sides', 'mesh'))
def score_batch(params, pooled, batch, candidates, *, model, sides, mesh):
  """Per example of `batch`, whether each candidate's side classified it
  correctly and its cross-entropy: `hits` (bool) and `loss`, [K, S, batch],
  each path with its pooled statistics (the caller drops masked examples)."""
  def per_example(shared, path, stats):
    params, batch = shared
    logits, _ = model.apply({'params': params, 'batch_stats': stats},
                            batch['image'], path, train=False)
    logits = logits[0].astype(jnp.float32)
    return {'hits': jnp.argmax(logits, axis=-1) == batch['label'],
            'loss': optax.softmax_cross_entropy_with_integer_labels(
                logits, batch['label'])}

  return _per_path(per_example, model, sides, mesh, candidates,
                   (params, batch), pooled_stats(pooled))


@dataclasses.dataclass(frozen=True)
class Evaluator:
  """Scores width vectors of one supernet, `candidates_per_call` at a time.

  Attributes:
    model: the supernet.
    mesh: the devices; candidates are split across its `data` axis.
    candidates_per_call: K, rounded up to a multiple of the device count.
    sides: the paths scored, and averaged into the score: those the
      supernet trains (`trained_sides` of its objective).
  """
  model: layers.WidthModel
  mesh: jax.sharding.Mesh
  candidates_per_call: int = 8
  sides: tuple[str, ...] = SIDES

  def __post_init__(self):
    if not self.sides or not set(self.sides) <= set(SIDES):
      raise ValueError(f'sides must name some of {SIDES}, got {self.sides}')
    object.__setattr__(self, 'sides', tuple(self.sides))  # a static arg

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
    k, s = candidates['widths'].shape[0], len(self.sides)
    pooled = {'count': self._replicated(np.float32(0)), 'sums': jax.tree.map(
        lambda v: self._sharded(np.zeros((k, s) + v.shape, np.float32)),
        batch_stats)}
    for batch in calibration:
      pooled = pool_batch(params, batch_stats, batch['image'], candidates,
                          pooled, model=self.model, sides=self.sides,
                          mesh=self.mesh)
    if not int(pooled['count']):
      raise errors.InvalidInput(
          'BN recalibration needs at least one calibration '
          'batch')
    return pooled

  def score(self, params, batch_stats, widths, *, calibration: Batches,
            eval_batches: Batches,
            status: Callable[[float, int], None] = lambda done, total: None,
            per_example: bool = False,
            eval_batch_count: int | None = None) -> dict[str, Any]:
    """Scores of n width vectors on the eval batches' E examples.

    Args:
      params: the supernet's params.
      batch_stats: its BN statistics (kept on channels off a path).
      widths: [n, groups] bins.
      calibration: returns fresh device batches (image) for BN statistics.
      eval_batches: returns fresh device batches (image, label, mask).
      status: called with (scored, n) before each call's set and at the
        end; with `eval_batch_count`, also after each eval batch, with a
        fractional `scored` (the share of the call's eval batches done; the
        calibration's time goes with the first).
      per_example: also return 'hits' and 'loss' per example (for paired
        comparisons of a few width vectors).
      eval_batch_count: the eval batches of one call, for the progress
        within it (each then waits for its batch to be computed: only where
        someone watches, such as rank on a CPU).

    Returns:
      'score', 'score_se': [n], the mean accuracy of `sides` and its
      standard error over examples; per side ('left', 'right'), its
      accuracy and mean cross-entropy ('loss_left'...), [n]; 'sides';
      'examples': E; with per_example, 'hits' [n, S, E] (bool) and 'loss'
      [n, S, E].
    """
    # Legal widths only: a single path's window holds at most B bins.
    widths = self.model.space.validate_widths(widths).reshape(
        -1, self.model.space.num_groups)
    n, k = len(widths), self.call_size
    chunks = []
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
      outputs = []
      for batch in eval_batches():
        outputs.append((score_batch(params, pooled, batch, candidates,
                                    model=self.model, sides=self.sides,
                                    mesh=self.mesh), batch['mask']))
        if eval_batch_count:
          jax.block_until_ready(outputs[-1][0])
          status(start + len(chunk) * min(len(outputs) / eval_batch_count,
                                          1.0), n)
      outputs = jax.device_get(jax.device_put(
          outputs, parallel.replicated(self.mesh)))
      examples = {name: np.concatenate(
          [out[name][:len(chunk)][..., mask] for out, mask in outputs],
          axis=-1) for name in ('hits', 'loss')} if outputs else {}
      if not outputs or not examples['hits'].shape[-1]:
        raise errors.InvalidInput('the eval split has no examples to score on')
      chunks.append(self._summary(examples, keep=per_example))
    status(n, n)
    result = {key: np.concatenate([c[key] for c in chunks])
              for key in chunks[0]}
    result['sides'] = self.sides
    result['examples'] = examples['hits'].shape[-1]
    return result

  def leads(self, params, batch_stats, widths, *, calibration: Batches,
            eval_batches: Batches, status=lambda done, total: None
            ) -> tuple[int, list[tuple[float, float]]]:
    """(E, [(score of widths[0] - score of widths[i], its paired standard
    error) for i >= 1]): the first width vector against each other one,
    scored per example on the same E images."""
    result = self.score(params, batch_stats, widths, calibration=calibration,
                        eval_batches=eval_batches, status=status,
                        per_example=True)
    per_example = per_example_score(result['hits'])
    return result['examples'], [paired_difference(per_example[0], other)
                                for other in per_example[1:]]

  def _summary(self, examples: dict[str, np.ndarray], keep: bool
               ) -> dict[str, np.ndarray]:
    """Per candidate: its score and standard error, each side's accuracy
    and mean loss; the per-example arrays only if `keep` (n x S x E can be
    large: 16,384 width vectors x 10,000 images is gigabytes)."""
    hits, loss = examples['hits'], examples['loss']
    per_example = per_example_score(hits)
    out = {'score': per_example.mean(axis=-1),
           'score_se': standard_error(per_example)}
    for i, side in enumerate(self.sides):
      out[side] = hits[:, i].mean(axis=-1)
      out[f'loss_{side}'] = loss[:, i].mean(axis=-1)
    if keep:
      out.update(hits=hits, loss=loss)
    return out


def per_example_score(hits: np.ndarray) -> np.ndarray:
  """[n, E]: each example's contribution to the score, from `hits`
  [n, S, E]: the mean over the scored sides of its hit (0, ½ or 1 with two
  sides)."""
  return hits.mean(axis=1)


def standard_error(per_example: np.ndarray) -> np.ndarray:
  """The standard error of the mean over the last axis (E examples): how
  far a score measured on other images of the same kind may move."""
  e = per_example.shape[-1]
  if e < 2:
    return np.full(per_example.shape[:-1], np.nan)
  return per_example.std(axis=-1, ddof=1) / np.sqrt(e)


def paired_difference(a: np.ndarray, b: np.ndarray) -> tuple[float, float]:
  """(mean of a - b, its standard error) of two width vectors' per-example
  scores on the same E examples: the pairing cancels the images' own
  difficulty, so it is much tighter than the two scores' own errors."""
  diff = np.asarray(a, np.float64) - np.asarray(b, np.float64)
  return float(diff.mean()), float(standard_error(diff))


def compact_accuracy(compact: layers.WidthModel, variables, *,
                     calibration: Batches, eval_batches: Batches) -> float:
  """Top-1 of a compact model, BN recalibrated by the same pooling: what a
  static-width implementation computes for one path (one compile per
  width vector). The reference the batch evaluator is tested against."""
  moments = jax.jit(functools.partial(batch_statistics, compact, variables))

  pooled = {'count': jnp.float32(0), 'sums': jax.tree.map(
      jnp.zeros_like, variables['batch_stats'])}
  for batch in calibration():
    pooled = pool(pooled, moments(batch['image']), batch['image'].shape[0])
  return evaluation.accuracy(
      compact, {**variables, 'batch_stats': pooled_stats(pooled)},
      eval_batches())


def compact_scores(model: layers.WidthModel, variables, widths, *,
                   calibration: Batches, eval_batches: Batches,
                   sides: tuple[str, ...] = SIDES) -> dict[str, float]:
  """{side: accuracy, 'score': their mean} of one width vector from the
  compact models of its paths, sliced from the supernet's `variables`."""
  out = {side: compact_accuracy(
      models.compact_like(model, widths),
      slicing.slice_params(model, variables, widths, side),
      calibration=calibration, eval_batches=eval_batches) for side in sides}
  out['score'] = sum(out[side] for side in sides) / len(sides)
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
