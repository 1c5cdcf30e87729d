"""The quick stability-margin study: the same protocol on the quick comparison's model, corpus and steps.

    python -m experiments.stability --out /tmp/stability --quick
    python -m experiments.reproduce --out /tmp/quick --quick          # the whole reproduction

Expected time: 1.5 to 3 minutes on 2 idle CPU cores (12 runs of 200 steps of 16 x 64 tokens, one compilation
per method). No recorded summary: every learning rate is run here. At these sizes AdamW's best learning rate
(the quick comparison's) is 0.003; at 0.01 its validation accuracy is 0.19 at step 100 and 0.063 at step 200,
and its held-out accuracy ends at the majority accuracy (0.068), as every method's does there.
"""
import ml_collections

from experiments.stability.configs import full


def get_config() -> ml_collections.ConfigDict:
  config = full.get_config()
  config.mode = "quick"
  config.expected_time = "1.5 to 3 minutes on 2 CPU cores"
  config.comparison = "quick"
  config.learning_rates = {name: (0.003, 0.01) for name in config.methods}  # AdamW: best 0.003, 0.01 collapses
  config.recorded_summary = ""
  config.checkpoint_runs = False  # runs of seconds
  config.overrides = {}
  config.spike_window = 20
  return config
