"""A retrained network, loaded without its config or the supernet.

A retrain workdir is the export (docs/design.md §6): its orbax checkpoints,
`arch.json` (the width vector), `input.json` (class names, channels,
preprocessing) and `model.jax_export`, the inference function serialized
by `jax.export` with a symbolic batch dimension, which runs with jax alone
on CPU or GPU. Both take preprocessed images (resized, normalized with
input.json's mean and std, float32 NHWC):

  model, variables, info = export.load(workdir)
  logits, _ = model.apply(variables, images, train=False)

  exported = jax.export.deserialize(open(path, 'rb').read())
  probabilities = exported.call(images)     # [batch, classes]
"""

from __future__ import annotations

import os
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections

from bcnet_jax import models
from bcnet_jax.learning import optim
from bcnet_jax.learning import state as state_lib
from bcnet_jax.models import layers
from bcnet_jax.run import checkpoint
from bcnet_jax.run import config_utils
from bcnet_jax.run import errors
from bcnet_jax.run import files
from bcnet_jax.run import identity as identity_lib

JAX_EXPORT = 'model.jax_export'
# model.jax_export runs on these, wherever it was trained.
PLATFORMS = ('cpu', 'cuda')


def load(workdir: str) -> tuple[layers.WidthModel, dict[str, Any],
                                dict[str, Any]]:
  """(compact model, {'params', 'batch_stats'}, info) of a retrain workdir.

  info: {'arch', 'classes', 'channels', 'augment', 'mean', 'std', 'step'}.
  The model takes preprocessed images (resized, normalized with info's mean
  and std, float32 NHWC). The latest checkpoint is verified as training
  verifies it, and must be of the arch in arch.json.
  """
  workdir = os.path.abspath(workdir)
  if not os.path.isdir(workdir):
    raise errors.MissingInput(f'no workdir {workdir}')
  arch_path = os.path.join(workdir, 'arch.json')
  if not os.path.exists(arch_path):
    raise errors.MissingInput(
        f'{workdir} has no arch.json: it is not a retrained network (a '
        'supernet workdir? retrain its search\'s arch first with '
        '--config.stage=retrain --config.retrain.arch=.../arch.json)')
  arch = files.read_json(arch_path)
  input_path = os.path.join(workdir, 'input.json')
  info = files.read_json(input_path)
  # Older exports also hold 'lowering', now chosen per platform (ops.py).
  fields = ('classes', 'channels', 'augment', 'mean', 'std')
  if not isinstance(info, dict) or set(fields) - set(info):
    raise errors.InvalidInput(
        f'{input_path} must be an object with {list(fields)}')
  ckpts = checkpoint.Checkpoints(workdir, {}, read_only=True)
  try:
    saved = ckpts.latest_identity()
    identity = identity_lib.flatten(saved or {})
    if identity.get('stage') != 'retrain':
      raise errors.InvalidInput(
          f'{workdir} holds no checkpoint of a retrain run')
    # A user's model is built as it was trained (config.model's options).
    options = config_utils.model_options(
        {f: identity.get(f'model.{f}', '')
         for f in ('kwargs', 'train_arg', 'fixed', 'round_to')})
    try:
      if not isinstance(arch, dict):
        raise ValueError('not an arch object')
      space = models.get_space(
          arch.get('model'), arch.get('bins'), arch.get('min_bins'),
          resolution=arch.get('resolution'), in_channels=info['channels'],
          **options)
      widths = space.widths_from_arch(arch)
    except (ValueError, TypeError) as e:
      raise errors.InvalidInput(f'{arch_path}: {e}') from None
    model = models.get_model(
        arch['model'], widths=widths, space=space,
        num_classes=len(info['classes']), in_channels=info['channels'],
        resolution=arch['resolution'], **options)
    _check_files_match(identity, arch, info, workdir)
    ckpts.identity = saved
    prefix = 'retrain.optim.'
    recipe = ml_collections.ConfigDict({
        k[len(prefix):]: v for k, v in identity.items()
        if k.startswith(prefix)})
    tx, _ = optim.create_optimizer(  # only its state's structure matters
        config_utils.optimizer_config(recipe, 1, 10**9), 10**9)
    target = jax.eval_shape(lambda: state_lib.compact_state(
        model, tx, jax.random.key(0)))
    state = ckpts.restore_latest(target)
  finally:
    ckpts.close()
  if state is None:
    raise errors.InvalidInput(f'{workdir} holds no readable checkpoint')
  variables = {'params': state.params, 'batch_stats': state.batch_stats}
  return model, variables, {**info, 'arch': arch, 'step': int(state.step)}


def _check_files_match(identity: dict[str, Any], arch: dict[str, Any],
                       info: dict[str, Any], workdir: str) -> None:
  """arch.json and input.json describe the network the checkpoint holds
  (`identity`: its flattened identity)."""
  widths = 'retrain.widths.'
  identity_lib.check(
      {'arch.json widths': {k[len(widths):]: v for k, v in identity.items()
                            if k.startswith(widths)},
       'arch.json model': identity.get('model.name'),
       'arch.json resolution': identity.get('input.resolution'),
       'input.json channels': identity.get('input.channels'),
       'input.json classes': identity.get('num_classes')},
      {'arch.json widths': arch['widths'],
       'arch.json model': arch['model'],
       'arch.json resolution': arch['resolution'],
       'input.json channels': info['channels'],
       'input.json classes': len(info['classes'])},
      saved_as='checkpoint', current_as='file',
      error=lambda details: errors.InvalidInput(
          f'{workdir}: the files do not describe the network its '
          f'checkpoint holds ({details}); restore them from the retrain run'))


def exported_inference(model: layers.WidthModel, variables: Any,
                       platforms: tuple[str, ...] = PLATFORMS
                       ) -> jax.export.Exported:
  """images -> class probabilities, batch size symbolic, lowered for each
  of `platforms` with its own ops (models/ops.py)."""
  def infer(images):
    logits, _ = model.apply(variables, images, train=False)
    return jax.nn.softmax(logits, axis=-1)

  batch, = jax.export.symbolic_shape('batch')
  shape = (batch, model.resolution, model.resolution, model.in_channels)
  return jax.export.export(jax.jit(infer), platforms=platforms)(
      jax.ShapeDtypeStruct(shape, jnp.float32))


def write_jax_export(workdir: str, model: layers.WidthModel,
                     variables: Any) -> str:
  """Serializes `exported_inference` into the workdir."""
  exported = exported_inference(model, variables)
  path = os.path.join(workdir, JAX_EXPORT)
  files.write_bytes_atomic(path, exported.serialize())
  return path
