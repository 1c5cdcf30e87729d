"""The BERT optimizer comparison (RQ4: the paper's ACClip against Adam; RQ5: the clipping methods that followed it
against the paper's rules and Adam(W)): a learning-rate sweep per optimizer, seeds, fine-tuning."""
