"""ImageNet, ResNet-50 BCNet supernet (`resnet50`, 224x224).

  python -m bcnet_jax.train --config=configs/imagenet_resnet50.py \\
      --workdir=$WORKDIR

Data: tfds imagenet2012, prepared once from the archives you download from
image-net.org (needs TensorFlow):
  tfds build imagenet2012 --file_format=array_record \
      --manual_dir=/path/to/the/archives [--data_dir=...]
then pass `--config.input.data_dir` if it is not ~/tensorflow_datasets. Or an
image folder: `--config.input.source=image_folder` with
`--config.input.train_split=train --config.input.eval_split=val`.
Supernet: global batch 512, SGD Nesterov momentum 0.9, lr 0.1 cosine with 5
warm-up epochs, weight decay 1e-4 (not on BN or biases), label smoothing 0.1,
Inception crop + flip, 10,000 training images held out as minival.
Hardware: a TPU pod slice or a multi-GPU host (jit over every device).
"""

from bcnet_jax import config_utils


def get_config():
  c = config_utils.base_config()
  c.model.name = 'resnet50'
  c.input.source = 'tfds'
  c.input.name = 'imagenet2012'
  c.input.eval_split = 'validation'
  c.input.minival_size = 10000
  c.input.batch_size = 512
  c.input.eval_batch_size = 1000
  c.input.resolution = 224
  c.input.augment = 'imagenet'
  c.input.mean = (0.485, 0.456, 0.406)
  c.input.std = (0.229, 0.224, 0.225)
  c.input.num_threads = 32
  c.supernet.label_smoothing = 0.1
  c.optim.learning_rate = 0.1
  c.optim.weight_decay = 1e-4
  c.optim.warmup_epochs = 5.0
  c.total_epochs = 100.0
  c.eval_every_epochs = 5.0
  c.eval.bn_calib_batches = 20
  return c
