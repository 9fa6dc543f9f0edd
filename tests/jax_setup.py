"""JAX settings shared by the test suite (pytest and `python -m tests.x`)."""

import os


def configure() -> None:
  """A persistent compilation cache for repeated runs.

  Not jax_disable_most_optimizations: measured here it saves little compile
  time and makes the model tests' runs 3-7x slower.
  """
  import jax  # pylint: disable=g-import-not-at-top
  cache = os.environ.get('BCNET_TEST_CACHE',
                         os.path.expanduser('~/.cache/bcnet_jax/xla'))
  jax.config.update('jax_compilation_cache_dir', cache)
  jax.config.update('jax_persistent_cache_min_compile_time_secs', 0.5)
