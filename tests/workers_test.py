"""Training batches from grain worker processes, on real CIFAR-10 JPEGs.

The workers must give the batches of `Input.train_batch`, bit for bit, from
any step (a resumed run), and a worker's error must reach the training
process as itself. Each test starts its worker processes (seconds each);
they skip, saying so, where grain is not installed.
"""

import importlib.util
import multiprocessing
import pathlib
import shutil
import sys
import threading
from unittest import mock

from absl.testing import absltest
import numpy as np

from bcnet_jax.run import errors
from bcnet_jax.run.data import pipeline
from bcnet_jax.run.data import workers
from tests import data_test


def folder_input(root: str, **overrides) -> pipeline.Input:
  config = data_test.input_config(
      source='image_folder', data_dir=root, num_threads=2, **overrides)
  return pipeline.Input.create(config, seed=3)


class WorkersTest(absltest.TestCase):

  @classmethod
  def setUpClass(cls):
    super().setUpClass()
    if importlib.util.find_spec('grain') is None:
      raise absltest.SkipTest("grain is not installed: pip install -e "
                              "'.[grain]'")

  def assert_batches_equal(self, got, steps, data):
    self.assertLen(got, len(steps))
    for step, batch in zip(steps, got):
      want = data.train_batch(step)
      self.assertEqual(batch.keys(), want.keys())
      for key in want:
        np.testing.assert_array_equal(batch[key], want[key], f'step {step}')

  def test_batches_of_a_resumed_run_are_the_in_process_ones(self):
    data = folder_input(data_test.cifar_folder(), minival_size=40,
                        batch_size=16)
    data.train_batch(0)  # a used Input (its thread pool made) still goes
    # Steps 7..12 cross the end of the first epoch (10 steps of 16).
    with workers.train_batches(data, 7, 13, 2) as batches:
      got = list(batches)
    self.assert_batches_equal(got, range(7, 13), data)
    self.assertEqual(got[0]['image'].shape, (16, 32, 32, 3))
    self.assertEmpty(multiprocessing.active_children())

  def test_workers_build_this_hosts_part_of_the_batch(self):
    data = folder_input(data_test.cifar_folder(), minival_size=40,
                        batch_size=16)
    with mock.patch.object(pipeline.jax, 'process_count', lambda: 2), \
        mock.patch.object(pipeline.jax, 'process_index', lambda: 1):
      with workers.train_batches(data, 3, 9, 1) as batches:
        got = [next(batches) for _ in range(3)]  # and stop early
      self.assertEmpty(multiprocessing.active_children())
      self.assert_batches_equal(got, range(3, 6), data)
    self.assertEqual(got[0]['image'].shape, (8, 32, 32, 3))

  def test_an_unreadable_image_fails_with_its_message(self):
    root = self.create_tempdir().full_path
    shutil.copytree(data_test.cifar_folder(), root, dirs_exist_ok=True)
    bad = sorted(pathlib.Path(root, 'train', 'cat').iterdir())[3]
    bad.write_bytes(bad.read_bytes()[:300])  # a truncated JPEG
    # One batch holds the whole training split.
    data = folder_input(root, minival_size=0, batch_size=200)
    with self.assertRaises(errors.InvalidInput) as in_process:
      data.train_batch(1)
    self.assertIn(str(bad), str(in_process.exception))
    with self.assertRaises(errors.InvalidInput) as from_worker:
      with workers.train_batches(data, 0, 4, 2) as batches:
        list(batches)
    self.assertEqual(str(from_worker.exception), str(in_process.exception))
    self.assertEmpty(multiprocessing.active_children())


class WithoutWorkersTest(absltest.TestCase):
  """What needs no worker process, nor grain."""

  def test_an_error_that_cannot_be_pickled_is_said(self):
    class Unpicklable(Exception):
      def __init__(self, message):
        super().__init__(message)
        self.lock = threading.Lock()

    try:
      raise Unpicklable('the source broke')
    except Unpicklable as e:
      with self.assertRaisesRegex(
          RuntimeError, r'(?s)batch of step 5:.*raise Unpicklable.*'
          'Unpicklable: the source broke$'):
        workers._raise_picklable(e, 5)  # pylint: disable=protected-access

  def test_without_grain_it_says_how_to_get_it(self):
    with mock.patch.dict(sys.modules, {'grain': None}), \
        self.assertRaisesRegex(
            errors.InvalidInput, r"input.workers=3 needs grain: pip install -e "
            r"'\.\[grain\]' \(or set input.workers=0\)"):
      workers.train_batches(None, 0, 1, 3)


if __name__ == '__main__':
  absltest.main()
