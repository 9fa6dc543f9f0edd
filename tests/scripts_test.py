"""The benchmark and experiment scripts run and report what they claim."""

import importlib.util
import json
import pathlib
import subprocess
import sys
import tempfile

from absl.testing import absltest
import numpy as np

from bcnet_jax import models
from bcnet_jax.space import sampling

ROOT = pathlib.Path(__file__).resolve().parents[1]


def load(relative: str):
  spec = importlib.util.spec_from_file_location(
      pathlib.Path(relative).stem, ROOT / relative)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


class TrainStepBenchTest(absltest.TestCase):

  @classmethod
  def setUpClass(cls):
    super().setUpClass()
    cls.bench = load('bench/train_step.py')

  def test_useful_mac_fraction(self):
    supernet = models.get_model('resnet20_cifar')
    space = supernet.space
    rng = np.random.default_rng(0)
    widths = space.sample(rng, 200)
    fraction = {mode: self.bench.useful_mac_fraction(mode, supernet, widths)
                for mode in self.bench.MODES}
    # Same four sub-networks in half the passes, but a pair pass computes
    # every one of the C' channels, a single path only its N.
    self.assertGreater(fraction['fused'], fraction['reference'])
    self.assertLess(fraction['fused'], 2 * fraction['reference'])
    self.assertEqual(fraction['fused_pass_by_pass'], fraction['fused'])
    self.assertEqual(fraction['plain'], 1.0)
    # At full width ua's one pass is exactly its sub-network.
    self.assertEqual(self.bench.useful_mac_fraction(
        'ua', supernet, space.full()[None]), 1.0)
    for value in fraction.values():
      self.assertTrue(0 < value <= 1)

  def test_sub_networks_per_step_are_the_steps_table(self):
    # subnet_images_per_s counts the sub-networks of the step's passes
    # (step_shape); each mode's must be the ones its step trains.
    space = models.get_space('resnet20_cifar')
    for mode, kwargs in self.bench.MODES.items():
      expected = 1 if mode == 'plain' else len(sampling.subnetwork_table(
          kwargs['objective'], kwargs['complementary']))
      self.assertEqual(self.bench.step_shape(mode, space)[1], expected, mode)

  def test_fused_line(self):
    # The pass-by-pass memory mode: its one trace over 52 width vectors is
    # checked here (the default mode's in steps_test).
    line = self.bench.bench('fused_pass_by_pass', 'resnet20_cifar',
                            batch_size=8, num_steps=1)
    self.assertEqual(line['mode'], 'fused_pass_by_pass')
    # 52 width vectors ran: a retrace would have raised (chex) by now.
    # Its rates from its own timing: the images of a step over its seconds,
    # times the sub-networks the step trains (sampling's table, not the
    # bench's count of the step's passes).
    mode = self.bench.MODES['fused_pass_by_pass']
    subnets = len(sampling.subnetwork_table(mode['objective'],
                                            mode['complementary']))
    self.assertAlmostEqual(line['images_per_s'],
                           8 / line['seconds_per_step'],
                           delta=1e-9 * line['images_per_s'])
    self.assertAlmostEqual(line['subnet_images_per_s'],
                           subnets * 8 / line['seconds_per_step'],
                           delta=1e-9 * line['subnet_images_per_s'])
    self.assertGreater(line['images_per_s'], 0)
    self.assertGreater(line['temp_bytes'], 0)
    self.assertGreater(line['peak_bytes'], line['temp_bytes'])
    printed = self.bench.rounded(line)
    self.assertEqual(printed['batch'], 8)
    self.assertAlmostEqual(printed['images_per_s'], line['images_per_s'],
                           delta=1e-3 * line['images_per_s'])
    json.dumps(printed)


class FairnessExperimentTest(absltest.TestCase):

  def test_writes_the_plot_and_the_counts(self):
    with tempfile.TemporaryDirectory() as tmp:
      png = pathlib.Path(tmp) / 'fairness.png'
      out = subprocess.run(
          [sys.executable, str(ROOT / 'experiments/fairness.py'), '--model',
           'cbm_resnet', '--steps', '20', '--out', str(png)],
          capture_output=True, text=True, check=True)
      self.assertEqual(png.read_bytes()[:8], b'\x89PNG\r\n\x1a\n')
    lines = [json.loads(line) for line in out.stdout.splitlines()]
    bcnet, ua = lines[0], lines[1]
    self.assertEqual((bcnet['min_uses_in_a_step'],
                      bcnet['max_uses_in_a_step']), (2, 2))
    self.assertEqual(ua['max_uses_in_a_step'], 1)
    self.assertLess(ua['min_mean_uses_per_step'],
                    ua['max_mean_uses_per_step'])


if __name__ == '__main__':
  absltest.main()
