"""Model registry: name -> width-aware linen model and its search space.

Synopsis:

  from bcnet_jax import models
  supernet = models.get_model('resnet20_cifar')             # supernet mode
  ids = paths.pair(supernet.space, c)                       # traced widths
  variables = supernet.init(key, supernet.dummy_input(2), ids, train=False)
  logits, aux = supernet.apply(variables, x, ids, train=False)  # [2, B, K]
  compact = models.compact_like(supernet, c)                # sliced kernels
  compact.apply(slicing.slice_params(supernet, variables, c, 'left'), x,
                train=False)                                # == logits[0]

Your own Flax CNN (linen or NNX) is a model too, its groups found by
tracing (traced.py): by import path, `get_model('my_pkg.nets:MyCNN')`
(a Module class built with the model's kwargs, or a function returning a
module), or by a name given to `register('my_cnn', MyCNN)`.
"""

from __future__ import annotations

import dataclasses
import functools
import importlib
from typing import Any, Callable, Sequence

from bcnet_jax.models import cbm
from bcnet_jax.models import efficientnet
from bcnet_jax.models import layers
from bcnet_jax.models import layout
from bcnet_jax.models import mobilenet_v2
from bcnet_jax.models import resnet
from bcnet_jax.models import resnet_cifar
from bcnet_jax.models import traced
from bcnet_jax.models import vgg
from bcnet_jax.run import errors
from bcnet_jax.space import search_space as space_lib

WidthModel = layers.WidthModel
TracedModel = traced.TracedModel
from_flax = traced.from_flax


@dataclasses.dataclass(frozen=True)
class ModelSpec:
  """What the registry knows about one model."""
  module: type[layers.WidthModel]
  groups: Sequence[tuple[str, int]]
  resolution: int
  num_classes: int
  derived: Sequence[tuple[str, str, int]] = ()
  bins: int = space_lib.DEFAULT_BINS
  min_bins: int = space_lib.DEFAULT_MIN_BINS
  kwargs: tuple[tuple[str, Any], ...] = ()


MODELS: dict[str, ModelSpec] = {
    'resnet20_cifar': ModelSpec(
        resnet_cifar.ResNetCifar, resnet_cifar.groups(20), 32, 10,
        kwargs=(('depth', 20),)),
    'resnet56_cifar': ModelSpec(
        resnet_cifar.ResNetCifar, resnet_cifar.groups(56), 32, 10,
        kwargs=(('depth', 56),)),
    'vgg16_cifar': ModelSpec(vgg.VGG16Cifar, vgg.groups(), 32, 10),
    'mobilenetv2_cifar': ModelSpec(
        mobilenet_v2.MobileNetV2, mobilenet_v2.groups(), 32, 10,
        kwargs=(('strides', mobilenet_v2.CIFAR_STRIDES), ('stem_strides', 1))),
    'mobilenetv2': ModelSpec(
        mobilenet_v2.MobileNetV2, mobilenet_v2.groups(), 224, 1000),
    'resnet50': ModelSpec(resnet.ResNet50, resnet.groups(), 224, 1000),
    'efficientnet_b0': ModelSpec(
        efficientnet.EfficientNetB0, efficientnet.groups(), 224, 1000,
        derived=efficientnet.derived_dims()),
    'cbm_mobilenet': ModelSpec(cbm.CbmMobileNet, cbm.mobilenet_groups(), 32,
                               10, bins=4),
    'cbm_resnet': ModelSpec(cbm.CbmResNet, cbm.resnet_groups(), 32, 10,
                            bins=4),
}


# Models of their users: name -> a Flax Module class or a function that
# returns a module (register); import paths need no registering.
USER_MODELS: dict[str, Callable[..., Any]] = {}


def register(name: str, factory: Callable[..., Any]) -> None:
  """Makes `factory` (a linen/NNX Module class, built with the model's
  kwargs, or a function returning a module) the model `name`."""
  if name in MODELS:
    raise errors.InvalidInput(f'{name!r} is a built-in model')
  USER_MODELS[name] = factory


def is_traced(name: str) -> bool:
  """Whether `name` is a user's model (registered or an import path)."""
  return name not in MODELS and (name in USER_MODELS or ':' in str(name))


def _spec(name: str) -> ModelSpec:
  if name not in MODELS:
    raise errors.InvalidInput(
        f'unknown model {name!r}; choose one of {", ".join(MODELS)}, a '
        'registered one (models.register) or your own Flax module as '
        'PACKAGE.MODULE:ATTR')
  return MODELS[name]


def _factory(name: str) -> Callable[..., Any]:
  if name in USER_MODELS:
    return USER_MODELS[name]
  module_name, _, attr = str(name).partition(':')
  try:
    module = importlib.import_module(module_name)
  except ImportError as e:
    raise errors.InvalidInput(
        f'model {name!r}: cannot import {module_name!r} ({e}); is its '
        'package on PYTHONPATH?') from None
  if not hasattr(module, attr):
    raise errors.InvalidInput(f'model {name!r}: {module_name} has no {attr!r}')
  return getattr(module, attr)


def user_module(name: str, kwargs: dict[str, Any]) -> Any:
  """The user's module of model `name`, built with `kwargs`."""
  factory = _factory(name)
  try:
    module = factory(**kwargs)
  except TypeError as e:
    raise errors.InvalidInput(
        f'model {name!r}: building it with kwargs {kwargs} failed: {e} '
        '(set --config.model.kwargs to a JSON object of its arguments)'
    ) from None
  return module


@functools.lru_cache(maxsize=32)
def _structure(name: str, kwargs: tuple[tuple[str, Any], ...],
               image_shape: tuple[int, int, int], train_arg: str,
               fixed: tuple[str, ...]) -> traced.Structure:
  return traced.Structure(user_module(name, dict(kwargs)), image_shape,
                          train_arg=train_arg or None, fixed=fixed)


def _hashable(value: Any) -> Any:
  """JSON lists as tuples (Flax module attributes are hashable)."""
  if isinstance(value, (list, tuple)):
    return tuple(_hashable(v) for v in value)
  return value


def _traced(name, resolution, in_channels, train_arg, fixed, kwargs):
  key = tuple(sorted((k, _hashable(v)) for k, v in kwargs.items()))
  try:
    hash(key)
  except TypeError:
    raise errors.InvalidInput(
        f'model {name!r}: its kwargs must be numbers, strings, booleans or '
        f'lists of them, got {kwargs}') from None
  return _structure(name, key, (resolution or 32, resolution or 32,
                                in_channels), train_arg or '', tuple(fixed))


def get_space(name: str, bins: int | None = None,
              min_bins: int | None = None, *, resolution: int | None = None,
              in_channels: int = 3, train_arg: str = '',
              fixed: Sequence[str] = (), kwargs: dict[str, Any] | None = None,
              round_to: int = 1) -> space_lib.SearchSpace:
  """The search space of model `name` (its default B and m unless given).

  A user's model is traced at `resolution` (default 32) with
  `in_channels`, built with `kwargs`; `train_arg` and `fixed` as in
  traced.from_flax; channel counts rounded to multiples of `round_to`
  (search_space.channel_edges).
  """
  if is_traced(name):
    return _traced(name, resolution, in_channels, train_arg, fixed,
                   kwargs or {}).space(name, bins, min_bins, round_to)
  spec = _spec(name)
  return space_lib.SearchSpace.build(
      name, spec.groups, spec.derived,
      bins=spec.bins if bins is None else bins,
      min_bins=spec.min_bins if min_bins is None else min_bins,
      round_to=round_to)


def get_model(name: str, *, widths: Any = None,
              space: space_lib.SearchSpace | None = None,
              num_classes: int | None = None, in_channels: int = 3,
              resolution: int | None = None, train_arg: str = '',
              fixed: Sequence[str] = (), kwargs: dict[str, Any] | None = None,
              round_to: int = 1,
              **attributes: Any) -> layers.WidthModel | traced.TracedModel:
  """Builds model `name`: the supernet, or a compact model if `widths` given.

  Args:
    name: a key of MODELS.
    widths: bins per group (validated) for a compact model; None: supernet.
    space: the search space (default: `get_space(name)`).
    num_classes: classifier outputs (default: the dataset the model is for).
    in_channels: channels of the input image.
    resolution: input size (default: the model's standard resolution).
    train_arg, fixed: a user's model's (traced.from_flax).
    kwargs: config.model.kwargs: a user's model is built with them, a
      built-in model takes them as attributes.
    **attributes: a built-in model's attributes (e.g. dropout_rate).
  """
  kwargs = {**(kwargs or {}), **attributes}
  if is_traced(name):
    structure = _traced(name, resolution, in_channels, train_arg, fixed,
                        kwargs)
    model = traced.TracedModel(
        structure,
        structure.space(name, round_to=round_to) if space is None else space,
        num_classes=structure.num_classes, in_channels=in_channels,
        resolution=resolution or 32)
    if num_classes is not None and num_classes != model.num_classes:
      raise errors.InvalidInput(
          f'model {name!r} outputs {model.num_classes} classes; the data '
          f'has {num_classes}')
    if model.space.model != name:
      raise ValueError(f'space is for {model.space.model!r}, not {name!r}')
    if widths is not None:
      model = model.clone(widths=tuple(
          int(w) for w in model.space.validate_widths(widths)))
    return model
  spec = _spec(name)
  space = get_space(name, round_to=round_to) if space is None else space
  if space.model != name:
    raise ValueError(f'space is for {space.model!r}, not {name!r}')
  if widths is not None:
    widths = tuple(int(w) for w in space.validate_widths(widths))
  return spec.module(
      space=space, widths=widths,
      num_classes=spec.num_classes if num_classes is None else num_classes,
      in_channels=in_channels,
      resolution=spec.resolution if resolution is None else resolution,
      **{**dict(spec.kwargs), **kwargs})


def compact_like(model: Any, widths: Any) -> Any:
  """The compact model of `widths` with every other attribute of `model`."""
  widths = tuple(int(w) for w in model.space.validate_widths(widths))
  return model.clone(widths=widths, parent=None)


def members(model: Any) -> dict[str, list[str]]:
  """Dim -> the layers (built-in) or parameters (traced) its channels run
  along, a kernel's input axis marked '(in)'."""
  if hasattr(model, 'members'):
    return model.members()
  out = {d.name: [] for d in model.space.dims}
  for layer in layout.layer_table(model):
    path = '/'.join(layer.path)
    if layer.out_dim is not None:
      out[layer.out_dim].append(path)
    if layer.in_dim is not None and layer.kind in ('conv', 'dense'):
      out[layer.in_dim].append(path + ' (in)')
  return out
