"""The quick stability-margin study: the same protocol on the quick comparison's model, corpus and steps.

    python -m experiments.stability --out /tmp/stability --quick
    python -m experiments.reproduce --out /tmp/quick --quick          # the whole reproduction

Expected time: 1.5 to 3 minutes on 2 idle CPU cores (12 runs of 200 steps of 16 x 64 tokens, one compilation
per method). No recorded summary: every learning rate is run here: the quick comparison's best learning
rate for AdamW and the next point of its grid.
"""
import ml_collections

from experiments.stability.configs import full


def get_config() -> ml_collections.ConfigDict:
  config = full.get_config()
  config.mode = "quick"
  config.expected_time = "1.5 to 3 minutes on 2 CPU cores"
  config.comparison = "quick"
  # The spike-clipping methods only: QK-clip and Muon would add 6 runs (about 40 s), and the quick
  # reproduction is at its 15 minutes.
  config.methods = ("adamw", "acclip_ports", "zclip", "spam", "stable_spam", "skip_step_on_spikes")
  config.learning_rates = {name: (0.003, 0.01) for name in config.methods}
  config.recorded_summary = ""
  config.recorded_study = ""
  config.checkpoint_runs = False  # runs of seconds
  config.overrides = {}
  config.spike_window = 20
  # No runs below the best: every method's best of the two is 0.003, and 6 runs more would take the quick
  # reproduction past its 15 minutes; the summary marks a best at the lowest learning rate instead.
  config.extend_below_best = False
  return config
