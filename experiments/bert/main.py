"""Command line for BERT MLM pre-training.

    python -m experiments.bert.main --config experiments/bert/configs/tiny.py --workdir /tmp/bert_tiny \
        [--config.optimizer=acclip --config.learning_rate=1e-4 ...]

Re-running with the same workdir resumes from its latest checkpoint. The final metrics are printed as JSON.
"""
from experiments.bert import train
from experiments.common import cli

if __name__ == "__main__":
  cli.run(train.train_and_evaluate,
          workdir_help="Directory for the vocabulary, metrics, checkpoints, plot.",
          config_help="A config file (experiments/bert/configs/*.py).")
