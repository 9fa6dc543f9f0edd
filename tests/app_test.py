"""The commands' shared behaviour: a flag-free library, exit statuses, and
config overrides as a user types them."""

import ast
import contextlib
import io
import subprocess
import sys
import tempfile

from absl.testing import absltest

from bcnet_jax import training as train
from bcnet_jax.run import config_utils
from bcnet_jax.run import program
from configs import testing as testing_config
from tests.programs import command
from tests.programs import ROOT
from tests.programs import SUBPROCESS_ENV

# One device: these commands stop at their config checks.
ENV = {**SUBPROCESS_ENV, 'XLA_FLAGS': ''}


def run(argv, **kwargs):
  return subprocess.run(argv, capture_output=True, text=True, env=ENV,
                        cwd=ROOT, **kwargs)


class FlagFreeLibraryTest(absltest.TestCase):

  def test_importing_every_module_defines_no_flag(self):
    # In a fresh interpreter: the command modules too, as a notebook might.
    script = '''
import pkgutil, importlib
from absl import flags
import bcnet_jax
for info in pkgutil.walk_packages(bcnet_jax.__path__, 'bcnet_jax.'):
  if not info.name.endswith('__main__'):
    importlib.import_module(info.name)
print(sorted({'config', 'workdir', 'widths', 'archs'} & set(flags.FLAGS)))
print(sorted(m for m in flags.FLAGS.flags_by_module_dict()
             if 'bcnet_jax' in m))
'''
    out = run([sys.executable, '-c', script], check=True)
    # Dependencies (absl logging, orbax) define their own; this package none.
    self.assertEqual(out.stdout.split('\n')[:2], ['[]', '[]'], out.stderr)

  def test_no_module_imports_the_package_inside_a_function(self):
    # A local import is how an import cycle hides.
    for path in (ROOT / 'bcnet_jax').rglob('*.py'):
      for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
          for inner in ast.walk(node):
            if isinstance(inner, ast.ImportFrom):
              self.assertFalse((inner.module or '').startswith('bcnet_jax'),
                               f'{path}:{inner.lineno}')


  def test_the_ground_floor_imports_no_stage_and_no_stage_another(self):
    forbidden = {'run': ('supernet', 'retrain', 'searching', 'training'),
                 'learning': ('supernet', 'retrain', 'searching', 'training'),
                 'supernet': ('retrain',), 'retrain': ('supernet',)}
    for package, stages in forbidden.items():
      for path in (ROOT / 'bcnet_jax' / package).rglob('*.py'):
        for node in ast.walk(ast.parse(path.read_text())):
          if isinstance(node, ast.ImportFrom) and node.module:
            for stage in stages:
              self.assertFalse(
                  node.module == f'bcnet_jax.{stage}' or
                  node.module.startswith(f'bcnet_jax.{stage}.') or
                  (node.module == 'bcnet_jax' and any(
                      a.name == stage for a in node.names)),
                  f'{path}:{node.lineno} imports {node.module}')

  def test_the_experiment_lists_its_flags_and_says_what_overrides_need(self):
    experiment = [sys.executable, '-m', 'experiments.channel_bench_macro']
    out = run(experiment + ['--help'])
    self.assertIn('--workdir:', out.stdout)
    self.assertIn('--config:', out.stdout)
    out = run(experiment + ['--workdir=/nonexistent', '--config.seed=1'])
    self.assertEqual(out.returncode, 2)
    self.assertRegex(out.stderr, '^error: --config.FIELD overrides need a '
                     'config to override: give --config=FILE')


class ExitStatusTest(absltest.TestCase):

  def app_run(self, error: str):
    script = f'''
from bcnet_jax.run import app
from bcnet_jax.run import errors
def main(argv):
  raise {error}
app.run(main, required=())
'''
    return run([sys.executable, '-c', script])

  def test_a_user_error_is_one_line_and_status_2(self):
    out = self.app_run("errors.InvalidInput('set x to 3')")
    self.assertEqual(out.returncode, 2)
    self.assertEqual(out.stderr, 'error: set x to 3\n')

  def test_any_other_error_keeps_its_traceback_and_status_1(self):
    out = self.app_run("ValueError('a shape bug')")
    self.assertEqual(out.returncode, 1)
    self.assertIn('Traceback', out.stderr)
    self.assertIn('ValueError: a shape bug', out.stderr)


class CommandLineOverridesTest(absltest.TestCase):
  """configs/testing.py sets total_steps, search.macs_fraction and no
  warm-up. `evaluate` of an empty workdir checks the config and stops at
  the missing supernet: the message says which check stopped it."""

  def evaluate(self, *overrides):
    with tempfile.TemporaryDirectory() as tmp:
      out = run(command('evaluate', '--config=configs/testing.py',
                        f'--workdir={tmp}', *overrides))
    self.assertEqual(out.returncode, 2, out.stderr)
    self.assertEqual(len(out.stderr.strip().splitlines()), 1, out.stderr)
    return out.stderr

  def test_the_command_line_wins_over_the_config_and_none_unsets(self):
    accepted = 'no readable supernet checkpoint'
    self.assertIn(accepted, self.evaluate('--config.total_epochs=0.5'))
    # testing.py sets search.macs_fraction.
    self.assertIn(accepted, self.evaluate('--config.search.macs_budget=10'))
    for unset in (['--config.total_steps=None'],
                  ['--config.total_steps', 'None']):
      self.assertIn('set total_epochs or total_steps', self.evaluate(*unset))
    self.assertIn('set one of total_steps, total_epochs, not total_steps '
                  'and total_epochs',
                  self.evaluate('--config.total_steps=30',
                                '--config.total_epochs=0.5'))

  def test_overrides_of_a_recipe_that_sets_epochs_and_a_fraction(self):
    # configs/cifar10.py sets total_epochs and retrain.total_epochs.
    # Without its data here, a config that passes its checks stops at the
    # missing dataset.
    with tempfile.TemporaryDirectory() as tmp:
      out = run(command('evaluate', '--config=configs/cifar10.py',
                        f'--workdir={tmp}', '--config.total_steps=150',
                        '--config.retrain.total_steps=100'))
    self.assertEqual(out.returncode, 2, out.stderr)
    self.assertIn("tfds dataset 'cifar10' is not prepared", out.stderr)

  def test_an_incomplete_set_of_host_flags_is_said_before_joining(self):
    # hosts_test has the cases; here, the command's one line.
    self.assertIn('--coordinator=127.0.0.1:1 needs --num_processes',
                  self.evaluate('--coordinator=127.0.0.1:1'))

  def test_a_warm_up_too_long_is_said_in_the_fields_a_user_sets(self):
    message = self.evaluate('--config.optim.warmup_epochs=5')
    self.assertIn('optim.warmup_epochs=5.0 is ', message)
    self.assertIn('not fewer than the run\'s 30 steps', message)
    self.assertNotIn('warmup_steps', message)

  def test_unset_only_what_may_be_unset(self):
    self.assertIn('optim.learning_rate cannot be unset',
                  self.evaluate('--config.optim.learning_rate=None'))
    self.assertIn('no such field',
                  self.evaluate('--config.total_epoch=None'))

  def test_every_exclusive_group(self):
    for fields in config_utils.EXCLUSIVE:
      for given in fields:
        c = testing_config.get_config()
        for name in fields:
          config_utils.assign(c, name, 1)
        config_utils.apply_command_line(c, {given}, set())
        self.assertIsNotNone(config_utils.field(c, given), given)
        for other in fields:
          if other != given:
            self.assertIsNone(config_utils.field(c, other), (given, other))


class RecipeTest(absltest.TestCase):

  def test_retrain_optim_falls_back_to_optim_field_by_field(self):
    c = testing_config.get_config()
    c.optim.learning_rate = 0.3
    c.optim.weight_decay = 1e-3
    c.retrain.optim.weight_decay = 4e-5
    got = config_utils.retrain_optim(c)
    self.assertEqual(got.learning_rate, 0.3)  # optim's, set after
    self.assertEqual(got.weight_decay, 4e-5)
    self.assertEqual(got.warmup_epochs, 0.0)  # testing.py's retrain one
    self.assertEqual(set(got), set(c.optim))

  def test_announced_evaluations_are_those_that_will_happen(self):
    def announced(first_step=0, **fields):
      c = testing_config.get_config()
      c.update_from_flattened_dict(fields)
      out = io.StringIO()
      with contextlib.redirect_stdout(out):
        program._announce(train.create_setup(c), '/tmp/x', first_step)
      return out.getvalue()

    self.assertIn('every 10 steps and at the end',
                  announced(eval_every_steps=10))
    once = announced(eval_every_steps=7650)
    self.assertNotIn('every', once)
    self.assertIn('evaluation on minival', once)
    # Of 30 steps, resumed: step 20's evaluation is still owed at 20, none
    # is left after it.
    self.assertIn('every 10', announced(20, eval_every_steps=10))
    self.assertNotIn('every', announced(21, eval_every_steps=10))

  def test_announced_epochs_are_never_rounded_to_zero(self):
    # A newcomer read '(0.0 epochs)' for 30 steps of 492 per epoch.
    c = testing_config.get_config()
    per_epoch = train.create_setup(c).data.steps_per_epoch
    out = io.StringIO()
    for steps in (30, per_epoch, 5 * per_epoch // 2):
      c.total_steps = steps
      with contextlib.redirect_stdout(out):
        program._announce(train.create_setup(c), '/tmp/x', 0)
    said = out.getvalue()
    self.assertIn(f'30 steps ({30 / per_epoch:.2g} epochs)', said)
    self.assertNotIn('0.0 epochs', said)
    self.assertIn(f'{per_epoch} steps (1 epoch)', said)
    self.assertIn('(2.5 epochs)', said)


if __name__ == '__main__':
  absltest.main()
