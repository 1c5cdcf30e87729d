"""The BERT optimizer comparison (the paper's RQ4): a learning-rate sweep per optimizer, seeds, fine-tuning."""
