"""The full stability-margin study (RQ6): the full comparison's tiny BERT between its best learning rate and
the collapse.

    python -m experiments.stability --out /tmp/stability_full

Expected time: 4 to 5 hours on 2 CPU cores (20 runs of 2000 steps, 13-14 minutes each with both cores; one
at a time). Rerunning the same command continues an interrupted study: finished runs are reused and a run a
preemption notice (SIGTERM) stopped resumes from its checkpoint. Needs the Debian package python3.11-doc.

The validation losses at 0.001-0.03 of AdamW, the ports' ACClip, ZClip and SPAM come from the full
comparison's recorded summary (`recorded_summary`); the runs here fill the grid between those methods' best
learning rate and the first one that collapses, which they run again for its curves.
"""
import ml_collections


def get_config() -> ml_collections.ConfigDict:
  config = ml_collections.ConfigDict()
  config.mode = "full"
  config.expected_time = ("4 to 5 hours on 2 CPU cores (20 runs, 13-14 minutes each with both cores); rerunning "
                          "the same command continues an interrupted study")
  # Every run is a run of this comparison config (experiments/comparison/configs/<comparison>.py): the same
  # model, corpus, steps, warm-up, weight decay and per-optimizer fields; only the optimizer and its peak
  # learning rate change.
  config.comparison = "full"
  # Run config fields set on top of the comparison's: a checkpoint every 250 steps, so that a run killed
  # without notice (SIGKILL) loses at most 250 steps when the same command resumes it.
  config.overrides = dict(checkpoint_every_steps=250)
  config.methods = ("adamw", "acclip_ports", "zclip", "spam", "stable_spam", "skip_step_on_spikes")
  # Runs go in this order, learning rate by learning rate, so that a study stopped early has compared every
  # method at the smaller learning rates.
  config.learning_rates = {name: (0.005, 0.007, 0.01) for name in config.methods}
  config.learning_rates.update(stable_spam=(0.003, 0.005, 0.007, 0.01), skip_step_on_spikes=(0.003, 0.005, 0.007, 0.01))
  config.recorded_summary = "docs/bert_full_later/results.json"
  config.seed = 0
  config.checkpoint_runs = True  # a run of 13 minutes resumes after a preemption; the final one is diagnosed
  # Collapse: in every held-out evaluation from `collapse_after` of the run on, the accuracy is within
  # `collapse_margin` of the majority accuracy (one token predicted everywhere; see experiments.stability.study
  # for why accuracy). Spike: a training loss above `spike_factor` times the median of the `spike_window`
  # steps before it.
  config.collapse_margin = 0.01
  config.collapse_after = 0.5
  config.spike_factor = 1.5
  config.spike_window = 50
  return config
