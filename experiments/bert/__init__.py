"""BERT masked-language-model pre-training (and SQuAD fine-tuning in squad.py), Flax-examples layout."""
