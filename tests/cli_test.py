"""`python -m bcnet_jax.models`: anchors, widths, arch files, bad input."""

import contextlib
import io
import json
import subprocess
import sys

from absl.testing import absltest
from absl.testing import parameterized

from bcnet_jax import models
from bcnet_jax.models import __main__ as cli
from bcnet_jax.space import search_space as space_lib
from tests import costs_test


def run_cli(*argv):
  """(exit code, last stdout line, stderr) of the CLI run in-process."""
  out, err = io.StringIO(), io.StringIO()
  with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
    code = cli.main(list(argv))
  lines = out.getvalue().strip().splitlines()
  return code, lines[-1] if lines else '', err.getvalue()


class ModelsCliTest(parameterized.TestCase):

  @parameterized.named_parameters((n, n) for n in costs_test.ANCHORS)
  def test_reproduces_anchors(self, name):
    for widths, macs, params in costs_test.ANCHORS[name]:
      argv = ['--model', name]
      if widths != 'full':
        groups = models.get_space(name).num_groups
        argv.append('--widths=' + ','.join([str(widths)] * groups))
      code, last, _ = run_cli(*argv)
      self.assertEqual(code, 0)
      got = json.loads(last)
      self.assertEqual((got['macs'], got['params']), (macs, params))
      space = models.get_space(name)
      self.assertEqual(
          (got['model'], got['groups'], got['bins'], got['min_bins']),
          (name, space.num_groups, space.bins, space.min_bins))
      self.assertEqual(got['resolution'], models.MODELS[name].resolution)

  def test_list(self):
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
      self.assertEqual(cli.main(['--list']), 0)
    self.assertEqual(out.getvalue().split(), list(models.MODELS))

  def test_arch_and_resolution(self):
    space = models.get_space('resnet20_cifar')
    c = space.full()
    c[:3] = [5, 6, 7]
    code, last, _ = run_cli('--model', 'resnet20_cifar',
                            '--widths=' + ','.join(map(str, c)))
    by_widths = json.loads(last)
    path = self.create_tempdir().create_file('arch.json').full_path
    space_lib.write_arch(path, space.arch(
        c, resolution=64, macs=by_widths['macs'], params=by_widths['params']))
    code, last, _ = run_cli('--arch', path)
    by_arch = json.loads(last)
    self.assertEqual(code, 0)
    self.assertEqual(by_arch['resolution'], 64)  # the arch's resolution
    self.assertGreater(by_arch['macs'], 3 * by_widths['macs'])
    self.assertEqual(by_arch['params'], by_widths['params'])
    code, last, _ = run_cli('--arch', path, '--resolution', '32')
    self.assertEqual(json.loads(last), by_widths)

  @parameterized.named_parameters(
      ('unknown_model', ['--model', 'resnet21'], 'unknown model .resnet21'),
      ('short_widths', ['--model', 'cbm_resnet', '--widths=1,2'],
       '7 entries'),
      ('width_range', ['--model', 'cbm_resnet', '--widths=1,1,1,9,1,1,1'],
       "group 'ch3' has width 9, allowed range is \\[1, 4\\]"),
      ('no_model', [], '--model NAME'),
      ('resolution', ['--model', 'vgg16_cifar', '--resolution', '0'],
       'resolution must be >= 1'),
      ('min_bins', ['--model', 'vgg16_cifar', '--min-bins', '21'],
       'min_bins must be an integer in \\[1, bins=20\\]'),
  )
  def test_bad_input(self, argv, message):
    code, last, err = run_cli(*argv)
    self.assertEqual(code, 2)
    self.assertEqual(last, '')
    self.assertRegex(err, message)

  def test_foreign_arch(self):
    path = self.create_tempdir().create_file('arch.json').full_path
    space = models.get_space('resnet56_cifar')
    space_lib.write_arch(path, space.arch(space.full(), resolution=32,
                                          macs=0, params=0))
    code, _, err = run_cli('--model', 'resnet20_cifar', '--arch', path)
    self.assertEqual(code, 2)
    self.assertIn('is for resnet56_cifar', err)

  def test_as_a_program(self):
    """The real entry point: JSON last on stdout, logs and errors on stderr."""
    ok = subprocess.run(
        [sys.executable, '-m', 'bcnet_jax.models', '--model', 'cbm_mobilenet',
         '--widths=1,1,1,1,1,1,1'], capture_output=True, text=True, check=True)
    self.assertEqual(json.loads(ok.stdout.splitlines()[-1])['macs'],
                     14_285_312)
    self.assertIn('MACs', ok.stderr)
    bad = subprocess.run(
        [sys.executable, '-m', 'bcnet_jax.models', '--model', 'resnet21'],
        capture_output=True, text=True, check=False)
    self.assertNotEqual(bad.returncode, 0)
    self.assertEqual(bad.stdout, '')
    self.assertIn("unknown model 'resnet21'", bad.stderr)


if __name__ == '__main__':
  absltest.main()
