"""A retrained network, loaded without its config or the supernet.

A retrain workdir is the export (docs/design.md §6): its orbax checkpoints,
`arch.json` (the width vector), `input.json` (class names, channels,
preprocessing) and `model.jax_export`, the inference function serialized
by `jax.export` with a symbolic batch dimension, which runs with jax alone:

  model, variables, info = export.load(workdir)
  logits, _ = model.apply(variables, images, train=False)

  exported = jax.export.deserialize(open(path, 'rb').read())
  probabilities = exported.call(images)     # [batch, classes]
"""

from __future__ import annotations

import json
import os
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections

from bcnet_jax import checkpoint
from bcnet_jax import config_utils
from bcnet_jax import files
from bcnet_jax import models
from bcnet_jax import optim
from bcnet_jax import space as space_lib
from bcnet_jax import state as state_lib
from bcnet_jax.models import layers

JAX_EXPORT = 'model.jax_export'


def _read_json(path: str) -> Any:
  try:
    with open(path) as f:
      return json.load(f)
  except json.JSONDecodeError as e:
    raise ValueError(f'{path} is not valid JSON: {e}') from None


def load(workdir: str) -> tuple[layers.WidthModel, dict[str, Any],
                                dict[str, Any]]:
  """(compact model, {'params', 'batch_stats'}, info) of a retrain workdir.

  info: {'arch', 'classes', 'channels', 'augment', 'mean', 'std', 'step'}.
  The latest checkpoint is verified as training verifies it.
  """
  workdir = os.path.abspath(workdir)
  if not os.path.isdir(workdir):
    raise FileNotFoundError(f'no workdir {workdir}')
  arch_path = os.path.join(workdir, 'arch.json')
  if not os.path.exists(arch_path):
    raise FileNotFoundError(
        f'{workdir} has no arch.json: it is not a retrained network (a '
        'supernet workdir? retrain its search\'s arch first with '
        '--config.stage=retrain --config.retrain.arch=.../arch.json)')
  arch = space_lib.read_arch(arch_path)
  info = _read_json(os.path.join(workdir, 'input.json'))
  space = models.get_space(arch.get('model'), arch.get('bins'),
                           arch.get('min_bins'))
  widths = space.widths_from_arch(arch)
  model = models.get_model(
      arch['model'], widths=widths, space=space,
      num_classes=len(info['classes']), in_channels=info['channels'],
      resolution=arch['resolution'], lowering=info['lowering'])
  ckpts = checkpoint.Checkpoints(workdir, {}, read_only=True)
  try:
    identity = ckpts.latest_identity()
    if identity is None or identity.get('stage') != 'retrain':
      raise ValueError(f'{workdir} holds no checkpoint of a retrain run')
    ckpts.identity = identity
    recipe = ml_collections.ConfigDict(identity['retrain.optim'])
    tx, _ = optim.create_optimizer(  # only its state's structure matters
        config_utils.optimizer_config(recipe, 1), 10**9)
    target = jax.eval_shape(lambda: state_lib.create_train_state(
        model, tx, jax.random.key(0)))
    state = ckpts.restore_latest(target)
  finally:
    ckpts.close()
  if state is None:
    raise ValueError(f'{workdir} holds no readable checkpoint')
  variables = {'params': state.params, 'batch_stats': state.batch_stats}
  return model, variables, {**info, 'arch': arch, 'step': int(state.step)}


def write_jax_export(workdir: str, model: layers.WidthModel,
                     variables: Any) -> str:
  """Serializes images -> class probabilities, batch size symbolic."""
  def infer(images):
    logits, _ = model.apply(variables, images, train=False)
    return jax.nn.softmax(logits, axis=-1)

  batch, = jax.export.symbolic_shape('batch')
  shape = (batch, model.resolution, model.resolution, model.in_channels)
  exported = jax.export.export(jax.jit(infer))(
      jax.ShapeDtypeStruct(shape, jnp.float32))
  path = os.path.join(workdir, JAX_EXPORT)
  files.write_bytes_atomic(path, exported.serialize())
  return path
