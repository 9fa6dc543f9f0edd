"""CIFAR-10, ResNet-56 BCNet supernet (the paper's CIFAR-10 recipe).

  python -m bcnet_jax.train --config=configs/cifar10.py --workdir=$WORKDIR

Data (any one; see the README, "Preparing data"):
  tfds (default): prepared once with
    tfds build cifar10 --file_format=array_record   (needs TensorFlow)
  the CIFAR-10 python archive, no TensorFlow:
    --config.input.source=cifar10_archive \
    --config.input.data_dir=/path/to/cifar-10-python.tar.gz
  an image folder (<root>/train/<class>/*.jpg, <root>/test/...):
    --config.input.source=image_folder --config.input.data_dir=/path/to/root

Supernet: global batch 256, SGD Nesterov momentum 0.9, lr 0.1 cosine with 5
warm-up epochs, weight decay 5e-4, 300 epochs; 5,000 training images held
out as the search's minival split. Hardware: one GPU or TPU host (a CPU runs
it, slowly: measure with bench/train_step.py).

Retraining (--config.stage=retrain --config.retrain.arch=PATH): the same
SGD recipe from scratch for as many epochs (config_utils.cifar10_supernet).
"""

from bcnet_jax.run import config_utils


def get_config():
  return config_utils.cifar10_supernet(
      'resnet56_cifar', total_epochs=300.0, warmup_epochs=5.0,
      eval_every_epochs=10.0)
