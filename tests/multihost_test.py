"""Several processes on 127.0.0.1 as one run (jax.distributed, gloo): a
process that dies stops the others (no hang); rerun, the run resumes and
ends with the parameters and the searched arch of the same processes never
stopped.

The reference has the same topology (2 processes x 2 devices): XLA:CPU
splits work by the devices of a process, so another topology may sum in
another order (seen on a 2-core machine: 1 process x 4 devices ended 6
steps 2e-3 away from 2 x 2), and a resumed run must match bit for bit."""

import json
import os
import pathlib
import socket
import subprocess
import threading
import time

from absl.testing import absltest

from tests.programs import command
from tests.programs import KILLED_ENV
from tests.programs import ROOT
from tests.programs import SUBPROCESS_ENV

STEPS = 6  # a checkpoint every 2: the kill comes after the first


def free_port() -> int:
  with socket.socket() as s:
    s.bind(('127.0.0.1', 0))
    return s.getsockname()[1]


def launch(module: str, workdir: str, processes: int, devices: int,
           *flags: str, env=SUBPROCESS_ENV) -> list[subprocess.Popen]:
  """`processes` processes of `python -m bcnet_jax.<module>` joined by
  jax.distributed, each with `devices` CPU devices, in `env`; the output of
  process i goes to <workdir>.<module>.<i>.log.
  """
  env = {k: v for k, v in env.items() if k != 'XLA_FLAGS'}
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


def stop(processes: list[subprocess.Popen]) -> None:
  for p in processes:
    if p.poll() is None:
      p.kill()
      p.wait()


def finish(processes: list[subprocess.Popen], timeout: float = 400) -> None:
  try:
    for p in processes:
      p.wait(timeout)
  finally:
    stop(processes)
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

  def test_a_dead_process_stops_the_run_which_resumes_to_the_same_end(self):
    tmp = self.create_tempdir().full_path  # workdirs and their logs
    one, two = os.path.join(tmp, 'one'), os.path.join(tmp, 'two')
    processes = launch('train', two, 2, 2, env=KILLED_ENV)
    self.addCleanup(stop, processes)
    deadline = time.time() + 400
    while time.time() < deadline and not checkpoint_steps(two):
      self.assertIsNone(processes[0].poll(), 'the run ended before the kill')
      time.sleep(0.05)
    self.assertNotEmpty(checkpoint_steps(two), 'no checkpoint in 400 s')
    self.assertIsNone(processes[0].poll(), 'the run ended before the kill')
    # Process 1 dies: process 0 must stop with an error, in bounded time.
    processes[1].kill()
    died = time.time()
    survivor_exit = []
    watcher = threading.Thread(target=lambda: survivor_exit.append(
        (processes[0].wait(), time.time())), daemon=True)
    watcher.start()
    # Meanwhile (process 0 only waits), the reference never stopped:
    # train, then search.
    finish(launch('train', one, 2, 2))
    finish(launch('search', one, 2, 2))
    watcher.join(timeout=max(0, died + 180 - time.time()))
    self.assertNotEmpty(survivor_exit, 'process 0 still runs 180 s on')
    code, exited = survivor_exit[0]
    self.assertNotEqual(code, 0)
    self.assertLess(exited - died, 180)
    killed_at = checkpoint_steps(two)
    self.assertNotEmpty(killed_at)
    self.assertLess(max(killed_at), STEPS)

    # Rerun, both processes: the same parameters as never stopped.
    finish(launch('train', two, 2, 2))
    summary, reference = result(two, 'train'), result(one, 'train')
    self.assertEqual(summary['first_step_this_run'], max(killed_at))
    self.assertEqual(summary['params_sha256'], reference['params_sha256'])
    # Only process 0 wrote the run's files: each step logged once.
    with open(os.path.join(two, 'metrics.jsonl')) as f:
      logged = [json.loads(line)['step'] for line in f
                if 'train/loss' in line]
    self.assertEqual(logged, sorted(set(logged)))

    # The search over both processes' devices: the same arch.
    finish(launch('search', two, 2, 2))
    with open(os.path.join(two, 'search', 'arch.json')) as f:
      arch = json.load(f)
    with open(os.path.join(one, 'search', 'arch.json')) as f:
      self.assertEqual(arch['widths'], json.load(f)['widths'])

if __name__ == '__main__':
  absltest.main()
