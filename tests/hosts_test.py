"""When a command joins other processes (run/hosts.py), with
jax.distributed.initialize replaced by a recorder: who asks, and with what."""

import os
from unittest import mock

from absl.testing import absltest
from absl.testing import parameterized

from bcnet_jax.run import errors
from bcnet_jax.run import hosts

CLUSTER_VARIABLES = ('JAX_COORDINATOR_ADDRESS', 'JAX_NUM_PROCESSES',
                     'JAX_PROCESS_ID', 'SLURM_STEP_NUM_TASKS',
                     'OMPI_COMM_WORLD_SIZE')


class JoinTest(parameterized.TestCase):

  def join(self, environment, *args, tpu_vm=False, initialize=None):
    """The calls of jax.distributed.initialize that join made."""
    clean = {k: v for k, v in os.environ.items()
             if k not in CLUSTER_VARIABLES}
    recorder = mock.Mock(side_effect=initialize)
    with mock.patch.dict(os.environ, {**clean, **environment}, clear=True), \
        mock.patch.object(hosts.jax.distributed, 'initialize', recorder), \
        mock.patch.object(hosts, '_on_tpu_vm', return_value=tpu_vm):
      hosts.join(*args)
    return recorder.call_args_list

  def test_explicit_flags_or_variables(self):
    expected = [mock.call('10.0.0.1:99', 2, 1, heartbeat_timeout_seconds=60)]
    self.assertEqual(self.join({}, '10.0.0.1:99', 2, 1), expected)
    self.assertEqual(self.join({'JAX_COORDINATOR_ADDRESS': '10.0.0.1:99',
                                'JAX_NUM_PROCESSES': '2',
                                'JAX_PROCESS_ID': '1'}), expected)

  @parameterized.parameters(
      ({'SLURM_STEP_NUM_TASKS': '8'}, 1),
      ({'OMPI_COMM_WORLD_SIZE': '4'}, 1),
      ({'SLURM_STEP_NUM_TASKS': '1'}, 0),  # srun of one task
      ({}, 0),                              # a laptop
  )
  def test_a_cluster_of_several_processes_is_joined(self, environment,
                                                    calls):
    self.assertLen(self.join(environment), calls)

  def test_a_tpu_vm_joins_its_slice_or_runs_alone(self):
    self.assertLen(self.join({}, tpu_vm=True), 1)
    no_cluster = ValueError('coordinator_address should be defined.')
    self.assertLen(self.join({}, tpu_vm=True, initialize=no_cluster), 1)

  @parameterized.parameters(
      (('h:1',), {}, 'needs --num_processes and --process_id'),
      (('h:1', 2, 2), {}, r'--process_id=2 must be in \[0, 2\)'),
      ((None, 2, 0), {}, 'need --coordinator=HOST:PORT'),
      ((), {'JAX_COORDINATOR_ADDRESS': 'h:1', 'JAX_NUM_PROCESSES': 'two',
            'JAX_PROCESS_ID': '0'}, "JAX_NUM_PROCESSES='two' must be a whole"),
  )
  def test_an_incomplete_or_bad_set_is_a_user_error(self, args, environment,
                                                    message):
    with self.assertRaisesRegex(errors.InvalidInput, message):
      self.join(environment, *args)


if __name__ == '__main__':
  absltest.main()
