"""bcnet_jax: BCNet width search (Su et al., CVPR 2021) in JAX/Flax."""

__version__ = '0.2.0'
