"""Seconds-long sizes for tests: every part of the study runs and reports, none of its numbers mean anything.

    python -m experiments.synthetic --out /tmp/synthetic --config tiny
"""
import ml_collections

from experiments.synthetic.configs import quick


def get_config() -> ml_collections.ConfigDict:
  config = quick.get_config()
  config.mode = "tiny"
  config.update(methods=("sgd", "gclip"), alphas=(1.1, 2.0), num_steps=20, tune_seeds=2, eval_seeds=4,
                dims=(4, 8), dim_alphas=(1.5,), dim_methods=("cclip",), dim_steps=20, dim_tune_seeds=2,
                dim_eval_seeds=4, nonconvex_methods=("gclip",), nonconvex_alphas=(1.5,), nonconvex_steps=20)
  return config
