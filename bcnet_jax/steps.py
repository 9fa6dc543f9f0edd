"""Pure step functions; the callers jit them (see parallel.jit_train_step).

The BCNet supernet step (docs/design.md §3). Per step one width vector c,
and for the `bcnet` objective with `complementary` its complement c̄, train four
sub-networks L(c), R(c), L(c̄), R(c̄); the objective is ½ of the sum of their
cross-entropies (every channel gets weight 1), the logged loss their mean.

- implementation 'fused' (default): L(c) and R(c̄) are disjoint and cover
  every channel, so one full-width pass with `paths.pair(c)` carries both, and
  a second with `pair(c̄)` carries L(c̄) and R(c): 2 passes, not 4.
- implementation 'reference': four masked single-path passes, BN statistics
  threaded through L(c), R(c̄), R(c), L(c̄) in that order.
Without complementary (L(c), R(c)) or for 'ua' (L(c) only) paths overlap or
are single, so both implementations run masked single-path passes. A single
path runs in its window of N channels per dim (layers.Widths.window): the
nominal network's shapes, not the supernet's C'.

Memory: with `pass_by_pass`, each pass's gradients are computed before the
next pass's forward starts (a data dependency orders them), so only one
pass's activations are held at a time: the peak memory of one pass instead
of the sum of all. The gradients are the same sum.

The same step trains a compact model (static widths, no masks): one plain
pass, as in the retrain stage and the benchmark's 'plain' mode.

Passes are unrolled: under `lax.scan` the same ResNet-20 step ran 30x slower
on XLA:CPU (45.9 s against 1.5 s at batch 128). Width vectors are traced int32
data: one compiled step serves them all.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import optax

from bcnet_jax import loss_pool
from bcnet_jax import paths
from bcnet_jax import sampling
from bcnet_jax.models import layers
from bcnet_jax.state import TrainState

IMPLEMENTATIONS = ('fused', 'reference')
Batch = dict[str, jax.Array]


def passes(space, widths: jax.Array, *, objective: str, complementary: bool,
           implementation: str):
  """Path ids of a step's passes and where each sub-network sits.

  Returns:
    (ids, select, single_path): ids lists, per pass, dim -> [C'] int8;
    select lists, per sub-network in the order L(c), R(c)[, L(c̄), R(c̄)],
    its (pass, path); single_path says each pass carries one path.
  """
  table = sampling.subnetwork_table(objective, complementary)
  if implementation not in IMPLEMENTATIONS:
    raise ValueError(f'implementation must be one of {IMPLEMENTATIONS}, got '
                     f'{implementation!r}')
  c = jnp.asarray(widths, jnp.int32)
  cbar = space.complement(c)
  if len(table) == 4 and implementation == 'fused':
    # pair(c) carries L(c) and R(c̄); pair(c̄) carries L(c̄) and R(c).
    ids = [paths.pair(space, c), paths.pair(space, cbar)]
    where = {('left', False): (0, 0), ('right', True): (0, 1),
             ('left', True): (1, 0), ('right', False): (1, 1)}
    return ids, [where[s] for s in table], False
  # One masked pass per sub-network; with the complement, BN statistics are
  # threaded in the fused passes' order: L(c), R(c̄), then R(c), L(c̄).
  order = ([('left', False), ('right', True), ('right', False),
            ('left', True)] if len(table) == 4 else list(table))
  side_ids = {'left': paths.left, 'right': paths.right}
  ids = [side_ids[side](space, cbar if of_complement else c)
         for side, of_complement in order]
  return ids, [(order.index(s), 0) for s in table], True


def cross_entropy(logits: jax.Array, labels: jax.Array,
                  label_smoothing: float) -> jax.Array:
  """Mean over the batch axis (-2), in float32 or wider."""
  logits = logits.astype(jnp.promote_types(logits.dtype, jnp.float32))
  targets = optax.smooth_labels(
      jax.nn.one_hot(labels, logits.shape[-1], dtype=logits.dtype),
      label_smoothing)
  return jnp.mean(optax.softmax_cross_entropy(logits, targets), axis=-1)


def train_step(state: TrainState, batch: Batch,
               widths: jax.Array | None = None, *,
               model: layers.WidthModel, tx: optax.GradientTransformation,
               objective: str = 'bcnet', complementary: bool = True,
               implementation: str = 'fused', pass_by_pass: bool = False,
               label_smoothing: float = 0.0, dtype: Any = jnp.float32,
               seed: int = 0
               ) -> tuple[TrainState, dict[str, jax.Array]]:
  """One supernet (or compact model) step. `state` may be donated.

  Args:
    state: the train state (params and BN statistics stay float32).
    batch: {'image': [B, H, W, C], 'label': [B] int}.
    widths: [G] int32 bins, sampled on the host for this step; None for a
      compact model.
    model: the supernet (widths=None) or a compact model (objective and
      implementation then unused).
    tx: the optimizer.
    objective: 'bcnet' or 'ua'.
    complementary: also train c̄ (bcnet only).
    implementation: 'fused' or 'reference' (see module docstring).
    pass_by_pass: each pass's gradients before the next pass (less memory;
      module docstring).
    label_smoothing: for the cross-entropy.
    dtype: compute dtype of activations (float32 or bfloat16).
    seed: dropout randomness, folded with the step and pass.

  Returns:
    The new state and metrics: `path_losses` (per sub-network, order L(c),
    R(c), L(c̄), R(c̄); one for a compact model), `loss` (their mean),
    `objective` (what is minimized) and `grad_norm`.
  """
  compact = model.widths is not None
  if compact != (widths is None):
    raise ValueError('a supernet step takes a width vector; a compact '
                     'model step takes none')
  if compact:
    ids, select = [None], [(0, 0)]
  else:
    ids, select, single_path = passes(
        model.space, widths, objective=objective, complementary=complementary,
        implementation=implementation)
    model = model.clone(single_path=single_path, parent=None)
  images = batch['image'].astype(dtype)
  rng = jax.random.fold_in(jax.random.key(seed), state.step)
  # Bilateral objectives weigh each path ½; ua and compact steps have one.
  weight = 1.0 if len(select) == 1 else 0.5
  trained = [k for p, k in select if p == 0]  # the same paths in every pass
  assert all(sorted(k for p, k in select if p == i) == trained
             for i in range(len(ids))), select

  def pass_loss(params, stats, pass_ids, index):
    """A pass's share of the objective; its per-path CE and new stats."""
    (logits, _), new = model.apply(
        {'params': params, 'batch_stats': stats}, images, pass_ids,
        train=True, mutable=['batch_stats'],
        rngs={'dropout': jax.random.fold_in(rng, index)})
    if compact:
      logits = logits[None]  # [paths=1, B, K] like a supernet pass
    ce = cross_entropy(logits, batch['label'], label_smoothing)
    share = weight * sum(ce[k] for k in trained)
    return share, (ce, new['batch_stats'])

  if pass_by_pass:
    params, stats, value, ce, grads = (state.params, state.batch_stats, 0.0,
                                       [], None)
    for index, pass_ids in enumerate(ids):
      (share, (pass_ce, stats)), pass_grads = jax.value_and_grad(
          pass_loss, has_aux=True)(params, stats, pass_ids, index)
      ce.append(pass_ce)
      value += share
      grads = pass_grads if grads is None else jax.tree.map(
          jnp.add, grads, pass_grads)
      # The next pass reads the parameters through these gradients (+ 0 x
      # g: the same values), so it cannot start before this pass's backward
      # ends and frees its activations. Not lax.optimization_barrier: XLA:CPU
      # drops it before scheduling (measured: the same peak memory); nor a
      # lax.scan over passes (module docstring).
      params = jax.tree.map(lambda p, g: p + 0 * g, state.params, grads)
    ce = jnp.stack(ce)
  else:
    def loss_fn(params):
      stats, ce, value = state.batch_stats, [], 0.0
      for index, pass_ids in enumerate(ids):
        share, (pass_ce, stats) = pass_loss(params, stats, pass_ids, index)
        ce.append(pass_ce)
        value += share
      return value, (jnp.stack(ce), stats)

    (value, (ce, stats)), grads = jax.value_and_grad(
        loss_fn, has_aux=True)(state.params)
  path_losses = jnp.stack([ce[p][k] for p, k in select])
  updates, opt_state = tx.update(grads, state.opt_state, state.params)
  new_state = state.replace(
      step=state.step + 1, params=optax.apply_updates(state.params, updates),
      batch_stats=stats, opt_state=opt_state)
  if not compact:
    # Pool records: c (and c̄) with their bilateral loss; ua: c with ℓL(c).
    c = jnp.asarray(widths, jnp.int32)
    if objective == 'ua':
      record_losses = path_losses
    else:
      record_losses = path_losses.reshape(-1, 2).mean(axis=1)
    record_widths = jnp.stack([c, model.space.complement(c)]
                              )[:len(record_losses)]
    new_state = new_state.replace(
        pool=loss_pool.offer(state.pool, record_widths, record_losses))
  return new_state, {'loss': jnp.mean(path_losses), 'objective': value,
                     'path_losses': path_losses,
                     'grad_norm': optax.tree.norm(grads)}

