"""The full synthetic study (RQ2, RQ3).

    python -m experiments.synthetic --out /tmp/synthetic

Expected time: 75 to 90 minutes on 2 CPU cores, most of it AutoClip, whose per-step sort of its 1000-norm
history costs 50x another method here.

Learning-rate multipliers scale the theory's eta_k = 4/(mu (k+1+offset)) (quadratics) or are the constant
step itself (Rosenbrock); clip multipliers scale the theory's threshold bound(alpha)(k+1)^(1/alpha) (see
`problems.Schedules`). SGD-scale methods and Adam-scale ones (by the optimizer registry's learning-rate
scale) have their own learning-rate grids; GClip and CClip are tuned over `clip_lr_multipliers` x
`clip_multipliers`.
"""
import ml_collections


def get_config() -> ml_collections.ConfigDict:
  config = ml_collections.ConfigDict()
  config.mode = "full"
  # The paper's methods, then the spike-clipping methods that followed it (ZClip, AdaGC, AutoClip in front
  # of AdamW; SPAM, Stable-SPAM; AdamW inside skip-step), all by their registry entries
  # (experiments.synthetic.problems.METHODS).
  config.methods = ("sgd", "sgd_momentum", "gclip", "cclip", "acclip", "acclip_ports", "adam", "zclip", "adagc",
                    "autoclip", "spam", "stable_spam", "skip_step_on_spikes")
  config.alphas = (1.1, 1.3, 1.5, 1.7, 2.0)
  config.dimension = 10
  config.condition_numbers = (2.0, 100.0)
  config.num_steps = 1500
  config.tune_seeds = 32
  config.eval_seeds = 100
  config.noise_scale = 1.0
  config.sgd_lr_multipliers = (0.01, 0.03, 0.1, 0.3, 1.0)
  config.adam_lr_multipliers = (0.001, 0.003, 0.01, 0.03, 0.1, 0.3, 1.0)
  config.clip_lr_multipliers = (0.1, 0.3, 1.0)
  # Down to 0.01: on the ill-conditioned quadratic the bound is dominated by ||grad f(x0)||.
  config.clip_multipliers = (0.01, 0.03, 0.1, 0.3, 1.0, 3.0, 10.0)
  config.dims = (10, 100, 1000, 10000)
  config.dim_alphas = (1.2, 2.0)
  config.dim_methods = ("gclip", "cclip", "acclip", "zclip", "adagc", "autoclip", "spam", "stable_spam",
                        "skip_step_on_spikes")
  config.dim_steps = 250
  config.dim_tune_seeds = 8
  config.dim_eval_seeds = 100
  config.dim_lr_multipliers = (0.1, 0.3, 1.0)
  config.dim_adam_lr_multipliers = (0.003, 0.03, 0.3)
  config.dim_clip_multipliers = (0.03, 0.3, 1.0)
  config.nonconvex_methods = ("sgd", "sgd_momentum", "gclip", "cclip", "acclip", "acclip_ports", "adam")
  config.nonconvex_alphas = (1.1, 1.5, 2.0)
  config.nonconvex_steps = 5000
  config.nonconvex_sgd_lrs = (1e-4, 3e-4, 1e-3, 2e-3)
  config.nonconvex_adam_lrs = (1e-3, 3e-3, 1e-2, 3e-2)
  config.nonconvex_clip_multipliers = (0.01, 0.1, 1.0)
  config.seed = 0
  return config
