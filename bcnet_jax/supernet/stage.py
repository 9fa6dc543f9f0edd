"""The supernet stage: a config's supernet run, built and checked before
anything is written.

`Setup.create(config)` opens the data, builds the model and the optimizer
and raises errors.UserError naming what is wrong; only then do the
commands (train, evaluate, search, rank) create files. Also here:
the scores of the fixed width vectors and their table, which training and
`python -m bcnet_jax.evaluate` (`evaluate_workdir`, read-only) both print.

Synopsis:

  setup = supernet.Setup.create(config)
  state = restore_trained(setup, workdir)
  scores = supernet.evaluate_widths(setup, state)
  console.say(supernet.score_table(setup, scores))
"""

from __future__ import annotations

import dataclasses
import functools
import os
from typing import Any, Callable, Collection

import jax

from bcnet_jax.learning.state import TrainState
from bcnet_jax.run import checkpoint
from bcnet_jax.run import console
from bcnet_jax.run import errors
from bcnet_jax.run import identity as identity_lib
from bcnet_jax.run import parallel
from bcnet_jax.run import run_config
from bcnet_jax.run import stages as run
from bcnet_jax.space import sampling
from bcnet_jax.space.costs import CostModel
from bcnet_jax.supernet import evaluator as evaluator_lib
from bcnet_jax.supernet import state as supernet_state
from bcnet_jax.supernet import steps

# Host memory the search may fill with decoded scoring batches.
_CACHE_BYTES = 4 << 30
# Config fields that must agree between a checkpoint and the run resuming it
# (and every score saved of it).
IDENTITY_FIELDS = ('stage', 'model', *run.DATA_FIELDS, 'supernet.objective',
                   'supernet.complementary', 'supernet.pool_size',
                   'supernet.label_smoothing', 'optim')


@dataclasses.dataclass(frozen=True)
class Setup(run.Fields):
  """Everything a supernet run is made of (a run.Stage)."""

  @classmethod
  def create(cls, config: Any) -> Setup:
    """Raises errors.UserError naming what is wrong with the config, the
    data or the model; writes nothing."""
    if config.stage != 'supernet':
      raise errors.InvalidInput(
          f'stage={config.stage}: evaluate, search and rank read a supernet '
          '(stage=supernet); a retrained network is scored by training and '
          'used with bcnet_jax.predict / export')
    basics = run.Basics.create(config)
    steps.implementation_for(config.supernet.implementation,
                             basics.mesh.devices.flat[0].platform,
                             basics.supernet.supports_pair)
    return cls(config, basics.mesh, basics.data, basics.supernet,
               *run.schedule_steps(config, config, config.optim, '',
                                   basics.data.steps_per_epoch))

  def describe(self) -> str:
    config, space = self.config, self.model.space
    objective = config.supernet.objective
    if objective == 'bcnet':
      objective += (f' (complementary, {self.implementation} passes)' if
                    config.supernet.complementary else ' (no complement)')
    return (f'{config.model.name} supernet, {space.num_groups} groups of '
            f'{space.min_bins}..{space.bins} bins, objective {objective}')

  def initial_state(self) -> TrainState:
    return self.state_on_mesh(functools.partial(
        supernet_state.supernet_state, self.model, self.tx,
        jax.random.key(self.config.seed),
        pool_size=self.config.supernet.pool_size))

  def jit_train_step(self) -> Callable[..., Any]:
    """The supernet step of config.supernet, jitted over the mesh."""
    c = self.config
    return self.feed.jit_step(functools.partial(
        steps.supernet_step, model=self.model, tx=self.tx,
        objective=c.supernet.objective,
        complementary=c.supernet.complementary,
        implementation=self.implementation,
        pass_by_pass=c.supernet.pass_by_pass,
        label_smoothing=c.supernet.label_smoothing,
        dtype=run.DTYPES[c.supernet.dtype], seed=c.seed),
                              num_replicated_args=1)

  @property
  def implementation(self) -> str:
    """supernet.implementation, 'auto' resolved for this platform."""
    return steps.implementation_for(self.config.supernet.implementation,
                                    self.mesh.devices.flat[0].platform,
                                    self.model.supports_pair)

  def step_args(self, step: int) -> tuple[Any, ...]:
    """The width vector of `step`."""
    return (sampling.widths_for_step(self.model.space, self.config.seed,
                                     step),)

  def identity(self) -> dict[str, Any]:
    return self.identity_of(IDENTITY_FIELDS)

  def scoring_identity(self, trained) -> dict[str, Any]:
    """What a saved score of the `trained` supernet is valid for: this
    supernet (its identity, step and parameters) and how it is scored."""
    return {**self.identity(), **identity_lib.of_config(
        self.config, ('eval.split', 'eval.bn_calib_batches'),
        **{'supernet.step': int(trained.step),
           'supernet.params_sha256': checkpoint.tree_sha256(trained.params),
           'eval.sides': list(self.scored_sides)})}

  def evaluate(self, state, *, final: bool,
               status: Callable[[str], None] = lambda _: None
               ) -> dict[str, float]:
    """The fixed width vectors' recalibrated scores on eval.split."""
    del final  # the same evaluation every time
    return evaluate_widths(self, state, status=status)

  def prepare(self, workdir: str) -> None:
    del workdir  # nothing beside the checkpoints

  def finish(self, workdir: str, state, status) -> None:
    del workdir, state, status  # the supernet is searched, not exported

  def summary_fields(self, state) -> dict[str, Any]:
    return {'eval_widths': {name: [int(w) for w in widths]
                            for name, widths in self.fixed_widths().items()},
            'eval_score': score_definition(self),
            'loss_pool_best': float(jax.device_get(state.pool.losses)[0])}

  def table(self, summary: dict[str, Any]) -> str:
    return score_table(self, summary, step=summary['steps'])

  def written(self) -> tuple[tuple[str, str], ...]:
    return ()

  @property
  def scored_sides(self) -> tuple[str, ...]:
    """The paths this supernet trains, and so is scored by: both for
    BCNet, the left one alone for a unilateral (`ua`) supernet."""
    return evaluator_lib.trained_sides(self.config.supernet.objective)

  def evaluator(self) -> evaluator_lib.Evaluator:
    """The batch evaluator of this supernet on its mesh."""
    return evaluator_lib.Evaluator(self.model, self.mesh,
                                   self.config.eval.candidates_per_call,
                                   self.scored_sides)

  def scoring_data(self, *, cached: bool = False
                   ) -> tuple[evaluator_lib.Batches, evaluator_lib.Batches]:
    """Callables returning fresh iterables of the BN-calibration and the
    eval.split batches on the mesh. `cached`: decoded once and kept in host
    memory, for the search's thousands of paths, if they fit in
    _CACHE_BYTES (ImageNet's are read again for every call)."""
    config, data, mesh = self.config, self.data, self.mesh
    examples = (config.eval.bn_calib_batches * config.input.batch_size +
                self.scored_examples)
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

  @property
  def eval_batch_count(self) -> int:
    """The eval batches of one call of the evaluator: what its progress
    within a call counts."""
    return self.data.num_eval_batches(self.config.eval.split)

  @property
  def scored_examples(self) -> int:
    """How many images a score is measured on (eval.split's)."""
    if self.config.eval.split == 'minival':
      return len(self.data.minival_indices)
    return len(self.data.eval_source)

  def fixed_widths(self) -> dict[str, Any]:
    return evaluator_lib.fixed_widths(self.model.space,
                                      self.config.eval.num_random,
                                      self.config.seed)


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
  after = '' if step is None else (
      f' after {console.plural(step, "step")}')
  chance = 1 / setup.data.num_classes
  return (f'Accuracy on {run.EVAL_SPLITS[setup.config.eval.split]}{after}, '
          f'BatchNorm recalibrated per path;\n{score_definition(setup)} '
          f'(chance {chance:.2f}):\n' +
          console.table(['width vector', 'MACs', 'left', 'right', 'score'],
                        rows))


def score_definition(setup: Setup) -> str:
  """What a score of this supernet averages, in words."""
  if setup.scored_sides == evaluator_lib.SIDES:
    return 'score = mean of the left and right paths\' accuracy'
  return ('score = the left path\'s accuracy (a unilateral supernet trains '
          'only its left path)')


def restore_trained(setup: Setup, workdir: str) -> TrainState:
  """The latest supernet checkpoint of `workdir`, read-only; none is an
  error saying to train first."""
  state = None
  if os.path.isdir(os.path.join(workdir, 'checkpoints')):
    checkpoints = run.checkpoints(setup, workdir, read_only=True)
    try:
      state = checkpoints.restore_latest(setup.initial_state())
    finally:
      checkpoints.close()
  if state is None:
    raise errors.MissingInput(
        f'no readable supernet checkpoint in {workdir}: train one first with '
        f'python -m bcnet_jax.train --config=... --workdir={workdir}')
  return state


def evaluate_workdir(config: Any | None, workdir: str,
                     widths: dict[str, Any] | None = None,
                     overridden: Collection[str] = ()) -> dict[str, Any]:
  """Scores of the latest supernet checkpoint in `workdir`; writes nothing.

  Args:
    config: eval fields over the workdir's training fields, or None: the
      workdir's config (run_config.for_later_stage).
    workdir: the run's directory.
    widths: {name: width vector}; default: the fixed width vectors.
    overridden: the fields the command line set.

  Returns:
    {'step', 'split', 'widths', 'eval/<name>/<left|right|score>'...}.
  """
  workdir = run.check_workdir(workdir)
  config = run_config.for_later_stage(config, workdir, overridden,
                                      stage='evaluate')
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
