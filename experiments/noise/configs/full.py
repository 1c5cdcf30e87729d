"""The full gradient-noise study (RQ1): BERT-tiny MLM and a ResNet-18 on the complete Fashion-MNIST.

    python -m experiments.noise --out /tmp/noise

Expected time: not measured; from the quick run's cost, roughly an hour of CPU time on 2 cores. Needs the
Debian package dataset-fashion-mnist (an error says how to install it; no fallback).
"""
import ml_collections


def get_config() -> ml_collections.ConfigDict:
  config = ml_collections.ConfigDict()
  config.mode = "full"
  config.models = ("bert", "resnet")
  # BERT: a config of experiments/bert/configs (tiny or mini), shortened sequences and vocabulary.
  config.bert_size = "tiny"
  config.bert_seq_len = 64
  config.bert_vocab_size = 4096
  config.bert_corpus = "pydoc"  # a `config.corpus` of experiments.bert; pydoc_data.topics by default
  config.bert_max_documents = 0  # 0: all of the corpus
  config.bert_train_batch_size = 32
  config.bert_batch_sizes = (8, 32)  # noise measurements; the last is the main one
  config.bert_learning_rate = 1e-3  # Adam, for the noise trajectory
  config.bert_adam_lrs = (3e-4, 1e-3, 3e-3)
  config.bert_sgd_lrs = (0.1, 0.3, 1.0, 3.0)
  # ResNet-18 on Fashion-MNIST (experiments.resnet.input_pipeline's dataset names).
  config.resnet_dataset = "fashion_mnist"
  config.resnet_filters = 16
  config.resnet_train_examples = 20000
  config.resnet_train_batch_size = 64
  config.resnet_batch_sizes = (16, 64)
  config.resnet_learning_rate = 0.1  # SGD with momentum, for the noise trajectory
  config.resnet_adam_lrs = (3e-4, 1e-3, 3e-3)
  config.resnet_sgd_lrs = (0.03, 0.1, 0.3)
  # Noise measurements.
  config.train_steps = 300
  config.measure_fractions = (0.0, 0.25, 1.0)
  config.num_noise_batches = 100
  config.num_coordinates = 16384
  # Optimizer comparison.
  config.sweep_steps = 300
  config.sweep_seeds = 3
  # Learning rates a sweep may add beyond each end of its grid while the best sits at that end.
  config.sweep_max_extensions = 2
  config.eval_examples = 512
  config.seed = 0
  return config
