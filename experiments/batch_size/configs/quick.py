"""The quick batch-size study: the same protocol on a smaller BERT and a 64-sequence objective.

    python -m experiments.batch_size --out /tmp/batch_size --quick
    python -m experiments.reproduce --out /tmp/quick --quick          # the whole reproduction

Expected time: about 3 minutes on 2 CPU cores (16 cells of at least 5 runs of 70 steps on a 1-layer model,
batch sizes 4 to 64 sequences of 32 tokens; then the ResNet control, about a minute). Its corpus is the
standard library's pydoc_data.topics.
"""
import ml_collections

from experiments.batch_size.configs import full


def get_config() -> ml_collections.ConfigDict:
  config = full.get_config()
  config.mode = "quick"
  config.expected_time = "about 3 minutes on 2 CPU cores"
  config.comparison = "quick"
  # The same budget rule as the full study's: equal steps (70) at every batch size.
  config.overrides = dict(max_train_sequences=64, static_masking=True,
                          model=dict(hidden_size=32, intermediate_size=64, num_layers=1, num_heads=2,
                                     dropout_rate=0.0, attention_dropout_rate=0.0),
                          weight_decay=0.0, vocab_size=512, num_train_steps=70, warmup_steps=7, max_seq_len=32,
                          max_predictions_per_seq=5, eval_every_steps=35, log_every_steps=10,
                          max_eval_sequences=64)
  config.batch_sizes = (4, 16, 32, 64)
  first = [(4, "sgd"), (4, "adam"), (64, "sgd"), (64, "adam")]
  config.cells = tuple(first + [(b, name) for b in config.batch_sizes for name in config.optimizers
                                if (b, name) not in first])
  config.num_minibatches = 32
  config.num_coordinates = 500
  # The control at the smallest and the full batch only (the two the rule compares), to stay within its time.
  config.control = dict(config.control, filters=4, batch_sizes=(4, 64), num_train_steps=70, eval_examples=256,
                        learning_rates=dict(sgd=(0.03, 0.1, 0.3, 1.0, 3.0), adam=(1e-3, 3e-3, 1e-2, 3e-2, 1e-1)))
  return config
