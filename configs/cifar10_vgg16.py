"""CIFAR-10, VGG-16 BCNet supernet (`vgg16_cifar`).

  python -m bcnet_jax.train --config=configs/cifar10_vgg16.py --workdir=$WORKDIR

Data as in configs/cifar10.py (tfds cifar10 in array_record format by
default; `--config.input.source=cifar10_archive` or `image_folder` with
`--config.input.data_dir` read the archive or a JPEG folder instead).
Supernet: global batch 256, SGD Nesterov momentum 0.9, lr 0.1 cosine with 5
warm-up epochs, weight decay 5e-4, 300 epochs, 5,000 minival images.
Hardware: one GPU or TPU host.

Retraining (--config.stage=retrain --config.retrain.arch=PATH): the same
SGD recipe from scratch for as many epochs (config_utils.cifar10_supernet).
"""

from bcnet_jax.run import config_utils


def get_config():
  return config_utils.cifar10_supernet(
      'vgg16_cifar', total_epochs=300.0, warmup_epochs=5.0,
      eval_every_epochs=10.0)
