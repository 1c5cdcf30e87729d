"""The quick gradient-noise study: the same measurements on smaller models, data and step counts; ResNet on
the Fashion-MNIST subset embedded in the repository (the same on every machine).

    python -m experiments.noise --out /tmp/noise --quick

Expected time: 3 to 5 minutes on 2 idle CPU cores.
"""
import ml_collections

from experiments.noise.configs import full


def get_config() -> ml_collections.ConfigDict:
  config = full.get_config()
  config.mode = "quick"
  config.update(
      bert_vocab_size=2048, bert_batch_sizes=(8, 32), bert_adam_lrs=(1e-3, 3e-3), bert_sgd_lrs=(0.1, 0.3),
      resnet_dataset="fashion_mnist_subset", resnet_filters=8, resnet_train_examples=8192,
      resnet_train_batch_size=32, resnet_batch_sizes=(8, 32),
      resnet_adam_lrs=(1e-3, 3e-3), resnet_sgd_lrs=(0.03, 0.1),
      train_steps=50, measure_fractions=(0.0, 1.0), num_noise_batches=40, num_coordinates=4096,
      sweep_steps=50, sweep_seeds=3, eval_examples=256)
  return config
