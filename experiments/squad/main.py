"""Command line for SQuAD v1.1 fine-tuning.

    python -m experiments.squad.main --config experiments/squad/configs/default.py --workdir W \
        --pretrained_workdir P [--config.train_file=... --config.dev_file=... --config.optimizer=acclip ...]

W must not be P or lie inside it; the flag overrides config.pretrained_workdir, and W/config.json records it. Re-running with the same workdir resumes from its latest checkpoint. The
final metrics (with the dev exact match and F1) are printed as JSON; the exit status is 1 when the run
diverged.
"""
from absl import flags

from experiments.common import cli
from experiments.squad import train

if __name__ == "__main__":
  pretrained_workdir = flags.DEFINE_string(
      "pretrained_workdir", None, "A pre-training workdir (vocab.txt, checkpoints/) whose encoder is "
      "fine-tuned; unset: config.pretrained_workdir, or a randomly initialised encoder.")

  def finetune(config, workdir):
    if pretrained_workdir.value:  # the config (and so the run's config.json) names the encoder's source
      config.pretrained_workdir = pretrained_workdir.value
    return train.finetune(config, workdir)

  cli.run(finetune,
          workdir_help="Directory for the metrics, checkpoints, predictions.json and loss plot.",
          config_help="A config file (experiments/squad/configs/*.py).")
