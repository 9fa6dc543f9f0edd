"""Several processes on 127.0.0.1 as one run (jax.distributed, gloo): the
same parameters and arch as one process with as many devices, a resume
after a kill, and no hang when a process dies."""

import json
import os
import pathlib
import shutil
import signal
import socket
import subprocess
import tempfile
import time

from absl.testing import absltest

from tests.programs import command
from tests.programs import ROOT
from tests.programs import SUBPROCESS_ENV

STEPS = 4  # a checkpoint every 2: the kill comes after step 2's


def free_port() -> int:
  with socket.socket() as s:
    s.bind(('127.0.0.1', 0))
    return s.getsockname()[1]


def launch(module: str, workdir: str, processes: int, devices: int,
           *flags: str) -> list[subprocess.Popen]:
  """`processes` processes of `python -m bcnet_jax.<module>` joined by
  jax.distributed, each with `devices` CPU devices; the output of process i
  goes to <workdir>.<module>.<i>.log.

  One process is joined too, so that it sums across devices with the same
  collectives (gloo) as several: XLA's in-process all-reduce sums in
  another order, and the parameters would then differ in their last bits.
  """
  env = {k: v for k, v in SUBPROCESS_ENV.items() if k != 'XLA_FLAGS'}
  env['JAX_NUM_CPU_DEVICES'] = str(devices)
  argv = command(module, '--config=configs/testing.py', f'--workdir={workdir}',
                 f'--config.total_steps={STEPS}', '--config.ckpt_every_steps=2',
                 '--config.log_every_steps=1',
                 *flags)
  port = free_port()
  out = []
  for i in range(processes):
    hosts = [f'--coordinator=127.0.0.1:{port}',
             f'--num_processes={processes}', f'--process_id={i}']
    with open(f'{workdir}.{module}.{i}.log', 'a') as log:
      out.append(subprocess.Popen(argv + hosts, cwd=ROOT, env=env,
                                  stdout=log, stderr=subprocess.STDOUT))
    out[-1].log = log.name
  return out


def finish(processes: list[subprocess.Popen], timeout: float = 400) -> None:
  for p in processes:
    p.wait(timeout)
  codes = [p.returncode for p in processes]
  if any(codes):
    with open(processes[0].log) as f:
      raise AssertionError(f'exit codes {codes}; process 0:\n'
                           f'{f.read()[-4000:]}')


def result(workdir: str, log: str) -> dict:
  """The last JSON line process 0 printed."""
  with open(f'{workdir}.{log}.0.log') as f:
    return json.loads(f.read().strip().splitlines()[-1])


def checkpoint_steps(workdir: str) -> list[int]:
  folder = pathlib.Path(workdir, 'checkpoints')
  return sorted(int(p.name) for p in folder.iterdir()
                if p.name.isdigit()) if folder.exists() else []


class MultiHostTest(absltest.TestCase):

  @classmethod
  def setUpClass(cls):
    super().setUpClass()
    cls.tmp = tempfile.mkdtemp()
    # One process with 4 devices: the reference run and its search.
    cls.one = os.path.join(cls.tmp, 'one')
    finish(launch('train', cls.one, 1, 4))
    finish(launch('search', cls.one, 1, 4))

  @classmethod
  def tearDownClass(cls):
    shutil.rmtree(cls.tmp)
    super().tearDownClass()

  def test_two_processes_killed_and_rerun_train_and_search_as_one(self):
    two = os.path.join(self.tmp, 'two')
    processes = launch('train', two, 2, 2)
    deadline = time.time() + 400
    while time.time() < deadline and not checkpoint_steps(two):
      self.assertIsNone(processes[0].poll(), 'the run ended before the kill')
      time.sleep(0.05)
    for p in processes:
      p.send_signal(signal.SIGKILL)
      p.wait()
    killed_at = checkpoint_steps(two)
    self.assertNotEmpty(killed_at)
    self.assertLess(max(killed_at), STEPS)

    finish(launch('train', two, 2, 2))
    summary, reference = result(two, 'train'), result(self.one, 'train')
    self.assertEqual(summary['first_step_this_run'], max(killed_at))
    self.assertEqual(summary['params_sha256'], reference['params_sha256'])
    # Only process 0 wrote the run's files.
    with open(os.path.join(two, 'metrics.jsonl')) as f:
      logged = [json.loads(line)['step'] for line in f
                if 'train/loss' in line]
    self.assertEqual(logged, sorted(set(logged)))

    finish(launch('search', two, 2, 2))
    with open(os.path.join(two, 'search', 'arch.json')) as f:
      arch = json.load(f)
    with open(os.path.join(self.one, 'search', 'arch.json')) as f:
      self.assertEqual(arch['widths'], json.load(f)['widths'])

  def test_a_process_that_dies_stops_the_other(self):
    workdir = os.path.join(self.tmp, 'dies')
    processes = launch('train', workdir, 2, 2, '--config.total_steps=100000',
                       '--config.ckpt_every_steps=100000')
    deadline = time.time() + 400
    while time.time() < deadline and not os.path.exists(
        os.path.join(workdir, 'metrics.jsonl')):
      self.assertIsNone(processes[0].poll())
      time.sleep(0.05)
    processes[1].send_signal(signal.SIGKILL)
    started = time.time()
    code = processes[0].wait(timeout=180)
    self.assertNotEqual(code, 0)
    self.assertLess(time.time() - started, 180)


if __name__ == '__main__':
  absltest.main()
