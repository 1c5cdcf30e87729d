"""Seconds-long sizes for tests: every part of the study runs and reports, none of its numbers mean anything.

    python -m experiments.stability --out /tmp/stability --config tiny
"""
import ml_collections

from experiments.stability.configs import quick


def get_config() -> ml_collections.ConfigDict:
  config = quick.get_config()
  config.mode = "tiny"
  config.expected_time = "seconds"
  config.methods = ("adamw", "skip_step_on_spikes")
  config.learning_rates = {"adamw": (0.01, 0.3), "skip_step_on_spikes": (0.01,)}
  # On top of the quick comparison's overrides: a smaller model and run.
  config.overrides = dict(model=dict(hidden_size=32, intermediate_size=64, num_layers=1, num_heads=2),
                          vocab_size=512, num_train_steps=12, warmup_steps=2, batch_size=8, max_seq_len=32,
                          max_predictions_per_seq=5, eval_every_steps=6, log_every_steps=2,
                          max_eval_sequences=16)
  config.spike_window = 4
  config.checkpoint_runs = True  # the final checkpoints are diagnosed, as in the full config
  config.max_extensions = 0  # three runs, whatever 12 steps do (the extensions are tested on their own)
  return config
