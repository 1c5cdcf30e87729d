"""BERT base-6 (6 layers, hidden 768, 12 heads): the paper's smallest BERT, for accelerators.

    python -m experiments.bert.main --config experiments/bert/configs/base6.py --workdir DIR \
        --config.corpus=hf:wikitext --config.hf_config=wikitext-103-raw-v1

Defaults follow BERT's recipe (AdamW 1e-4, warm-up 10k, linear decay, weight decay 0.01, batch 256,
sequence 128, WordPiece 30522) over 100k steps. On pydoc_data.topics the corpus is far too small for this
model; use a real corpus. Time and result: not measured here (no accelerator run was made).
"""
from experiments.bert.configs import default


def get_config():
  config = default.get_config()
  config.model.update(hidden_size=768, num_layers=6, num_heads=12, intermediate_size=3072)
  config.vocab_size = 30522
  config.warmup_steps = 10_000
  return config
