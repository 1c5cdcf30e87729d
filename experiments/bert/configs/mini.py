"""Mini BERT (4 layers, hidden 256, 4 heads) on pydoc_data.topics: a CPU-sized comparison model.

    python -m experiments.bert.main --config experiments/bert/configs/mini.py --workdir /tmp/bert_mini

About 8x tiny's compute per step (4 layers of width 256 against 2 of width 128, a 2x larger vocabulary);
time and result not measured on this machine.
"""
from experiments.bert.configs import default


def get_config():
  config = default.get_config()
  config.model.update(hidden_size=256, num_layers=4, num_heads=4, intermediate_size=1024,
                      max_position_embeddings=128)
  config.vocab_size = 8192
  config.batch_size = 32
  config.eval_batch_size = 64
  config.eval_fraction = 0.1  # pydoc has 79 topics: hold out 8 for a less noisy evaluation
  config.num_train_steps = 1000
  config.warmup_steps = 100
  config.learning_rate = 5e-4
  config.log_every_steps = 20
  config.eval_every_steps = 250
  config.checkpoint_every_steps = 500
  return config
