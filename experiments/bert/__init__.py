"""BERT masked-language-model pre-training, Flax-examples layout (SQuAD fine-tuning: experiments/squad)."""
