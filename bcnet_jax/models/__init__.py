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
"""

from __future__ import annotations

import dataclasses
from typing import Any, Sequence

from bcnet_jax.models import cbm
from bcnet_jax.models import efficientnet
from bcnet_jax.models import layers
from bcnet_jax.models import mobilenet_v2
from bcnet_jax.models import resnet
from bcnet_jax.models import resnet_cifar
from bcnet_jax.models import vgg
from bcnet_jax.run import errors
from bcnet_jax.space import search_space as space_lib

WidthModel = layers.WidthModel


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


def _spec(name: str) -> ModelSpec:
  if name not in MODELS:
    raise errors.InvalidInput(f'unknown model {name!r}; choose one of '
                              f'{", ".join(MODELS)}')
  return MODELS[name]


def get_space(name: str, bins: int | None = None,
              min_bins: int | None = None) -> space_lib.SearchSpace:
  """The search space of model `name` (its default B and m unless given)."""
  spec = _spec(name)
  return space_lib.SearchSpace.build(
      name, spec.groups, spec.derived,
      bins=spec.bins if bins is None else bins,
      min_bins=spec.min_bins if min_bins is None else min_bins)


def get_model(name: str, *, widths: Any = None,
              space: space_lib.SearchSpace | None = None,
              num_classes: int | None = None, in_channels: int = 3,
              resolution: int | None = None,
              **kwargs: Any) -> layers.WidthModel:
  """Builds model `name`: the supernet, or a compact model if `widths` given.

  Args:
    name: a key of MODELS.
    widths: bins per group (validated) for a compact model; None: supernet.
    space: the search space (default: `get_space(name)`).
    num_classes: classifier outputs (default: the dataset the model is for).
    in_channels: channels of the input image.
    resolution: input size (default: the model's standard resolution).
    **kwargs: model-specific attributes (e.g. dropout_rate).
  """
  spec = _spec(name)
  space = get_space(name) if space is None else space
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


def compact_like(model: layers.WidthModel, widths: Any) -> layers.WidthModel:
  """The compact model of `widths` with every other attribute of `model`."""
  widths = tuple(int(w) for w in model.space.validate_widths(widths))
  return model.clone(widths=widths, parent=None)
