"""ImageNet, EfficientNet-B0 BCNet supernet (`efficientnet_b0`, 224x224).

  python -m bcnet_jax.train --config=configs/imagenet_efficientnet_b0.py \\
      --workdir=$WORKDIR

Data: tfds imagenet2012, prepared once from the archives you download from
image-net.org (needs TensorFlow):
  tfds build imagenet2012 --file_format=array_record \
      --manual_dir=/path/to/the/archives [--data_dir=...]
then pass `--config.input.data_dir` if it is not ~/tensorflow_datasets. Or an
image folder: `--config.input.source=image_folder` with
`--config.input.train_split=train --config.input.eval_split=val`.
Supernet: global batch 512, SGD Nesterov momentum 0.9, lr 0.1 cosine with 5
warm-up epochs, weight decay 4e-5 (not on BN or biases), label smoothing 0.1,
Inception crop + flip, 10,000 training images held out as minival; each
pass's gradients before the next (supernet.pass_by_pass: a plain step's
memory, not twice it).
Hardware: a TPU pod slice or a multi-GPU host (jit over every device).

Retraining (--config.stage=retrain --config.retrain.arch=PATH): the
supernet's SGD recipe from scratch, 100 epochs, label smoothing 0.1
(config_utils.imagenet_supernet), not each model's published one.
"""

from bcnet_jax.run import config_utils


def get_config():
  return config_utils.imagenet_supernet('efficientnet_b0', weight_decay=4e-5)
