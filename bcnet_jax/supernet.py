"""A config's supernet run, built and checked before anything is written.

`Setup.create(config)` opens the data, builds the model and the optimizer
and raises ValueError / OSError naming what is wrong; only then do the
commands (train, evaluate, search, rank) create files. Also here:
the scores of the fixed width vectors and their table, which training and
`python -m bcnet_jax.evaluate` (`evaluate_workdir`, read-only) both print.

Synopsis:

  setup = supernet.Setup.create(config)
  state = setup.checkpoints(workdir).restore_latest(setup.initial_state())
  scores = supernet.evaluate_widths(setup, state)
  console.say(supernet.score_table(setup, scores))
"""

from __future__ import annotations

import dataclasses
import functools
import json
import os
from typing import Any, Callable

import jax
import jax.numpy as jnp
import optax

from bcnet_jax import checkpoint
from bcnet_jax import config_utils
from bcnet_jax import console
from bcnet_jax import evaluate
from bcnet_jax import models
from bcnet_jax import optim
from bcnet_jax import parallel
from bcnet_jax import retrain
from bcnet_jax import sampling
from bcnet_jax import state as state_lib
from bcnet_jax import steps
from bcnet_jax.costs import CostModel
from bcnet_jax.data import pipeline

# Host memory the search may fill with decoded scoring batches.
_CACHE_BYTES = 4 << 30
DTYPES = {'float32': jnp.float32, 'bfloat16': jnp.bfloat16}
EVAL_SPLITS = {'minival': 'minival (carved from the training split)',
               'eval': 'the eval split (input.eval_split)'}


@dataclasses.dataclass(frozen=True)
class Setup:
  """Everything a supernet run is made of."""
  config: Any
  mesh: jax.sharding.Mesh
  data: pipeline.Input
  model: models.WidthModel
  tx: optax.GradientTransformation
  schedule: Callable[[int], Any]
  total_steps: int
  eval_every: int | None
  arch: dict[str, Any] | None = None  # stage=retrain: the arch trained

  @property
  def compact(self) -> bool:
    """A retrain run: the compact model of `arch`, no width vectors."""
    return self.arch is not None

  @classmethod
  def create(cls, config: Any) -> Setup:
    """Raises ValueError / OSError naming what is wrong with the config,
    the data or the model; writes nothing."""
    if config.stage not in retrain.STAGES:
      raise ValueError(f'stage must be one of {list(retrain.STAGES)}, got '
                       f'{config.stage!r}')
    if config.supernet.dtype not in DTYPES:
      raise ValueError(f'supernet.dtype must be one of {list(DTYPES)}, got '
                       f'{config.supernet.dtype!r}')
    if config.eval.split not in EVAL_SPLITS:
      raise ValueError(f'eval.split must be one of {list(EVAL_SPLITS)}, got '
                       f'{config.eval.split!r}')
    sampling.check_objective(config.supernet.objective)
    if config.eval.split == 'minival' and config.input.minival_size < 1:
      raise ValueError('eval.split=minival needs input.minival_size >= 1 '
                       '(training examples held out to score widths on)')
    mesh = parallel.create_mesh()
    parallel.check_global_batch(config.input.batch_size, mesh)
    parallel.check_global_batch(config.input.eval_batch_size, mesh)
    data = pipeline.Input.create(config.input, seed=config.seed)
    data.check_calibration(config.eval.bn_calib_batches)
    spe = data.steps_per_epoch
    space = models.get_space(config.model.name, config.model.bins,
                             config.model.min_bins)
    model = models.get_model(
        config.model.name, space=space, num_classes=data.num_classes,
        in_channels=config.input.channels,
        resolution=config.input.resolution, lowering=config.model.lowering)
    arch = None
    if config.stage == 'retrain':
      arch, model = retrain.compact_model(config, model)
    recipe = config.retrain if arch else config
    section = 'retrain.' if arch else ''
    total_steps = config_utils.steps_from(recipe, 'total', spe, section)
    if total_steps is None:
      raise ValueError(f'set {section}total_epochs or {section}total_steps '
                       'in the config')
    tx, schedule = optim.create_optimizer(
        config_utils.optimizer_config(recipe.optim, spe), total_steps)
    return cls(config, mesh, data, model, tx, schedule, total_steps,
               config_utils.steps_from(config, 'eval_every', spe), arch)

  def initial_state(self) -> state_lib.TrainState:
    return parallel.create_state(functools.partial(
        state_lib.create_train_state, self.model, self.tx,
        jax.random.key(self.config.seed),
        pool_size=self.config.supernet.pool_size), self.mesh)

  def jit_train_step(self) -> Callable[..., Any]:
    """The step of the stage, jitted over the mesh: the supernet step of
    config.supernet, or the plain step of the compact model."""
    c = self.config
    if self.compact:
      return parallel.jit_train_step(functools.partial(
          steps.train_step, model=self.model, tx=self.tx,
          label_smoothing=c.retrain.label_smoothing,
          dtype=DTYPES[c.supernet.dtype], seed=c.seed), self.mesh,
                                     num_replicated_args=0)
    return parallel.jit_train_step(functools.partial(
        steps.train_step, model=self.model, tx=self.tx,
        objective=c.supernet.objective,
        complementary=c.supernet.complementary,
        implementation=c.supernet.implementation,
        pass_by_pass=c.supernet.pass_by_pass,
        label_smoothing=c.supernet.label_smoothing,
        dtype=DTYPES[c.supernet.dtype], seed=c.seed), self.mesh)

  def step_args(self, step: int) -> tuple[Any, ...]:
    """What the train step takes besides state and batch: the width
    vector of `step` (none for a compact model)."""
    if self.compact:
      return ()
    return (sampling.widths_for_step(self.model.space, self.config.seed,
                                     step),)

  def checkpoints(self, workdir: str, *, read_only: bool = False
                  ) -> checkpoint.Checkpoints:
    if self.compact:  # the arch and its recipe make the run
      identity = checkpoint.identity(self.config, self.data.num_classes,
                                     checkpoint.RETRAIN_IDENTITY_FIELDS)
      identity.update(json.loads(json.dumps({
          'stage': 'retrain', 'retrain.widths': self.arch['widths'],
          'retrain.optim': self.config.retrain.optim.to_dict(),
          'retrain.label_smoothing': self.config.retrain.label_smoothing})))
    else:
      identity = checkpoint.identity(self.config, self.data.num_classes)
    return checkpoint.Checkpoints(workdir, identity,
                                  self.config.keep_checkpoints,
                                  read_only=read_only)

  def evaluate(self, state, *, final: bool,
               status: Callable[[str], None] = lambda _: None
               ) -> dict[str, float]:
    """The stage's evaluation: the fixed width vectors' recalibrated
    scores on eval.split (supernet); the compact model's top-1 on eval.split
    and, at the end, on the test split (retrain)."""
    if not self.compact:
      return evaluate_widths(self, state, status=status)
    config, mesh = self.config, self.mesh
    splits = [config.eval.split] + (['eval'] if final and
                                    config.eval.split != 'eval' else [])
    out = {}
    for split in splits:
      status(f'evaluating on {EVAL_SPLITS[split]}')
      batches = (parallel.global_batch(b, mesh)
                 for b in self.data.eval_batches(split))
      name = config.input.eval_split if split == 'eval' else split
      out[f'eval/{name}/accuracy'] = evaluate.accuracy(
          self.model, {'params': state.params,
                       'batch_stats': state.batch_stats}, batches)
    return out

  @property
  def scored_sides(self) -> tuple[str, ...]:
    """The paths this supernet trains, and so is scored by: both for
    BCNet, the left one alone for a unilateral (`ua`) supernet."""
    return evaluate.trained_sides(self.config.supernet.objective)

  def evaluator(self) -> evaluate.Evaluator:
    """The batch evaluator of this supernet on its mesh."""
    return evaluate.Evaluator(self.model, self.mesh,
                              self.config.eval.candidates_per_call,
                              self.scored_sides)

  def scoring_data(self, *, cached: bool = False
                   ) -> tuple[evaluate.Batches, evaluate.Batches]:
    """Callables returning fresh iterables of the BN-calibration and the
    eval.split batches on the mesh. `cached`: decoded once and kept in host
    memory, for the search's thousands of paths, if they fit in
    _CACHE_BYTES (ImageNet's are read again for every call)."""
    config, data, mesh = self.config, self.data, self.mesh
    examples = (config.eval.bn_calib_batches * config.input.batch_size +
                (len(data.minival_indices) if config.eval.split == 'minival'
                 else len(data.eval_source)))
    cached = cached and examples * 4 * config.input.channels * (
        config.input.resolution ** 2) <= _CACHE_BYTES * jax.process_count()

    def calibration():
      return data.calibration_batches(config.eval.bn_calib_batches)

    def eval_batches():
      return data.eval_batches(config.eval.split)

    def on_mesh(read):
      host = functools.cache(lambda: list(read())) if cached else read
      return lambda: (parallel.global_batch(b, mesh) for b in host())

    return on_mesh(calibration), on_mesh(eval_batches)

  def fixed_widths(self) -> dict[str, Any]:
    return evaluate.fixed_widths(self.model.space,
                                 self.config.eval.num_random,
                                 self.config.seed)


def check_workdir(workdir: str) -> str:
  """The absolute workdir; an existing non-directory is an error."""
  workdir = os.path.abspath(workdir)
  if os.path.exists(workdir) and not os.path.isdir(workdir):
    raise NotADirectoryError(
        f'--workdir {workdir} exists and is not a directory: give a directory '
        '(it is created if missing; reuse it to resume)')
  return workdir


def evaluate_widths(setup: Setup, state, widths: dict[str, Any] | None = None,
                    *, status: Callable[[str], None] = lambda _: None
                    ) -> dict[str, float]:
  """Recalibrated scores (docs/design.md §4) of `widths` (default: the
  fixed width vectors) on config.eval.split, as `eval/<name>/<side>` for
  the scored sides and `eval/<name>/score`."""
  widths = setup.fixed_widths() if widths is None else widths
  names = list(widths)
  calibration, eval_batches = setup.scoring_data()

  def progress(done: int, total: int) -> None:
    if done < total:
      status(f'evaluating {names[done]}... ({done + 1}/{total})')

  result = setup.evaluator().score(
      state.params, state.batch_stats, [widths[n] for n in names],
      calibration=calibration, eval_batches=eval_batches, status=progress)
  return {f'eval/{name}/{key}': float(result[key][i])
          for i, name in enumerate(names)
          for key in result['sides'] + ('score',)}


def score_table(setup: Setup, scores: dict[str, float],
                widths: dict[str, Any] | None = None, step: int | None = None
                ) -> str:
  """The scores of evaluate_widths as a table a reader understands."""
  space = setup.model.space
  costs = CostModel(setup.model)
  widths = setup.fixed_widths() if widths is None else widths
  names = {'smallest': f'smallest ({space.min_bins} of {space.bins} bins '
                       'per group)',
           'full': f'full ({space.bins} of {space.bins} bins: the nominal '
                   'network)'}
  rows = []
  for name, c in widths.items():
    label = names.get(name, f'{name} (drawn uniformly, fixed by the seed)'
                      if name.startswith('random') else name)
    rows.append([label, f'{costs.macs(c) / 1e6:,.1f}M'] +
                [f'{scores[f"eval/{name}/{k}"]:.3f}'
                 if f'eval/{name}/{k}' in scores else '-'
                 for k in ('left', 'right', 'score')])
  after = '' if step is None else f' after {step} steps'
  chance = 1 / setup.data.num_classes
  return (f'Accuracy on {EVAL_SPLITS[setup.config.eval.split]}{after}, '
          f'BatchNorm recalibrated per path;\n{score_definition(setup)} '
          f'(chance {chance:.2f}):\n' +
          console.table(['width vector', 'MACs', 'left', 'right', 'score'],
                        rows))


def score_definition(setup: Setup) -> str:
  """What a score of this supernet averages, in words."""
  if setup.scored_sides == evaluate.SIDES:
    return 'score = mean of the left and right paths\' accuracy'
  return ('score = the left path\'s accuracy (a unilateral supernet trains '
          'only its left path)')


def restore_trained(setup: Setup, workdir: str) -> state_lib.TrainState:
  """The latest supernet checkpoint of `workdir`, read-only; none is an
  error saying to train first."""
  if setup.compact:
    raise ValueError('stage=retrain: a retrained network is scored by '
                     'training and used with bcnet_jax.predict / export; '
                     'evaluate, search and rank read a supernet')
  state = None
  if os.path.isdir(os.path.join(workdir, 'checkpoints')):
    checkpoints = setup.checkpoints(workdir, read_only=True)
    try:
      state = checkpoints.restore_latest(setup.initial_state())
    finally:
      checkpoints.close()
  if state is None:
    raise FileNotFoundError(
        f'no readable supernet checkpoint in {workdir}: train one first with '
        f'python -m bcnet_jax.train --config=... --workdir={workdir}')
  return state


def evaluate_workdir(config: Any, workdir: str,
                     widths: dict[str, Any] | None = None) -> dict[str, Any]:
  """Scores of the latest supernet checkpoint in `workdir`; writes nothing.

  Args:
    config: the config the run was trained with.
    workdir: the run's directory.
    widths: {name: width vector}; default: the fixed width vectors.

  Returns:
    {'step', 'split', 'widths', 'eval/<name>/<left|right|score>'...}.
  """
  workdir = check_workdir(workdir)
  setup = Setup.create(config)
  state = restore_trained(setup, workdir)
  widths = setup.fixed_widths() if widths is None else widths
  step = int(state.step)
  console.say(f'bcnet_jax.evaluate: {config.model.name} supernet of step '
              f'{step} in {workdir}')
  scores = evaluate_widths(setup, state, widths, status=console.say)
  console.say(score_table(setup, scores, widths, step))
  return {'step': step, 'split': config.eval.split,
          'widths': {k: [int(w) for w in v] for k, v in widths.items()},
          **scores}
