"""SQuAD v1.1 fine-tuning of a pre-trained BERT encoder (data-parallel with pmap), Flax-examples layout."""
