"""JAX settings shared by the test suite (pytest and `python -m tests.x`)."""

import os

CACHE_DIR = os.environ.get('BCNET_TEST_CACHE',
                           os.path.expanduser('~/.cache/bcnet_jax/xla'))
CACHE_MIN_COMPILE_S = 0.5


def configure() -> None:
  """A persistent compilation cache for repeated runs.

  Not jax_disable_most_optimizations: measured here it saves little compile
  time and makes the model tests' runs 3-7x slower.
  """
  import jax  # pylint: disable=g-import-not-at-top
  jax.config.update('jax_compilation_cache_dir', CACHE_DIR)
  jax.config.update('jax_persistent_cache_min_compile_time_secs',
                    CACHE_MIN_COMPILE_S)


def cache_environment() -> dict[str, str]:
  """The same cache for a command the tests run (jax reads its settings
  from these variables)."""
  return {'JAX_ENABLE_COMPILATION_CACHE':
              os.environ.get('JAX_ENABLE_COMPILATION_CACHE', 'true'),
          'JAX_COMPILATION_CACHE_DIR': CACHE_DIR,
          'JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS':
              str(CACHE_MIN_COMPILE_S)}
