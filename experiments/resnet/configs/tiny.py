"""A narrow ResNet-18 (8 filters) on 2048 Fashion-MNIST images for smoke tests and CPU studies.

    python -m experiments.resnet.main --config experiments/resnet/configs/tiny.py --workdir /tmp/resnet_tiny

Falls back to scikit-learn's digits (with a warning) when Fashion-MNIST is not installed. Expected: 100 steps
reach eval accuracy about 0.37 in about 30 s of CPU time, mostly compilation.
"""
from experiments.resnet.configs import fashion_mnist_resnet18


def get_config():
  config = fashion_mnist_resnet18.get_config()
  config.num_filters = 8
  config.allow_digits_fallback = True
  config.max_train_examples = 2048
  config.max_eval_examples = 1000
  config.batch_size = 64
  config.eval_batch_size = 500
  config.num_epochs = 0.0
  config.num_train_steps = 100
  config.warmup_epochs = 0.0
  config.warmup_steps = 10
  config.log_every_steps = 10
  config.checkpoint_every_steps = 0
  return config
