"""The gpu config's protocol at the test's sizes, for `bash benchmarks/gpu_check.sh --tiny OUT` on a CPU.

Expected time: about a minute on 2 CPU cores.
"""
import ml_collections

from experiments.comparison.configs import gpu


def get_config() -> ml_collections.ConfigDict:
  config = gpu.get_config()
  config.mode = "gpu_tiny"
  config.expected_time = "about a minute on 2 CPU cores"
  config.bert_config = "tiny"
  config.overrides = dict(model=dict(hidden_size=32, num_layers=1, num_heads=2, intermediate_size=64,
                                     max_position_embeddings=32, dtype="bfloat16"),
                          vocab_size=512, num_train_steps=6, warmup_steps=2, batch_size=8, max_seq_len=32,
                          max_predictions_per_seq=5, eval_every_steps=0, log_every_steps=2,
                          max_eval_sequences=16, eval_fraction=0.1, validation_fraction=0.1, plot=False)
  return config
