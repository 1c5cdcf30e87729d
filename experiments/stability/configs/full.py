"""The full stability-margin study (RQ6): the full comparison's tiny BERT between its best learning rate and
the collapse.

    python -m experiments.stability --out /tmp/stability_full

Expected time: about 7.5 hours on 2 CPU cores (33 runs of 2000 steps, 13-14 minutes each with both cores,
one at a time: the 13 of the QK-clip and Muon methods and the 20 of the other six, which run again because the
recorded study's held-out data differ from this corpus (`recorded_study`, below); up to two runs more per
method whose largest learning rate still trains, Stable-SPAM's among them, or whose best run is its smallest
learning rate, `extend_below_best`). Rerunning the same command continues an interrupted
study: finished runs are reused and a run a preemption notice (SIGTERM) stopped resumes from its checkpoint. Needs the Debian package python3.11-doc.

The validation losses at 0.001-0.03 of AdamW, the ports' ACClip, ZClip and SPAM come from the full
comparison's recorded summary (`recorded_summary`); the runs here fill the grid between those methods' best
learning rate and the first one that collapses, which they run again for its curves.
"""
import ml_collections


def get_config() -> ml_collections.ConfigDict:
  config = ml_collections.ConfigDict()
  config.mode = "full"
  config.expected_time = ("about 7.5 hours on 2 CPU cores (33 runs, 13-14 minutes each with both cores); rerunning "
                          "the same command continues an interrupted study")
  # Every run is a run of this comparison config (experiments/comparison/configs/<comparison>.py): the same
  # model, corpus, steps, warm-up, weight decay and per-optimizer fields; only the optimizer and its peak
  # learning rate change.
  config.comparison = "full"
  # Run config fields set on top of the comparison's: a checkpoint every 250 steps, so that a run killed
  # without notice (SIGKILL) loses at most 250 steps when the same command resumes it.
  #
  # QK-clip's threshold tau (read by adamw_qkclip and muon_qkclip only), chosen above the largest attention
  # logits a healthy run of this model reaches, far below those of collapsed ones. Measured on the RQ7 study's
  # 2000-step Adam runs (experiments.decay, full mode; the same model, data and schedule): the logged
  # `max_attention_logit` (the largest pre-softmax logit over every layer, head and the step's batch), its
  # largest value over the run, in every run that trains: lr 0.003 without decay, seeds 1 and 2: 25.4, 37.7
  # (seed 0 ran before the logit was logged; its final checkpoint, by experiments.stability.diagnose: 17.97 on
  # the held-out batches); lr 0.003 with independent decay, seeds 0-2: 23.2, 23.4, 37.8; lr 0.001: 29.2 and
  # 29.1. Collapsed: lr 0.01 with independent decay 732.6 (diagnose, without decay: 1500); lr 0.03: 23704 and
  # 24785. tau = 50: 1.3 times the largest healthy value, 15 times below the smallest collapsed one.
  config.overrides = dict(checkpoint_every_steps=250, qk_clip_threshold=50.0)
  config.methods = ("adamw", "acclip_ports", "zclip", "spam", "stable_spam", "skip_step_on_spikes", "adamw_qkclip",
                    "muon", "muon_qkclip")
  # Runs go in this order, learning rate by learning rate, so that a study stopped early has compared every
  # method at the smaller learning rates.
  config.learning_rates = {name: (0.005, 0.007, 0.01) for name in config.methods}
  config.learning_rates.update(stable_spam=(0.003, 0.005, 0.007, 0.01), skip_step_on_spikes=(0.003, 0.005, 0.007, 0.01))
  # Muon has no recorded sweep: its own grid around AdamW's margin, extended upward while it still trains.
  config.learning_rates.update(muon=(0.003, 0.005, 0.007, 0.01, 0.03), muon_qkclip=(0.003, 0.005, 0.007, 0.01, 0.03))
  config.recorded_summary = "docs/bert_full_later/results.json"
  # The runs of the first six methods were recorded (docs/stability_full/summary.json) before QK-clip and Muon
  # joined, on another release of the Debian package python3.11-doc: its corpus gave 2,870,149 training tokens
  # and a held-out majority accuracy of 0.1014, where 3.11.2-6+deb12u9 gives 2,870,549 and 0.1034 (the same
  # 497 documents, a few of them changed). The study refuses to mix runs of two corpora, so every method runs
  # here again ("" : nothing reused).
  config.recorded_study = ""
  config.seed = 0
  config.checkpoint_runs = True  # a run of 13 minutes resumes after a preemption; the final one is diagnosed
  # A method whose best run (lowest validation loss among those that train) is the smallest learning rate it
  # has gets the next one down (at most max_extensions in all), so that its margin is counted from a best
  # inside what ran: Muon's grid, above all, has no recorded sweep below it.
  config.extend_below_best = True
  # Collapse: in every held-out evaluation from `collapse_after` of the run on, the accuracy is within
  # `collapse_margin` of the majority accuracy (one token predicted everywhere; see experiments.stability.study
  # for why accuracy). Spike: a training loss above `spike_factor` times the median of the `spike_window`
  # steps before it.
  config.collapse_margin = 0.01
  config.collapse_after = 0.5
  config.spike_factor = 1.5
  config.spike_window = 50
  return config
