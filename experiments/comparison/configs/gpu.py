"""A short comparison at BERT-base scale for one GPU: AdamW and ACClip (the paper's and the ports' rule).

    bash benchmarks/gpu_check.sh OUT            # the step benchmark, then this comparison into OUT/comparison
    python -m experiments.comparison --config gpu --out OUT/comparison              # this part alone

BERT-base (12 layers, hidden 768) in bfloat16 on pydoc_data.topics, 300 steps of 32 x 128 tokens, one seed,
two peak learning rates per optimizer around the tiny study's best (AdamW and the ports' ACClip 0.003, the
paper's ACClip 1.0; a model 70x larger may want lower ones: this is a first look, not a tuned comparison).
Expected time: within the 270 s that gpu_check.sh gives it, on one H100/H200-class GPU (not yet measured).
"""
import ml_collections

from experiments.comparison.configs import full


def get_config() -> ml_collections.ConfigDict:
  config = full.get_config()
  config.mode = "gpu"
  config.expected_time = "a few minutes on one H100/H200-class GPU (not yet measured)"
  config.bert_config = "base"
  config.checkpoint_runs = False
  config.overrides = dict(model=dict(dtype="bfloat16"), vocab_size=8192, num_train_steps=300, warmup_steps=30,
                          batch_size=32, max_seq_len=128, eval_every_steps=100, log_every_steps=50,
                          max_eval_sequences=256, eval_fraction=0.1, validation_fraction=0.1, plot=False)
  config.corpus = "pydoc"
  config.optimizers = ("adamw", "acclip", "acclip_ports")
  config.learning_rate_grids = {"adam": (1e-3, 3e-3), "sgd": (0.1, 0.3)}
  config.learning_rate_grid_exceptions = {"acclip": (0.3, 1.0)}
  config.seeds = (0,)
  return config
