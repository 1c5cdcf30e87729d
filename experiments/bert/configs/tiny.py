"""Tiny BERT (2 layers, hidden 128, 2 heads) on pydoc_data.topics: the size of the tests and CPU sweeps.

    python -m experiments.bert.main --config experiments/bert/configs/tiny.py --workdir /tmp/bert_tiny

Measured on the project's 2-core CPU machine while 4 other jobs shared it (load ~12), 100-step runs
(--config.num_train_steps=100 --config.warmup_steps=10), AdamW lr 1e-3: ~3.2k tokens/s steady, 130-160 s
wall per run, of which ~25 s is compilation paid once per process (later runs of a sweep with the same
shapes and optimizer reuse the compiled step); train loss 8.3 -> ~5.2, eval loss ~5.3, eval MLM accuracy
~7% (eval_fraction was 0.05 then). The 300-step default takes about 3x as long (not measured).
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
