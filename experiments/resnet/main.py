"""Command line for ResNet image classification.

    python -m experiments.resnet.main --config experiments/resnet/configs/fashion_mnist_resnet18.py \
        --workdir /tmp/resnet18_fmnist [--config.optimizer=acclip --config.learning_rate=1e-3 ...]

Re-running with the same workdir resumes from its latest checkpoint. The final metrics are printed as JSON.
"""
import json

from absl import app
from absl import flags
from ml_collections import config_flags

from experiments.resnet import train

_WORKDIR = flags.DEFINE_string("workdir", None, "Directory for the metrics, checkpoints and loss plot.")
config_flags.DEFINE_config_file("config", None, "A config file (experiments/resnet/configs/*.py).",
                                lock_config=True)
flags.mark_flags_as_required(["config", "workdir"])


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  result = train.train_and_evaluate(flags.FLAGS.config, _WORKDIR.value)
  print(json.dumps(result, indent=2, default=str))


if __name__ == "__main__":
  app.run(main)
