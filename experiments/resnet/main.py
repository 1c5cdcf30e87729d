"""Command line for ResNet image classification.

    python -m experiments.resnet.main --config experiments/resnet/configs/fashion_mnist_resnet18.py \
        --workdir /tmp/resnet18_fmnist [--config.optimizer=acclip --config.learning_rate=1e-3 ...]

Re-running with the same workdir resumes from its latest checkpoint. The final metrics are printed as JSON.
"""
from experiments.common import cli
from experiments.resnet import train

if __name__ == "__main__":
  cli.run(train.train_and_evaluate,
          workdir_help="Directory for the metrics, checkpoints and loss plot.",
          config_help="A config file (experiments/resnet/configs/*.py).")
