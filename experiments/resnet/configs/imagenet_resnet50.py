"""ResNet-50 v1.5 on ImageNet (ILSVRC2012 class folders), the Flax ImageNet recipe: 100 epochs, batch 1024.

    python -m experiments.resnet.main --config experiments/resnet/configs/imagenet_resnet50.py \
        --workdir /tmp/imagenet_resnet50 --config.data_dir=/data/imagenet [--config.dtype=bfloat16]

Expect about 76-77% top-1 after 100 epochs (the Flax example's number on TPU/GPU; not measured here). On
this CPU-only machine one step of batch 1024 takes minutes: this config is for accelerators. Pillow decodes
JPEGs on the host, which can bottleneck a fast accelerator.
"""
from experiments.resnet.configs import default


def get_config():
  return default.get_config()
