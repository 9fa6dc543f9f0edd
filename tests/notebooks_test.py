"""The notebooks run top to bottom on the CPU with tiny sizes (the demo's
MNIST digits), as papermill runs them; git holds them without outputs."""

import base64
import io
import json
import os
import re
import subprocess
import sys
import tempfile

from absl.testing import absltest
from PIL import Image

from tests.programs import ROOT
from tests.programs import SUBPROCESS_ENV

NOTEBOOKS = ROOT / 'notebooks'
# One CPU device, as on a CPU runtime: no test-suite fake devices.
KERNEL_ENV = {k: v for k, v in SUBPROCESS_ENV.items() if k != 'XLA_FLAGS'}


def execute(name: str, output: str, cwd: str, **parameters) -> dict:
  """The executed notebook; a failing cell fails with its traceback."""
  flags = [f for k, v in parameters.items() for f in ('-p', k, str(v))]
  done = subprocess.run(
      [sys.executable, '-m', 'papermill', str(NOTEBOOKS / name), output,
       '--cwd', cwd, '-k', 'python3', '--no-progress-bar', *flags],
      env=KERNEL_ENV, capture_output=True, text=True, check=False)
  if done.returncode:
    raise AssertionError(f'{name} failed:\n{done.stderr[-6000:]}')
  with open(output) as f:
    return json.load(f)


def images_of(notebook: dict) -> list[Image.Image]:
  """Every PNG a code cell displayed."""
  return [Image.open(io.BytesIO(base64.b64decode(out['data']['image/png'])))
          for cell in notebook['cells'] if cell['cell_type'] == 'code'
          for out in cell.get('outputs', [])
          if 'image/png' in out.get('data', {})]


class NotebooksTest(absltest.TestCase):

  def test_git_holds_no_outputs(self):
    done = subprocess.run(
        [sys.executable, '-m', 'nbstripout', '--verify',
         *sorted(map(str, NOTEBOOKS.glob('*.ipynb')))],
        capture_output=True, text=True, check=False)
    self.assertEqual(done.returncode, 0, done.stdout + done.stderr)

  def test_quickstart_then_inspect_run_top_to_bottom(self):
    with tempfile.TemporaryDirectory() as tmp:
      quickstart = execute(
          'quickstart.ipynb', os.path.join(tmp, 'quickstart.ipynb'), tmp,
          DATASET='mnist_embedded', TRAIN_STEPS=20, RETRAIN_STEPS=10,
          BATCH_SIZE=32, POPULATION=4, GENERATIONS=1, WORKDIR='run')
      supernet = os.path.join(tmp, 'run', 'supernet')
      with open(os.path.join(supernet, 'search', 'arch.json')) as f:
        arch = json.load(f)
      with open(os.path.join(tmp, 'run', 'retrained', 'summary.json')) as f:
        retrained = json.load(f)
      inspected = execute(
          'inspect_run.ipynb', os.path.join(tmp, 'inspect_run.ipynb'), tmp,
          WORKDIR=supernet)

    self.assertEqual(retrained['arch']['widths'], arch['widths'])
    self.assertLessEqual(arch['macs'], arch['macs_budget'])
    # The population picture, then eight test digits with their labels.
    self.assertLen(images_of(quickstart), 2)
    printed = ''.join(''.join(out.get('text', ''))
                      for cell in quickstart['cells']
                      for out in cell.get('outputs', []))
    self.assertIn('on cpu', printed)
    self.assertLen(re.findall(r'test_\d\.png: \d \d+%', printed), 8)
    # Curves, channels against nominal, population.
    self.assertLen(images_of(inspected), 3)


  def test_your_own_model_top_to_bottom(self):
    with tempfile.TemporaryDirectory() as tmp:
      notebook = execute(
          'your_own_model.ipynb', os.path.join(tmp, 'own.ipynb'), tmp,
          TRAIN_STEPS=20, RETRAIN_STEPS=10, BATCH_SIZE=32, POPULATION=4,
          GENERATIONS=1, WORKDIR='run')
      with open(os.path.join(tmp, 'run', 'supernet', 'search',
                             'arch.json')) as f:
        arch = json.load(f)
    printed = ''.join(''.join(out.get('text', ''))
                      for cell in notebook['cells']
                      for out in cell.get('outputs', []))
    # The traced groups: conv2 and conv4 tied by the residual add.
    self.assertRegex(printed, r'conv2 \(32 channels\): .*conv4/kernel')
    self.assertEqual(list(arch['widths']),
                     ['conv1', 'conv2', 'conv3', 'conv5'])
    self.assertLessEqual(arch['macs'], arch['macs_budget'])
    self.assertLen(images_of(notebook), 1)  # the population picture
    difference = float(re.search(
        r'max difference, your module vs the retrained network: (\S+)',
        printed).group(1))
    self.assertLess(difference, 1e-5)


if __name__ == '__main__':
  absltest.main()
