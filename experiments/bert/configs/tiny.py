"""Tiny BERT (2 layers, hidden 128, 2 heads) on pydoc_data.topics: the size of the tests and CPU sweeps.

    python -m experiments.bert.main --config experiments/bert/configs/tiny.py --workdir /tmp/bert_tiny

Expected: a 100-step run (--config.num_train_steps=100 --config.warmup_steps=10) takes 2 to 3 minutes on 2
CPU cores, about 25 s of it compilation (later runs of a sweep with the same shapes and optimizer reuse the
compiled step), and ends near train loss 5.2; the 300-step default takes about 3x as long.
"""
from experiments.bert.configs import default


def get_config():
  config = default.get_config()
  config.model.update(hidden_size=128, num_layers=2, num_heads=2, intermediate_size=512,
                      max_position_embeddings=128)
  config.vocab_size = 4096
  config.batch_size = 32
  config.eval_batch_size = 64
  config.eval_fraction = 0.1  # pydoc has 79 topics: hold out 8 for a less noisy evaluation
  config.num_train_steps = 300
  config.warmup_steps = 30
  config.learning_rate = 1e-3
  config.log_every_steps = 10
  config.eval_every_steps = 100
  config.checkpoint_every_steps = 0
  config.max_eval_sequences = 256
  return config
