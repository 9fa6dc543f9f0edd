"""One run, one config: training keeps its config in the workdir, the later
stages read it there, and nothing scores on images the supernet trained on
(a minival of another size included), however the commands are called."""

import json
import os
import pathlib
import shutil
import subprocess
import tempfile

from absl.testing import absltest

from bcnet_jax import training as train
from bcnet_jax.run import checkpoint
from bcnet_jax.run import errors
from bcnet_jax.run import identity
from bcnet_jax.run import run_config
from bcnet_jax.searching import ranking
from bcnet_jax.searching import search
from bcnet_jax.supernet import stage as supernet
from configs import testing as testing_config
from tests.programs import command
from tests.programs import ROOT
from tests.programs import snapshot
from tests.programs import SUBPROCESS_ENV

TRAINED_MINIVAL = 48  # the testing config's is 64


def config(**overrides):
  c = testing_config.get_config()
  c.update_from_flattened_dict({'total_steps': 5, **overrides})
  return c


def run_all(cases: dict[str, list[str]]) -> dict[str, tuple[int, str, str]]:
  """{name: (exit status, stdout, stderr)} of commands run side by side."""
  running = {name: subprocess.Popen(
      argv, cwd=ROOT, env=SUBPROCESS_ENV, stdout=subprocess.PIPE,
      stderr=subprocess.PIPE, text=True) for name, argv in cases.items()}
  out = {}
  for name, process in running.items():
    stdout, stderr = process.communicate()
    out[name] = (process.returncode, stdout, stderr)
  return out


class RunConfigTest(absltest.TestCase):

  @classmethod
  def setUpClass(cls):
    super().setUpClass()
    cls.tmp = pathlib.Path(tempfile.mkdtemp())
    cls.workdir = str(cls.tmp / 'trained')
    cls.command = ('python -m bcnet_jax.train --config=configs/testing.py '
                   f'--config.input.minival_size={TRAINED_MINIVAL}')
    cls.summary = train.train_and_evaluate(
        config(**{'input.minival_size': TRAINED_MINIVAL}), cls.workdir,
        command=cls.command)
    # The same run as bcnet_jax 0.1 left it: no config.json.
    cls.legacy = str(cls.tmp / 'legacy')
    shutil.copytree(cls.workdir, cls.legacy)
    os.remove(run_config.path(cls.legacy))

  @classmethod
  def tearDownClass(cls):
    shutil.rmtree(cls.tmp)
    super().tearDownClass()

  def test_training_writes_its_config_and_command(self):
    saved = json.loads(pathlib.Path(run_config.path(self.workdir)).read_text())
    self.assertEqual(saved['commands'], [self.command])
    self.assertEqual(saved['config']['input']['minival_size'],
                     TRAINED_MINIVAL)
    read = run_config.read(run_config.path(self.workdir))
    self.assertEqual(identity.flatten(read),
                     identity.flatten(config(**{
                         'input.minival_size': TRAINED_MINIVAL})))

  def test_a_config_of_unknown_fields_is_an_error_naming_them(self):
    path = self.tmp / 'future.json'
    saved = json.loads(pathlib.Path(run_config.path(self.workdir)).read_text())
    saved['config']['input']['crop'] = 0.9
    path.write_text(json.dumps(saved))
    with self.assertRaisesRegex(errors.InvalidInput,
                                'field input.crop=0.9 is not one this'):
      run_config.read(str(path))
    path.write_text('{"seed": 0}')
    with self.assertRaisesRegex(errors.InvalidInput, 'not a run config'):
      run_config.read(str(path))

  def test_later_stages_take_training_fields_from_the_workdir(self):
    given = config(**{'search.population': 3, 'eval.bn_calib_batches': 1})
    resolved = run_config.for_later_stage(given, self.workdir)
    self.assertEqual(resolved.input.minival_size, TRAINED_MINIVAL)
    self.assertEqual(resolved.search.population, 3)
    self.assertEqual(resolved.eval.bn_calib_batches, 1)
    self.assertEqual(run_config.for_later_stage(None, self.workdir)
                     .input.minival_size, TRAINED_MINIVAL)
    with self.assertRaisesRegex(
        errors.InvalidInput,
        r'--config.input.minival_size=64: input.minival_size belongs to '
        fr'training.*trained with {TRAINED_MINIVAL}'):
      run_config.for_later_stage(config(), self.workdir,
                                 {'input.minival_size'})
    with self.assertRaisesRegex(errors.MissingInput, 'no config.json'):
      run_config.for_later_stage(None, self.legacy)
    moved = run_config.for_later_stage(
        config(**{'input.data_dir': '/elsewhere'}), self.workdir,
        {'input.data_dir'})
    self.assertEqual(moved.input.data_dir, '/elsewhere')

  def test_no_stage_scores_on_training_images_of_a_legacy_workdir(self):
    """Without config.json, the checkpoint's identity holds the split."""
    other = config()  # minival 64: 16 of its images were trained on
    expected = (fr'input.minival_size: checkpoint {TRAINED_MINIVAL}, this '
                'run 64')
    for name, call in (
        ('train', lambda: train.train_and_evaluate(other, self.legacy)),
        ('search', lambda: search.run(other, self.legacy)),
        ('evaluate', lambda: supernet.evaluate_workdir(other, self.legacy)),
        ('rank', lambda: ranking.run(other, self.legacy, self.archs()))):
      with self.subTest(name), self.assertRaisesRegex(
          checkpoint.ForeignCheckpoint, expected):
        call()

  def test_a_checkpoint_that_does_not_record_its_data_split_is_refused(self):
    """As bcnet_jax 0.1 wrote them: which images it trained on is unknown."""
    old = str(self.tmp / 'old_version')
    shutil.copytree(self.legacy, old)
    trained = config(**{'input.minival_size': TRAINED_MINIVAL})
    setup = supernet.Setup.create(trained)
    state = supernet.restore_trained(setup, old)
    shutil.rmtree(os.path.join(old, 'checkpoints'))
    saved = checkpoint.Checkpoints(old, {
        k: v for k, v in setup.identity().items()
        if k not in ('input.minival_size', 'input.train_examples')})
    saved.save(5, state)
    saved.wait()
    saved.close()
    for name, call in (
        ('train', lambda: train.train_and_evaluate(trained, old)),
        ('search', lambda: search.run(trained, old))):
      with self.subTest(name), self.assertRaisesRegex(
          checkpoint.ForeignCheckpoint,
          r'\(step 5\) written by an older bcnet_jax, which did not record '
          'input.minival_size; input.train_examples: .* the bcnet_jax '
          'version that wrote it, or train anew'):
        call()
    # Another stage's fields are not an older version's: a retrain run in
    # the supernet's workdir is another run, named by what differs.
    supernet_identity = setup.identity()
    retrain_identity = {
        **{k: v for k, v in supernet_identity.items()
           if not k.startswith(('supernet.', 'optim.'))},
        'stage': 'retrain', 'retrain.label_smoothing': 0.0}
    ckpt = checkpoint.Checkpoints(self.workdir, retrain_identity,
                                  read_only=True)
    with self.assertRaisesRegex(checkpoint.ForeignCheckpoint,
                                r"another run: .*stage: checkpoint "
                                r"'supernet', this run 'retrain'"):
      ckpt._check_identity(5, supernet_identity)
    ckpt.close()

  def archs(self) -> str:
    path = self.tmp / 'archs.json'
    path.write_text(json.dumps([[4] * 12, [8] * 12]))
    return str(path)

  def test_commands_refuse_training_overrides_and_read_the_workdir(self):
    before = snapshot(self.workdir)
    workdir = f'--workdir={self.workdir}'
    leak = '--config.input.minival_size=64'
    results = run_all({
        'train': command('train', workdir, leak),
        'search': command('search', workdir, leak),
        'search, --config': command('search', '--config=configs/testing.py',
                                    workdir, '--config.optim.momentum=0.5'),
        'rank': command('rank', workdir, f'--archs={self.archs()}', leak),
        'evaluate': command('evaluate', workdir, leak),
        'evaluate, no --config': command('evaluate', workdir,
                                         '--widths=' + ','.join(['5'] * 12)),
    })
    for name, (status, stdout, stderr) in results.items():
      with self.subTest(name):
        if name == 'evaluate, no --config':
          self.assertEqual(status, 0, stderr)
          result = json.loads(stdout.strip().splitlines()[-1])
          self.assertIn('eval/given/score', result)
          self.assertIn('Accuracy on minival', stdout)
          continue
        self.assertEqual(status, 2, stderr)
        self.assertLen(stderr.strip().splitlines(), 1, stderr)
        if name == 'train':  # a resumed run: the checkpoint's identity
          self.assertIn(f'input.minival_size: checkpoint {TRAINED_MINIVAL}, '
                        'this run 64', stderr)
        elif name == 'search, --config':
          self.assertIn('optim.momentum belongs to training', stderr)
        else:
          self.assertRegex(stderr, '^error: --config.input.minival_size=64: '
                           'input.minival_size belongs to training')
    self.assertEqual(snapshot(self.workdir), before)

  def test_identity_mismatches_name_each_field_with_both_values(self):
    with self.assertRaisesRegex(
        checkpoint.ForeignCheckpoint,
        r'holds a checkpoint \(step 5\) of another run: optim.momentum: '
        r'checkpoint 0.9, this run 0.5; optim.warmup_epochs: checkpoint 0.0, '
        r'this run 0.001\. '):
      train.train_and_evaluate(
          config(**{'input.minival_size': TRAINED_MINIVAL,
                    'optim.momentum': 0.5, 'optim.warmup_epochs': 0.001}),
          self.workdir)
    differences = identity.differences(
        {'a': 1, 'b': {'c': [1, 2]}, 'model': {'lowering': 'x'}},
        {'a': 1, 'b': {'c': [1, 3]}, 'd': 0}, saved_as='state')
    self.assertEqual(differences, [
        'b.c: state [1, 2], this run [1, 3]',
        'd: state (not recorded), this run 0'])
    # Fields added since read as their old meaning: a checkpoint written
    # before model.round_to resumes at round_to 1, and is another run's
    # at 8.
    older = {'model': {'name': 'resnet20_cifar'}}
    current = {'model': {'name': 'resnet20_cifar', 'kwargs': '{}',
                         'train_arg': '', 'fixed': '', 'round_to': 1}}
    self.assertEqual(identity.differences(older, current, saved_as='c'), [])
    self.assertEqual(identity.unrecorded(older, current), [])
    current['model']['round_to'] = 8
    self.assertEqual(identity.differences(older, current, saved_as='c'),
                     ['model.round_to: c 1, this run 8'])


if __name__ == '__main__':
  absltest.main()
