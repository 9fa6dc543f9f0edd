"""CIFAR-10, MobileNetV2 BCNet supernet (`mobilenetv2_cifar`).

  python -m bcnet_jax.train --config=configs/cifar10_mobilenetv2.py \\
      --workdir=$WORKDIR

Data as in configs/cifar10.py (tfds cifar10 in array_record format by
default; `--config.input.source=cifar10_archive` or `image_folder` with
`--config.input.data_dir` read the archive or a JPEG folder instead).
Supernet: global batch 256, SGD Nesterov momentum 0.9, lr 0.1 cosine with 5
warm-up epochs, weight decay 5e-4, 300 epochs, 5,000 minival images.
Hardware: one GPU or TPU host.
"""

from bcnet_jax import config_utils


def get_config():
  c = config_utils.base_config()
  c.model.name = 'mobilenetv2_cifar'
  c.input.source = 'tfds'
  c.input.name = 'cifar10'
  c.input.batch_size = 256
  c.optim.learning_rate = 0.1
  c.optim.weight_decay = 5e-4
  c.optim.warmup_epochs = 5.0
  c.total_epochs = 300.0
  c.eval_every_epochs = 10.0
  return c
