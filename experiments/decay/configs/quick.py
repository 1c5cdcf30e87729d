"""The quick weight-decay factorial: the whole rule x decay grid on a smaller BERT than the quick comparison's.

    python -m experiments.decay --out /tmp/decay --quick
    python -m experiments.reproduce --out /tmp/quick --quick          # the whole reproduction

Expected time: about 2 minutes on 2 CPU cores (16 cells, each a sweep of at least 3 learning rates and 2 more
seeds at its best, 110 steps of 16 x 32 tokens on a 1-layer model of width 64; one compilation per cell). Its corpus is the
standard library's pydoc_data.topics, present on every machine.
"""
import ml_collections

from experiments.decay.configs import full


def get_config() -> ml_collections.ConfigDict:
  config = full.get_config()
  config.mode = "quick"
  config.expected_time = "about 2 minutes on 2 CPU cores"
  config.comparison = "quick"
  config.overrides = dict(model=dict(hidden_size=64, intermediate_size=128, num_layers=1, num_heads=2),
                          vocab_size=512, num_train_steps=110, warmup_steps=11, batch_size=16, max_seq_len=32,
                          max_predictions_per_seq=5, eval_every_steps=55, log_every_steps=10,
                          max_eval_sequences=64)
  config.cells = tuple((mode, rule) for mode in ("none", "independent", "coupled", "decoupled")
                       for rule in config.rules)
  config.recorded_summary = ""
  config.recorded_cells = {}
  return config
