"""The full BERT optimizer comparison.

    python -m experiments.comparison --out /tmp/comparison
    python -m experiments.reproduce --out /tmp/full --parts bert      # the same, inside the reproduction

Expected time: 12 to 18 hours on 2 CPU cores (55 to 77 runs of 2000 steps, one at a time; a run takes
13-14 minutes and uses both cores); on one GPU: not measured. Rerunning the same command continues an
interrupted comparison (finished runs are reused; a preempted run resumes from its checkpoint). Needs the
Debian package python3.11-doc.
"""
import ml_collections

from experiments.comparison import study


def get_config() -> ml_collections.ConfigDict:
  config = ml_collections.ConfigDict()
  config.mode = "full"
  config.expected_time = ("12 to 18 hours on 2 CPU cores (measured: 13-14 minutes per run of 2000 steps, "
                          "55 to 77 runs for the eleven optimizers); on one GPU: not measured. Rerunning the same "
                          "command continues an interrupted comparison")
  # Every run starts from experiments/bert/configs/<bert_config>.py with these fields set.
  config.bert_config = "tiny"
  config.overrides = dict(num_train_steps=2000, warmup_steps=200, batch_size=32, max_seq_len=128,
                          eval_every_steps=250, log_every_steps=10, max_eval_sequences=1024, eval_fraction=0.05,
                          validation_fraction=0.05, plot=False)
  config.corpus = study.PYTHON_DOC_SOURCES
  # Registry names compared (experiments.common.optimizers.REGISTRY), and their per-optimizer fields on top
  # of the BERT config (whose b2 = 0.999, eps = 1e-6 are Adam's BERT recipe). Adam as torch.optim.Adam and
  # the paper's baseline: weight decay as L2 in the gradient (the factory's decoupled mode would make it
  # AdamW). ACClip, both rules: b2 = 0.99 and eps = 1e-5, the defaults of the paper's Algorithm 1 as used
  # by the public ports (Zhang et al. 2020, Algorithm 1).
  # The paper's seven, then the spike-clipping methods that followed it (RQ5). CClip is left out, as in the
  # paper's BERT runs (non-adaptive coordinate clipping needs a per-coordinate threshold BERT does not give).
  config.optimizers = ("adam", "adamw", "acclip", "acclip_ports", "lamb", "sgd", "gclip", "zclip", "adagc",
                       "autoclip", "spam")
  config.optimizer_fields = {"adam": {"weight_decay_mode": "coupled"}, "acclip": {"b2": 0.99, "eps": 1e-5},
                             "acclip_ports": {"b2": 0.99, "eps": 1e-5}}
  # Peak learning rates by the registry's learning-rate scale, each grid bracketing its optimizer's best value:
  # - Adam-scale optimizers divide by a second-moment estimate (Adam, AdamW, the ports' ACClip) or rescale
  #   each layer's Adam step (LAMB): steps of about lr.
  # - SGD's optax momentum sums gradients (m = b1 m + g, size g / (1 - b1)); GClip is SGD with a global-norm
  #   clip, so both move by lr * g / (1 - b1) at most.
  # - The exception: the paper's ACClip averages them (m = b1 m + (1 - b1) g) and clips m to the running
  #   mean of |g|, biased low early on: steps of at most lr * |g|, a factor ~10 below SGD's at the same lr.
  config.learning_rate_grids = {"adam": (1e-3, 3e-3, 1e-2, 3e-2, 1e-1), "sgd": (0.03, 0.1, 0.3, 1.0, 3.0)}
  config.learning_rate_grid_exceptions = {"acclip": (0.3, 1.0, 3.0, 10.0, 30.0)}
  # Runs keep checkpoints, so that a preempted one (SIGTERM) resumes where it stopped.
  config.checkpoint_runs = True
  config.seeds = (0, 1, 2)  # the sweep runs with seeds[0]; the best learning rate is rerun with the others
  # SQuAD v1.1 fine-tuning (with --squad-dir): each pair of these, from the first seed's best-lr encoder.
  config.finetune_optimizers = ("adam", "acclip")
  config.finetune_overrides = dict(num_train_steps=2000, max_seq_len=128, doc_stride=64, batch_size=16,
                                   warmup_fraction=0.1)
  # A fine-tuning run's peak lr is its optimizer's best pre-training lr times this (BERT: 1e-4 then 3e-5).
  config.finetune_learning_rate_scale = 0.3
  return config
