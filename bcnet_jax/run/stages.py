"""What a training run is made of, whatever its stage (docs/design.md §6).

A config's `stage` picks the run: 'supernet' (bcnet_jax/supernet/stage.py)
trains the BCNet supernet, 'retrain' (bcnet_jax/retrain/stage.py) the
compact network of a searched arch; bcnet_jax/training.py picks. Each stage
has its own setup type; both are `Stage`s, the protocol the training
program (bcnet_jax/run/program.py) runs, and both are built by
`Basics.create` first: the config checked, the mesh, the data and the
supernet of the config's model, before any file is written. Also here:
DATA_FIELDS, the part of every stage's identity that decides its examples.
"""

from __future__ import annotations

import dataclasses
import functools
import os
from typing import Any, Callable, Protocol

import jax
import jax.numpy as jnp
import optax

from bcnet_jax import models
from bcnet_jax.learning import optim
from bcnet_jax.run import checkpoint
from bcnet_jax.run import config_utils
from bcnet_jax.run import errors
from bcnet_jax.run import identity as identity_lib
from bcnet_jax.run import parallel
from bcnet_jax.run.data import pipeline
from bcnet_jax.run.data import train_feed
from bcnet_jax.space import sampling

STAGES = ('supernet', 'retrain')
DTYPES = {'float32': jnp.float32, 'bfloat16': jnp.bfloat16}
# What decides which examples a run trains on, how they look, and which it
# holds out (minival, carved with the seed): part of every stage's identity,
# so no later stage can score on images its supernet was trained on.
DATA_FIELDS = ('seed', 'input.source', 'input.name', 'input.train_split',
               'input.minival_size', 'input.channels', 'input.resolution',
               'input.batch_size', 'input.augment', 'input.mean', 'input.std')
EVAL_SPLITS = {'minival': 'minival (carved from the training split)',
               'eval': 'the eval split (input.eval_split)'}


def check_config(config: Any) -> None:
  """The fields every stage reads, checked before anything is built."""
  for field, value, allowed in (
      ('stage', config.stage, STAGES),
      ('supernet.dtype', config.supernet.dtype, tuple(DTYPES)),
      ('eval.split', config.eval.split, tuple(EVAL_SPLITS))):
    if value not in allowed:
      raise errors.InvalidInput(f'{field} must be one of {list(allowed)}, '
                                f'got {value!r}')
  sampling.check_objective(config.supernet.objective)
  for field in ('log_every_steps', 'ckpt_every_steps'):
    if config[field] < 1:
      raise errors.InvalidInput(f'{field}={config[field]} must be >= 1')
  channels = config.input.channels
  if not len(config.input.mean) == len(config.input.std) == channels:
    raise errors.InvalidInput(
        f'input.mean and input.std need one value per channel '
        f'(input.channels={channels}), got {len(config.input.mean)} and '
        f'{len(config.input.std)}')
  for fields in config_utils.EXCLUSIVE:
    given = [name for name in fields
             if config_utils.field(config, name) is not None]
    if len(given) > 1:
      raise errors.InvalidInput(
          f'set one of {", ".join(fields)}, not {" and ".join(given)} '
          f'(unset one with --config.{given[-1]}=None)')
  if config.eval.split == 'minival' and config.input.minival_size < 1:
    raise errors.InvalidInput(
        'eval.split=minival needs input.minival_size >= 1 (training examples '
        'held out to score widths on)')


@dataclasses.dataclass(frozen=True)
class Basics:
  """The config, checked; its mesh, data and the supernet of its model."""
  config: Any
  mesh: jax.sharding.Mesh
  data: pipeline.Input
  supernet: models.WidthModel

  @classmethod
  def create(cls, config: Any) -> Basics:
    """Raises errors.UserError naming what is wrong; writes nothing."""
    check_config(config)
    mesh = parallel.create_mesh()
    parallel.check_global_batch(config.input.batch_size, mesh)
    parallel.check_global_batch(config.input.eval_batch_size, mesh)
    data = pipeline.Input.create(config.input, seed=config.seed)
    data.check_calibration(config.eval.bn_calib_batches)
    return cls(config, mesh, data, supernet_of(config, data.num_classes))


def supernet_of(config: Any, num_classes: int) -> models.WidthModel:
  """The config's model (a supernet) with `num_classes` outputs."""
  options = dict(config_utils.model_options(config.model),
                 in_channels=config.input.channels,
                 resolution=config.input.resolution)
  space = models.get_space(config.model.name, config.model.bins,
                           config.model.min_bins, **options)
  model = models.get_model(config.model.name, space=space,
                           num_classes=num_classes, **options)
  if models.is_traced(config.model.name) and (
      config.supernet.dtype != 'float32'):
    raise errors.InvalidInput(
        f'supernet.dtype={config.supernet.dtype!r}: a traced model '
        'computes in the dtypes its own layers set (e.g. nn.Conv(..., '
        "dtype=jnp.bfloat16)); leave supernet.dtype at 'float32'")
  return model


@dataclasses.dataclass(frozen=True)
class Fields:
  """What every stage's setup holds: the run's pieces and its schedule."""
  config: Any
  mesh: jax.sharding.Mesh
  data: pipeline.Input
  model: models.WidthModel  # the supernet, or the retrained compact model
  tx: optax.GradientTransformation
  schedule: Callable[[int], Any]
  total_steps: int
  eval_every: int | None

  def identity_of(self, fields: tuple[str, ...], **extra: Any
                  ) -> dict[str, Any]:
    """A stage's identity: config `fields`, what the data holds (its
    classes; its training examples, which minival is carved from: another
    count carves another minival) and `extra`."""
    return identity_lib.of_config(
        self.config, fields, num_classes=self.data.num_classes,
        **{'input.train_examples': len(self.data.train_source)}, **extra)

  @functools.cached_property
  def feed(self) -> train_feed.Feed:
    """How training batches reach the step (the device feed decodes the
    training split on its first use)."""
    return train_feed.create(self.data, self.config.input, self.mesh,
                             seed=self.config.seed)

  def state_on_mesh(self, create: Callable[[], Any]) -> Any:
    """The state `create` makes, created where it lives on the mesh."""
    return parallel.create_state(create, self.mesh)


def schedule_steps(config: Any, durations: Any, optimizer: Any,
                   section: str, steps_per_epoch: int
                   ) -> tuple[Any, Any, int, int | None]:
  """(optimizer, schedule, total steps, eval_every) of a stage whose run
  lasts `durations`' total_steps or total_epochs and trains with the
  `optimizer` config; `section` ('retrain.') names them in errors."""
  total_steps = config_utils.steps_from(durations, 'total', steps_per_epoch)
  if total_steps is None:
    raise errors.InvalidInput(f'set {section}total_epochs or {section}'
                              'total_steps in the config')
  tx, schedule = optim.create_optimizer(
      config_utils.optimizer_config(optimizer, steps_per_epoch,
                                    total_steps, section), total_steps)
  return (tx, schedule, total_steps,
          config_utils.steps_from(config, 'eval_every', steps_per_epoch))


class Stage(Protocol):
  """What the train program needs of a stage's setup (besides Fields)."""
  config: Any
  mesh: jax.sharding.Mesh
  data: pipeline.Input
  model: models.WidthModel
  schedule: Callable[[int], Any]
  total_steps: int
  eval_every: int | None

  def describe(self) -> str:
    """The run in one line, for the announcement."""

  def initial_state(self) -> Any:
    """The train state of step 0, on the mesh."""

  def jit_train_step(self) -> Callable[..., Any]:
    """step(state, batch, *step_args(step)) -> (state, metrics), jitted."""

  def step_args(self, step: int) -> tuple[Any, ...]:
    """What the step takes besides state and batch."""

  def identity(self) -> dict[str, Any]:
    """What checkpoints must agree on to be resumed by this run."""

  def evaluate(self, state: Any, *, final: bool,
               status: Callable[[str], None]) -> dict[str, float]:
    """The stage's evaluation, as 'eval/...' metrics."""

  def prepare(self, workdir: str) -> None:
    """Files written before training (process 0)."""

  def finish(self, workdir: str, state: Any,
             status: Callable[[str], None]) -> None:
    """Files written after the final evaluation (process 0)."""

  def summary_fields(self, state: Any) -> dict[str, Any]:
    """What summary.json says of this stage."""

  def table(self, summary: dict[str, Any]) -> str:
    """The final table."""

  def written(self) -> tuple[tuple[str, str], ...]:
    """(file, what) the stage writes besides the common ones."""


def checkpoints(stage: Stage, workdir: str, *, read_only: bool = False
                ) -> checkpoint.Checkpoints:
  """The checkpoints of `stage` in `workdir`, checked for its identity."""
  return checkpoint.Checkpoints(workdir, stage.identity(),
                                stage.config.keep_checkpoints,
                                read_only=read_only)


def check_workdir(workdir: str, *, writable: bool = False) -> str:
  """The absolute workdir; an existing non-directory is an error, and so
  is, if `writable`, a directory (or its nearest existing parent) this
  process cannot write to."""
  workdir = os.path.abspath(workdir)
  if os.path.exists(workdir) and not os.path.isdir(workdir):
    raise errors.NotADirectoryInput(
        f'--workdir {workdir} exists and is not a directory: give a directory '
        '(it is created if missing; reuse it to resume)')
  existing = workdir
  while not os.path.exists(existing):
    existing = os.path.dirname(existing)
  if writable and not os.access(existing, os.W_OK | os.X_OK):
    raise errors.InvalidInput(f'--workdir {workdir}: {existing} is not '
                              'writable; give a directory you can write to')
  return workdir
