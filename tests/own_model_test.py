"""A model written outside the package (examples/my_cnn.py) through the CLI.

train -> search -> retrain -> export -> predict on configs/testing.py (real
MNIST digits), every step a command as a user types it; a search killed
with SIGKILL resumes to the same arch as the uninterrupted one.
"""

import json
import os
import pathlib
import shutil
import signal
import subprocess
import tempfile
import time

from absl.testing import absltest
import jax
import numpy as np
from PIL import Image

from bcnet_jax.retrain import export
from bcnet_jax.space.costs import CostModel
from tests import images
from tests.programs import command
from tests.programs import KILLED_ENV
from tests.programs import ROOT
from tests.programs import searched_arch
from tests.programs import SUBPROCESS_ENV

MODEL = ['--config=configs/testing.py',
         '--config.model.name=examples.my_cnn:MyCNN',
         '--config.model.kwargs={"widths": [8, 16]}']


def run(module: str, *flags: str) -> str:
  out = subprocess.run(command(module, *flags), cwd=ROOT,
                       env=SUBPROCESS_ENV, capture_output=True, text=True)
  if out.returncode:
    raise AssertionError(f'{module} {flags} failed:\n{out.stderr[-3000:]}')
  return out.stdout


class OwnModelCliTest(absltest.TestCase):

  @classmethod
  def setUpClass(cls):
    super().setUpClass()
    cls.tmp = tempfile.mkdtemp()
    cls.trained = os.path.join(cls.tmp, 'trained')
    run('train', *MODEL, f'--workdir={cls.trained}')
    cls.searched = os.path.join(cls.tmp, 'searched')
    shutil.copytree(cls.trained, cls.searched)
    run('search', f'--workdir={cls.searched}')

  @classmethod
  def tearDownClass(cls):
    shutil.rmtree(cls.tmp)
    super().tearDownClass()

  def arch(self, workdir: str) -> str:
    return pathlib.Path(workdir, 'search', 'arch.json').read_text()

  def test_the_search_writes_an_arch_of_the_traced_groups(self):
    arch = json.loads(self.arch(self.searched))
    self.assertEqual(arch['model'], 'examples.my_cnn:MyCNN')
    self.assertEqual(list(arch['widths']), ['stem', 'stage1/conv1',
                                            'stage2/conv1', 'stage2/conv2'])
    self.assertLessEqual(arch['macs'], arch['macs_budget'])

  def test_retrain_export_predict(self):
    workdir = os.path.join(self.tmp, 'retrained')
    arch_path = os.path.join(self.searched, 'search', 'arch.json')
    run('train', f'--config={self.trained}/config.json',
        f'--workdir={workdir}', '--config.stage=retrain',
        f'--config.retrain.arch={arch_path}')
    arch = json.loads(pathlib.Path(arch_path).read_text())
    model, variables, info = export.load(workdir)
    widths = np.asarray(model.widths)
    self.assertEqual(CostModel(model).macs(widths), arch['macs'])
    self.assertEqual(sum(v.size for v in jax.tree.leaves(
        variables['params'])), arch['params'])
    # The compact parameters are the user's tree, narrower.
    kernel = variables['params']['stage1']['conv1']['kernel']
    self.assertEqual(kernel.shape[-1], arch['channels']['stage1/conv1'])
    digits = []
    for i, pixels in enumerate(images.mnist_pixels(3, offset=3900)):
      digits.append(os.path.join(self.tmp, f'{i}.png'))
      Image.fromarray(pixels).save(digits[-1])
    exported = jax.export.deserialize(bytearray(pathlib.Path(
        workdir, export.JAX_EXPORT).read_bytes()))
    probe = images.mnist_images(5, 28, channels=1)
    logits, _ = model.apply(variables, probe, train=False)
    np.testing.assert_allclose(exported.call(probe), jax.nn.softmax(logits),
                               rtol=1e-5, atol=1e-6)
    lines = run('predict', f'--workdir={workdir}', '--json', *digits)
    predictions = [json.loads(line) for line in lines.splitlines()]
    self.assertLen(predictions, 3)
    for p in predictions:
      self.assertLen(p['top5'], 5)
      self.assertIn(p['top5'][0][0], info['classes'])

  def test_sigkilled_search_resumes_to_the_same_arch(self):
    workdir = os.path.join(self.tmp, 'killed')
    shutil.copytree(self.trained, workdir)
    state_path = pathlib.Path(workdir, 'search', 'state.json')
    process = subprocess.Popen(
        command('search', f'--workdir={workdir}'), cwd=ROOT,
        env=KILLED_ENV, stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL)
    deadline = time.time() + 300
    while time.time() < deadline and process.poll() is None:
      if (state_path.exists() and
          json.loads(state_path.read_text())['units_done'] >= 1):
        process.send_signal(signal.SIGKILL)
        break
      time.sleep(0.01)
    self.assertEqual(process.wait(), -signal.SIGKILL,
                     'the search ended before it could be killed')
    run('search', f'--workdir={workdir}')
    self.assertEqual(searched_arch(workdir), searched_arch(self.searched))


if __name__ == '__main__':
  absltest.main()
