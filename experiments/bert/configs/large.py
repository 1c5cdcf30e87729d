"""BERT large (24 layers, hidden 1024, 16 heads, about 335M parameters), for accelerators.

    python -m experiments.bert.main --config experiments/bert/configs/large.py --workdir DIR \
        --config.corpus=hf:wikitext --config.hf_config=wikitext-103-raw-v1

BERT's recipe as in base.py, with bfloat16 computation (parameters stay float32). Time and result: not
measured here (no accelerator run was made).
"""
from experiments.bert.configs import default


def get_config():
  config = default.get_config()
  config.model.update(hidden_size=1024, num_layers=24, num_heads=16, intermediate_size=4096,
                      dtype="bfloat16")
  config.vocab_size = 30522
  config.warmup_steps = 10_000
  return config
