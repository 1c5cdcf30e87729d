"""ResNet-18 (small-image stem) on CIFAR-10: the usual 200-epoch recipe at batch 128 (SGD-Nesterov, wd 5e-4).

    python -m experiments.resnet.main --config experiments/resnet/configs/cifar10_resnet18.py \
        --workdir /tmp/cifar10_resnet18 --config.data_dir=/data/cifar-10-batches-py

Expect about 95% test accuracy (the commonly reported figure for this recipe; not measured here). For
accelerators: a CPU step at full width takes seconds.
"""
from experiments.resnet.configs import fashion_mnist_resnet18


def get_config():
  config = fashion_mnist_resnet18.get_config()
  config.dataset = "cifar10"
  config.num_epochs = 200.0
  config.warmup_epochs = 1.0
  return config
