"""Test set-up that must happen before jax initialises its backend."""

import os

# 8 fake CPU devices for the data-parallel tests (docs/design.md §9).
os.environ['XLA_FLAGS'] = (os.environ.get('XLA_FLAGS', '') +
                           ' --xla_force_host_platform_device_count=8')
os.environ.setdefault('CUDA_VISIBLE_DEVICES', '')  # tests are CPU-only

from tests import jax_setup  # noqa: E402  pylint: disable=g-import-not-at-top

jax_setup.configure()

# absltest helpers (create_tempdir, ...) read absl flags, which pytest never
# parses.
from absl import flags  # noqa: E402  pylint: disable=g-import-not-at-top

flags.FLAGS.mark_as_parsed()
