"""Data sources on real images, the deterministic pipeline, bad input.

The CIFAR-10 tests read the JPEG copy of CIFAR-10 kept beside the checkout
(shared/data/cifar10-jpeg.tar.gz; or $CIFAR10_JPEG_TAR) and skip, saying so,
where it is absent. They unpack 20 train and 10 test images per class.
"""

import functools
import os
import pathlib
import pickle
import tarfile
import tempfile
from unittest import mock

from absl.testing import absltest
import ml_collections
import numpy as np
import tensorflow_datasets as tfds

from bcnet_jax.run import config_utils
from bcnet_jax.run.data import augment
from bcnet_jax.run.data import pipeline
from bcnet_jax.run.data import sources

ROOT = pathlib.Path(__file__).resolve().parents[1]
CIFAR10_JPEG = pathlib.Path(os.environ.get(
    'CIFAR10_JPEG_TAR', ROOT.parent / 'shared' / 'data' /
    'cifar10-jpeg.tar.gz'))
PER_CLASS = {'train': 20, 'test': 10}


@functools.lru_cache(maxsize=None)
def cifar_folder() -> str:
  """A small real CIFAR-10 image folder unpacked from the JPEG copy."""
  if not CIFAR10_JPEG.exists():
    raise absltest.SkipTest(
        f'the CIFAR-10 JPEG copy is not at {CIFAR10_JPEG}; set '
        'CIFAR10_JPEG_TAR to its cifar10-jpeg.tar.gz')
  root = tempfile.mkdtemp(prefix='cifar10_jpeg_')
  counts = {}
  with tarfile.open(CIFAR10_JPEG) as tar:
    for member in tar:
      parts = pathlib.PurePath(member.name).parts
      if not member.isfile() or len(parts) < 3:
        continue
      split, cls = parts[-3], parts[-2]
      if split not in PER_CLASS or counts.get((split, cls), 0) >= PER_CLASS[
          split]:
        continue
      counts[(split, cls)] = counts.get((split, cls), 0) + 1
      out = pathlib.Path(root, split, cls, parts[-1])
      out.parent.mkdir(parents=True, exist_ok=True)
      out.write_bytes(tar.extractfile(member).read())
      if len(counts) == 20 and all(
          counts[k] >= PER_CLASS[k[0]] for k in counts):
        break
  return root


def input_config(**overrides) -> ml_collections.ConfigDict:
  c = config_utils.base_config().input
  c.update(overrides)
  return c


class ImageFolderTest(absltest.TestCase):

  def test_reads_real_cifar10_jpegs(self):
    train = sources.ImageFolder.open(cifar_folder(), 'train')
    self.assertEqual(train.class_names, tuple(sorted(
        sources.CIFAR10_CLASSES)))
    self.assertLen(train, 200)
    image, label = train[45]
    self.assertEqual(image.shape, (32, 32, 3))
    self.assertEqual(image.dtype, np.uint8)
    self.assertEqual(train.files[45].parent.name, train.class_names[label])
    self.assertGreater(image.std(), 5)  # a photo, not a blank

  def test_missing_folder_and_differing_classes(self):
    with self.assertRaisesRegex(FileNotFoundError, 'does not exist'):
      sources.ImageFolder.open('/nonexistent/cifar', 'train')
    with self.assertRaisesRegex(ValueError, r"only in train: \['truck'\]"):
      sources.check_same_classes(sources.CIFAR10_CLASSES,
                                 sources.CIFAR10_CLASSES[:-1], 'root')


class Cifar10ArchiveTest(absltest.TestCase):
  """Archives in the standard formats, written from the real JPEG images."""

  @classmethod
  def setUpClass(cls):
    super().setUpClass()
    folder = sources.ImageFolder.open(cifar_folder(), 'train')
    cls.images = np.stack([folder[i][0] for i in range(len(folder))])
    cls.labels = folder.labels
    cls.tmp = tempfile.mkdtemp()

  def _archive(self, members: dict[str, bytes], name: str) -> str:
    path = os.path.join(self.tmp, name)
    with tarfile.open(path, 'w:gz') as tar:
      for member, data in members.items():
        src = os.path.join(self.tmp, member)
        pathlib.Path(src).write_bytes(data)
        tar.add(src, arcname=f'cifar-10-batches/{member}')
    return path

  def _split(self):
    rows = self.images.transpose(0, 3, 1, 2).reshape(len(self.images), -1)
    return np.array_split(rows, 5), np.array_split(self.labels, 5)

  def test_python_version(self):
    rows, labels = self._split()
    members = {f'data_batch_{i + 1}': pickle.dumps(
        {b'data': r, b'labels': list(map(int, l))}, protocol=2)
               for i, (r, l) in enumerate(zip(rows, labels))}
    source = sources.cifar10_archive(self._archive(members, 'py.tar.gz'),
                                     'train')
    np.testing.assert_array_equal(source.images, self.images)
    np.testing.assert_array_equal(source.labels, self.labels)

  def test_binary_version(self):
    rows, labels = self._split()
    members = {f'data_batch_{i + 1}.bin': np.concatenate(
        [l[:, None].astype(np.uint8), r], 1).tobytes()
               for i, (r, l) in enumerate(zip(rows, labels))}
    source = sources.cifar10_archive(self._archive(members, 'bin.tar.gz'),
                                     'train')
    np.testing.assert_array_equal(source.images, self.images)
    np.testing.assert_array_equal(source.labels, self.labels)

  def test_pickle_with_foreign_classes_is_refused(self):
    class Evil:  # pylint: disable=too-few-public-methods
      def __reduce__(self):
        return (os.getcwd, ())
    members = {f'data_batch_{i}': pickle.dumps({b'data': Evil()})
               for i in range(1, 6)}
    with self.assertRaisesRegex(pickle.UnpicklingError, 'posix.getcwd'):
      sources.cifar10_archive(self._archive(members, 'evil.tar.gz'), 'train')

  def test_missing_archive_says_where_to_get_it(self):
    with self.assertRaisesRegex(FileNotFoundError, 'cifar-10-python'):
      sources.cifar10_archive('/nonexistent/cifar.tar.gz', 'train')


class TfdsSourceTest(absltest.TestCase):

  def test_unprepared_dataset_fails_with_the_build_command(self):
    # Before any attempt to download or read: both would be errors here.
    refuse = mock.Mock(side_effect=AssertionError('must not download/read'))
    with tempfile.TemporaryDirectory() as tmp, mock.patch.object(
        tfds.core.DatasetBuilder, 'download_and_prepare', refuse), \
        mock.patch.object(tfds, 'data_source', refuse):
      with self.assertRaisesRegex(
          FileNotFoundError,
          'not prepared.*tfds build cifar10 --file_format=array_record'):
        sources.TfdsSource('cifar10', 'train', tmp)
      with self.assertRaisesRegex(ValueError, "no dataset 'cifar_10'"):
        sources.TfdsSource('cifar_10', 'train', tmp)
      self.assertEqual(os.listdir(tmp), [])
    refuse.assert_not_called()


class PipelineTest(absltest.TestCase):

  @classmethod
  def setUpClass(cls):
    super().setUpClass()
    cls.config = input_config(
        source='image_folder', data_dir=cifar_folder(), minival_size=40,
        batch_size=16, eval_batch_size=24, num_threads=2)
    cls.data = pipeline.Input.create(cls.config, seed=3)

  def test_batches_are_a_function_of_seed_and_step(self):
    again = pipeline.Input.create(self.config, seed=3)
    a, b = self.data.train_batch(7), again.train_batch(7)
    np.testing.assert_array_equal(a['image'], b['image'])
    np.testing.assert_array_equal(a['label'], b['label'])
    self.assertEqual(a['image'].shape, (16, 32, 32, 3))
    self.assertFalse(np.array_equal(a['image'],
                                    self.data.train_batch(8)['image']))
    other = pipeline.Input.create(self.config, seed=4).train_batch(7)
    self.assertFalse(np.array_equal(a['image'], other['image']))

  def test_hosts_read_their_parts_of_the_one_process_batch(self):
    """N processes see the global batches of one (README, Many hosts)."""
    whole = self.data.train_batch(5)
    parts = []
    for index in range(2):
      with mock.patch.object(pipeline.jax, 'process_count', lambda: 2), \
          mock.patch.object(pipeline.jax, 'process_index', lambda i=index: i):
        parts.append(self.data.train_batch(5))
    for key in ('image', 'label'):
      np.testing.assert_array_equal(
          np.concatenate([p[key] for p in parts]), whole[key])

  def test_an_epoch_visits_every_training_example_once(self):
    n = len(self.data.train_indices)  # 160 = 10 steps of 16
    seen = np.concatenate([self.data.train_positions(s)
                           for s in range(n // 16)])
    np.testing.assert_array_equal(np.sort(seen), np.arange(n))
    # The next epoch visits them in another order.
    again = np.concatenate([self.data.train_positions(s)
                            for s in range(n // 16, 2 * n // 16)])
    np.testing.assert_array_equal(np.sort(again), np.arange(n))
    self.assertFalse(np.array_equal(seen, again))

  def test_minival_is_carved_from_train(self):
    self.assertLen(self.data.minival_indices, 40)
    self.assertEmpty(np.intersect1d(self.data.minival_indices,
                                    self.data.train_indices))
    self.assertLen(np.union1d(self.data.minival_indices,
                              self.data.train_indices), 200)

  def test_eval_counts_every_example_once(self):
    labels, masks = [], []
    for batch in self.data.eval_batches('eval'):
      self.assertEqual(batch['image'].shape, (24, 32, 32, 3))
      labels.append(batch['label'][batch['mask']])
      masks.append(batch['mask'])
    self.assertEqual(sum(m.sum() for m in masks), 100)  # 5 batches, padded
    self.assertLen(masks, 5)
    np.testing.assert_array_equal(np.concatenate(labels),
                                  self.data.eval_source.labels)

  def test_too_large_minival_and_calibration(self):
    with self.assertRaisesRegex(ValueError, 'minival_size=200'):
      pipeline.Input.create(input_config(
          source='image_folder', data_dir=cifar_folder(), minival_size=200),
                            seed=0)
    with self.assertRaisesRegex(ValueError, 'BN-calibration'):
      next(self.data.calibration_batches(11))

  def test_differing_class_folders(self):
    root = tempfile.mkdtemp()
    for split, classes in (('train', ('cat', 'dog')), ('test', ('cat',))):
      for cls in classes:
        os.makedirs(os.path.join(root, split, cls))
        src = pathlib.Path(cifar_folder(), 'train', cls)
        first = sorted(src.iterdir())[0]
        pathlib.Path(root, split, cls, first.name).write_bytes(
            first.read_bytes())
    with self.assertRaisesRegex(ValueError, r"only in train: \['dog'\]"):
      pipeline.Input.create(input_config(
          source='image_folder', data_dir=root, minival_size=0), seed=0)


class AugmentTest(absltest.TestCase):

  def test_shapes_and_normalization(self):
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, (37, 51, 3), np.uint8)
    kw = {'resolution': 24, 'mean': np.zeros(3, np.float32),
          'std': np.ones(3, np.float32)}
    for kind in augment.AUGMENTATIONS:
      for train in (True, False):
        out = augment.preprocess(image, augment=kind, train=train, rng=rng,
                                 **kw)
        self.assertEqual(out.shape, (24, 24, 3))
        self.assertTrue(0 <= out.min() and out.max() <= 1)
    with self.assertRaisesRegex(ValueError, 'input.augment'):
      augment.preprocess(image, augment='x', train=True, rng=rng, **kw)


if __name__ == '__main__':
  absltest.main()
