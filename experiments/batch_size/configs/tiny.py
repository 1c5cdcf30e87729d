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
  # One optimizer: each (optimizer, batch size) compiles a ResNet-18 step, seconds each.
  config.control = dict(config.control, filters=2, batch_sizes=(4, 8), num_train_steps=4, optimizers=("sgd",),
                        learning_rates=dict(sgd=(0.1, 0.3, 1.0)), seeds=(0, 1), eval_examples=16, eval_batch_size=8)
  return config
