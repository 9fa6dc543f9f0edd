"""The training feeds (run/data/train_feed.py): the device feed's batches
hold the host's examples, its augmentation draws from the host's
distribution, each feed is picked where it applies, and runs on either
feed resume exactly."""

import os
import shutil
import tempfile

from absl.testing import absltest
import jax
import numpy as np
from scipy import stats

from bcnet_jax import training as train
from bcnet_jax.run.data import augment
from bcnet_jax.run.data import device_augment
from bcnet_jax.run.data import train_feed
from bcnet_jax.supernet import stage as supernet
from configs import testing as testing_config

DRAWS = 3000


def config(**overrides):
  c = testing_config.get_config()
  c.update_from_flattened_dict(overrides)
  return c


def coordinates(resolution: int) -> np.ndarray:
  """An image whose pixels name their place: channel 0 the row + 1,
  channel 1 the column + 1 (0 is the padding), as uint8 [R, R, 2]."""
  rows, cols = np.meshgrid(np.arange(resolution), np.arange(resolution),
                           indexing='ij')
  return np.stack([rows + 1, cols + 1], axis=-1).astype(np.uint8)


def crop_and_flip(crop: np.ndarray) -> tuple[int, int, bool]:
  """(y offset, x offset, flipped) of a crop of the padded coordinates:
  crop[r, c] is padded[r + y, c + x], image pixel (r + y - 4, c + x - 4)."""
  rows, cols = crop[..., 0].astype(int), crop[..., 1].astype(int)
  r, c = np.nonzero((rows > 0) & (cols > 0))
  in_row = c[r == r[0]]
  flipped = bool(cols[r[0], in_row[-1]] < cols[r[0], in_row[0]])
  if flipped:
    cols = cols[:, ::-1]
    r, c = np.nonzero((rows > 0) & (cols > 0))
  ys = set(rows[r, c] - 1 - r + device_augment.PAD)
  xs = set(cols[r, c] - 1 - c + device_augment.PAD)
  assert len(ys) == len(xs) == 1, (ys, xs)  # one offset: a crop, not a warp
  return ys.pop(), xs.pop(), flipped


class AugmentationTest(absltest.TestCase):
  """Both paths' crop offsets and flips, measured on a coordinate image."""

  @classmethod
  def setUpClass(cls):
    super().setUpClass()
    resolution = 16
    image = coordinates(resolution)
    rng = np.random.default_rng(0)
    cls.host = [crop_and_flip(augment.cifar_train(image, resolution, rng))
                for _ in range(DRAWS)]
    keys = device_augment.example_keys(0, 7, DRAWS)
    crops = jax.jit(jax.vmap(device_augment.cifar_crop_flip, (None, 0)))(
        image, keys)
    cls.device = [crop_and_flip(c) for c in np.asarray(crops)]

  def test_offsets_are_uniform_over_0_to_8_on_both_paths(self):
    for name, draws in (('host', self.host), ('device', self.device)):
      for axis in (0, 1):
        counts = np.bincount([d[axis] for d in draws], minlength=9)
        self.assertLen(counts, 9, f'{name}: offsets outside 0..8')
        self.assertGreater(stats.chisquare(counts).pvalue, 1e-3,
                           f'{name} axis {axis}: {counts}')

  def test_the_paths_offsets_and_flips_agree(self):
    for axis in (0, 1):
      table = [np.bincount([d[axis] for d in draws], minlength=9)
               for draws in (self.host, self.device)]
      self.assertGreater(stats.chi2_contingency(table).pvalue, 1e-3, table)
    for name, draws in (('host', self.host), ('device', self.device)):
      flips = sum(d[2] for d in draws)
      self.assertGreater(stats.binomtest(flips, DRAWS).pvalue, 1e-3,
                         f'{name}: {flips} flips of {DRAWS}')

  def test_each_step_and_example_draws_its_own_augmentation(self):
    keys = [jax.random.key_data(device_augment.example_keys(0, step, 4))
            for step in (1, 2)]
    rows = np.concatenate([np.asarray(k) for k in keys])
    self.assertLen(np.unique(rows, axis=0), 8)

  def test_offsets_and_flips_are_independent_on_the_device(self):
    table = np.zeros((9, 2), int)
    for y, _, flipped in self.device:
      table[y, int(flipped)] += 1
    self.assertGreater(stats.chi2_contingency(table).pvalue, 1e-3, table)


class FeedTest(absltest.TestCase):

  def test_the_device_feed_holds_the_host_batches(self):
    setup = supernet.Setup.create(config())  # augment 'none'
    feed = setup.feed
    self.assertEqual(feed.name, 'device')
    c = setup.config.input
    build = jax.jit(lambda examples, positions, step:
                    device_augment.training_batch(
                        examples, positions, step, seed=0, augment='none',
                        mean=c.mean, std=c.std))
    # Steps on both sides of an epoch's end (492 steps of 8).
    first = setup.data.steps_per_epoch - 1
    with feed.batches(first, first + 2) as batches:
      for step, local in zip((first, first + 1), batches):
        on_device = build(feed.examples, local['position'], step)
        on_host = setup.data.train_batch(step)
        np.testing.assert_array_equal(on_device['label'], on_host['label'])
        np.testing.assert_allclose(on_device['image'], on_host['image'],
                                   atol=1e-6)

  def test_each_feed_where_it_applies(self):
    setup = supernet.Setup.create(config())  # 3.8 MB of training images
    for overrides, name in (({}, 'device'),
                            ({'input.augment': 'cifar'}, 'device'),
                            ({'input.on_device_max_mb': 0}, 'host'),
                            ({'input.on_device_max_mb': 2}, 'host'),
                            ({'input.augment': 'imagenet'}, 'host'),
                            ({'input.augment': 'imagenet',
                              'input.workers': 2}, 'workers')):
      feed = train_feed.create(setup.data, config(**overrides).input,
                               setup.mesh, seed=0)
      self.assertEqual(feed.name, name, overrides)


class ResumeTest(absltest.TestCase):

  def test_a_resumed_device_feed_run_ends_with_the_same_parameters(self):
    # With the CIFAR augmentation, drawn in the step from its number (the
    # host feed's resumption: train_test).
    tmp = self.create_tempdir().full_path
    c = config(**{'input.augment': 'cifar', 'total_steps': 6,
                  'ckpt_every_steps': 3, 'eval.num_random': 0})
    whole = train.train_and_evaluate(c, os.path.join(tmp, 'whole'))
    self.assertEqual(whole['input_feed'], 'device')
    resumed = os.path.join(tmp, 'resumed')
    shutil.copytree(os.path.join(tmp, 'whole'), resumed)
    shutil.rmtree(os.path.join(resumed, 'checkpoints', '6'))
    os.remove(os.path.join(resumed, 'summary.json'))
    again = train.train_and_evaluate(c, resumed)
    self.assertEqual(again['first_step_this_run'], 3)
    self.assertEqual(again['params_sha256'], whole['params_sha256'])


class WorkersTest(absltest.TestCase):

  def test_grain_workers_train_as_the_host_threads(self):
    tmp = self.create_tempdir().full_path
    runs = {}
    for workers in (0, 2):
      c = config(**{'input.on_device_max_mb': 0, 'input.workers': workers,
                    'total_steps': 4, 'eval.num_random': 0})
      runs[workers] = train.train_and_evaluate(c, os.path.join(
          tmp, str(workers)))
    self.assertEqual([runs[w]['input_feed'] for w in (0, 2)],
                     ['host', 'workers'])
    self.assertEqual(runs[2]['params_sha256'], runs[0]['params_sha256'])


if __name__ == '__main__':
  tempfile.tempdir = None
  absltest.main()
