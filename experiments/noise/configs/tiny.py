"""Seconds-long sizes for tests: both models, every measurement and the SGD/Adam runs, at sizes where none of
the numbers mean anything.

    python -m experiments.noise --out /tmp/noise --config tiny
"""
import ml_collections

from experiments.noise.configs import quick


def get_config() -> ml_collections.ConfigDict:
  config = quick.get_config()
  config.mode = "tiny"
  config.update(
      bert_max_documents=12, bert_vocab_size=256, bert_seq_len=32,
      bert_train_batch_size=8, bert_batch_sizes=(8,), bert_adam_lrs=(1e-3,), bert_sgd_lrs=(0.3, 1.0),
      resnet_filters=4, resnet_train_examples=256, resnet_train_batch_size=8, resnet_batch_sizes=(8,),
      resnet_adam_lrs=(1e-3,), resnet_sgd_lrs=(0.1,), train_steps=2, measure_fractions=(0.0, 1.0),
      num_noise_batches=8, num_coordinates=256, sweep_steps=2, sweep_seeds=2, sweep_max_extensions=0,
      eval_examples=16)
  return config
