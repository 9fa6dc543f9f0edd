"""The accuracy of a compact model (static widths) with its own BN
statistics: the retrain stage's evaluation, and the reference the batch
evaluator is tested against (supernet/evaluator.py compact_accuracy)."""

from __future__ import annotations

import functools
from typing import Any, Iterable

import jax
import jax.numpy as jnp

from bcnet_jax.models import layers
from bcnet_jax.run import errors


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
    raise errors.InvalidInput('the eval split has no examples to score on')
  return hits / total
