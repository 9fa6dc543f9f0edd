"""Channel-Bench-Macro MobileNet space on CIFAR-10 (docs/design.md §8).

  python -m bcnet_jax.train --config=configs/cbm_mobilenet.py --workdir=$WORKDIR

Data as in configs/cifar10.py. Supernet: global batch 256, SGD Nesterov
momentum 0.9, lr 0.1 cosine, weight decay 5e-4, 60 epochs (the benchmark's
recipe); 5,000 minival images. Hardware: one GPU or TPU host. On a CPU,
score in minutes, not hours, by training with fewer held-out images and
ranking with fewer calibration batches (each ranked width vector costs
eval.bn_calib_batches x input.batch_size calibration images and a pass over
minival per path):

  python -m bcnet_jax.train --config=configs/cbm_mobilenet.py \
      --workdir=$WORKDIR --config.input.batch_size=64 \
      --config.input.minival_size=1000 --config.total_steps=200 \
      --config.eval.bn_calib_batches=2
  python -m bcnet_jax.rank --workdir=$WORKDIR --archs=archs.json

Retraining (--config.stage=retrain --config.retrain.arch=PATH): the same
SGD recipe from scratch for as many epochs (config_utils.cifar10_supernet).
"""

from bcnet_jax.run import config_utils


def get_config():
  return config_utils.cifar10_supernet(
      'cbm_mobilenet', total_epochs=60.0, warmup_epochs=0.0,
      eval_every_epochs=5.0)
