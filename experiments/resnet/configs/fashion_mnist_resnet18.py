"""ResNet-18 (small-image stem) on Fashion-MNIST, the Flax ImageNet recipe scaled down: 10 epochs, batch 128.

    python -m experiments.resnet.main --config experiments/resnet/configs/fashion_mnist_resnet18.py \
        --workdir /tmp/fmnist_resnet18

Needs the four IDX files (`apt-get install dataset-fashion-mnist`, or --config.data_dir=FOLDER). ResNet-18
usually reaches about 93-95% test accuracy on Fashion-MNIST with this recipe (not measured here). On 2 CPU
cores a full-width step takes seconds: use --config.num_filters=16, or an accelerator (minutes for 10 epochs).
"""
from experiments.resnet.configs import default


def get_config():
  config = default.get_config()
  config.model = "resnet18"
  config.small_images = True
  config.dataset = "fashion_mnist"
  config.batch_size = 128
  config.eval_batch_size = 500
  config.num_epochs = 10.0
  config.warmup_epochs = 0.5
  config.weight_decay = 5e-4
  config.log_every_steps = 50
  config.checkpoint_every_steps = 1000
  return config
