"""The quick BERT optimizer comparison: the full protocol on a smaller model, corpus and grid.

    python -m experiments.comparison --out /tmp/comparison --quick
    python -m experiments.reproduce --out /tmp/quick --quick          # the whole reproduction

Expected time: about 8 minutes on 2 CPU cores (200 steps of 16 x 64 tokens per run, 3 learning rates per
optimizer and 2 more seeds at the best). Its corpus is the standard library's pydoc_data.topics, present on
every machine.
"""
import ml_collections

from experiments.comparison.configs import full


def get_config() -> ml_collections.ConfigDict:
  config = full.get_config()
  config.mode = "quick"
  config.expected_time = "about 8 minutes on 2 CPU cores"
  config.checkpoint_runs = False  # runs of seconds: redoing one is cheaper than 55 checkpoints
  config.overrides = dict(model=dict(hidden_size=64, intermediate_size=256), vocab_size=2048,
                          num_train_steps=200, warmup_steps=20, batch_size=16, max_seq_len=64,
                          eval_every_steps=100, log_every_steps=10, max_eval_sequences=128, eval_fraction=0.1,
                          validation_fraction=0.1, plot=False)
  config.corpus = "pydoc"
  config.learning_rate_grids = {"adam": (3e-3, 1e-2, 3e-2), "sgd": (0.1, 0.3, 1.0)}
  config.learning_rate_grid_exceptions = {"acclip": (1.0, 3.0, 10.0)}
  config.finetune_overrides.num_train_steps = 200
  return config
