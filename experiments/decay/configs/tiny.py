"""Seconds-long sizes for tests: every part of the study runs and reports, none of its numbers mean anything.

    python -m experiments.decay --out /tmp/decay --config tiny
"""
import ml_collections

from experiments.decay.configs import quick


def get_config() -> ml_collections.ConfigDict:
  config = quick.get_config()
  config.mode = "tiny"
  config.expected_time = "seconds"
  config.overrides = dict(config.overrides, num_train_steps=6, warmup_steps=1, eval_every_steps=3,
                          log_every_steps=2, max_eval_sequences=16, vocab_size=300)
  config.cells = (("none", "adam"), ("none", "acclip"), ("decoupled", "adam"), ("decoupled", "acclip"))
  config.seeds = (0, 1)
  return config
