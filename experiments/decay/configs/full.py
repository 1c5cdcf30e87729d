"""The full weight-decay factorial (RQ7): the full comparison's tiny BERT, the cells that decide the question.

    python -m experiments.decay --out /tmp/decay_full

Expected time: 8 to 9 hours on 2 CPU cores (7 cells of at least 5 runs of 2000 steps, 13-14 minutes each
with both cores; one at a time). Rerunning the same command continues an interrupted study: finished runs are
reused and a run a preemption notice (SIGTERM) stopped resumes from its checkpoint. Needs the Debian package
python3.11-doc.

The coupled and decoupled cells come from the full comparison's recorded summary (`recorded_cells`): Adam
with coupled L2 (the comparison's `adam`), and AdamW, the paper's ACClip, the ports' ACClip and SGD with
decoupled decay; the study checks that their run configs equal its own but for the optimizer.
"""
import ml_collections


def get_config() -> ml_collections.ConfigDict:
  config = ml_collections.ConfigDict()
  config.mode = "full"
  config.expected_time = ("8 to 9 hours on 2 CPU cores (7 cells of at least 5 runs, 13-14 minutes each); rerunning "
                          "the same command continues an interrupted study")
  # Every run is a run of this comparison config (experiments/comparison/configs/<comparison>.py): the same
  # model, corpus, steps, warm-up, seeds, learning-rate grids and per-optimizer fields (b2 and eps of both
  # ACClip rules); only the update rule, its weight decay and its peak learning rate change.
  config.comparison = "full"
  # On top of the comparison's run fields: a checkpoint every 250 steps, so that a run killed without notice
  # loses at most 250 steps (no number changes).
  config.overrides = dict(checkpoint_every_steps=250)
  # The update rules (registry names): Adam (optax.adam; decoupled decay on it is AdamW), the paper's ACClip,
  # the ports' ACClip, SGD with momentum 0.9.
  config.rules = ("adam", "acclip", "acclip_ports", "sgd")
  # The decay modes (experiments.common.optimizers). Independent decay shrinks the weights by weight_decay
  # per step (times the schedule's warm-up/decay shape) whatever the learning rate: 3e-5 is the per-step
  # shrink of AdamW at its best learning rate in the full comparison (0.003 x weight decay 0.01).
  config.decay_modes = {
      "none": dict(weight_decay=0.0, weight_decay_mode="decoupled"),
      "coupled": dict(weight_decay=0.01, weight_decay_mode="coupled"),
      "decoupled": dict(weight_decay=0.01, weight_decay_mode="decoupled"),
      "independent": dict(weight_decay=3e-5, weight_decay_mode="independent"),
  }
  # The cells run here, in this order (the ones that decide the question first).
  config.cells = (("none", "adam"), ("none", "acclip"), ("independent", "adam"), ("independent", "acclip"),
                  ("none", "sgd"), ("independent", "sgd"), ("none", "acclip_ports"))
  # Cells taken from a recorded comparison summary (relative to the repository): decay mode -> {rule: the
  # recorded optimizer}.
  config.recorded_summary = "docs/bert_full_later/results.json"
  config.recorded_cells = {"coupled": {"adam": "adam"},
                           "decoupled": {"adam": "adamw", "acclip": "acclip", "acclip_ports": "acclip_ports",
                                         "sgd": "sgd"}}
  config.seeds = ()  # the comparison's (0, 1, 2): the sweep with the first, the best rerun with the others
  return config
