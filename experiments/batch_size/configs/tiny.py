"""Seconds-long sizes for tests: every part of the study runs and reports, none of its numbers mean anything.

    python -m experiments.batch_size --out /tmp/batch_size --config tiny
"""
import ml_collections

from experiments.batch_size.configs import quick


def get_config() -> ml_collections.ConfigDict:
  config = quick.get_config()
  config.mode = "tiny"
  config.expected_time = "seconds"
  config.overrides = dict(config.overrides, max_train_sequences=16, num_train_steps=6, warmup_steps=1,
                          eval_every_steps=3, log_every_steps=2, max_eval_sequences=16, vocab_size=300)
  config.optimizers = ("sgd", "adam")
  config.batch_sizes = (4, 16)
  config.cells = ((4, "sgd"), (4, "adam"), (16, "sgd"), (16, "adam"))
  config.num_minibatches = 8
  config.num_coordinates = 50
  config.seeds = (0, 1)
  return config
