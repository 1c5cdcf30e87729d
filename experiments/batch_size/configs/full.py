"""The full batch-size study (RQ8): the full comparison's tiny BERT on a fixed 256-sequence objective.

    python -m experiments.batch_size --out /tmp/batch_size_full

Expected time: about 6 hours on 2 CPU cores (16 cells, each a sweep of at least 3 learning rates and 2 more
seeds at its best, 300 steps; a step of the full batch, 256 x 128 tokens, takes about 1.8 s, of batch 8 a
few hundredths; one run at a time), then the ResNet control, about half an hour. Rerunning the same command
continues an interrupted study. Needs the Debian package python3.11-doc.
"""
import ml_collections


def get_config() -> ml_collections.ConfigDict:
  config = ml_collections.ConfigDict()
  config.mode = "full"
  config.expected_time = ("about 6 hours on 2 CPU cores (16 cells of at least 5 runs of 300 steps; the full batch "
                          "takes about 1.8 s a step), then the ResNet control (about half an hour); rerunning "
                          "the same command continues an interrupted study")
  # Every run is a run of this comparison config (experiments/comparison/configs/<comparison>.py): the same
  # model, corpus, seeds, learning-rate grids and per-optimizer fields; these fields on top.
  config.comparison = "full"
  # The fixed objective: the first 256 training sequences (32,768 token positions), each masked once, no
  # dropout (a noise source of its own) and no weight decay (the objective is the training loss itself).
  # The budget: equal steps (num_train_steps) at every batch size, so that each cell compares what an update
  # does with a gradient of less noise; equal epochs would give the full batch 300 x 8 / 256 = 9 updates.
  config.overrides = dict(max_train_sequences=256, static_masking=True,
                          model=dict(dropout_rate=0.0, attention_dropout_rate=0.0), weight_decay=0.0,
                          num_train_steps=300, warmup_steps=30, eval_every_steps=100, checkpoint_every_steps=100)
  config.optimizers = ("sgd", "adam", "gclip", "acclip")
  config.batch_sizes = (8, 32, 128, 256)  # the last: the full batch
  # SGD and Adam at the smallest and the full batch first (they decide the verdict), then the rest.
  first = [(8, "sgd"), (8, "adam"), (256, "sgd"), (256, "adam")]
  config.cells = tuple(first + [(b, name) for b in config.batch_sizes for name in config.optimizers
                                if (b, name) not in first])
  config.num_minibatches = 64
  config.num_coordinates = 2000
  config.seeds = ()  # the comparison's (0, 1, 2): the sweep with the first, the best rerun with the others
  # The control (experiments.batch_size.control): ResNet-18 on the embedded Fashion-MNIST subset by the same
  # protocol, SGD and Adam (the two the gap compares), at the same batch sizes on as many images as the full
  # batch, the same steps; run after BERT's cells.
  config.control = dict(dataset="fashion_mnist_subset", filters=8, batch_sizes=config.batch_sizes,
                        num_train_steps=300, optimizers=("sgd", "adam"),
                        learning_rates=dict(sgd=(0.01, 0.03, 0.1, 0.3, 1.0), adam=(1e-4, 3e-4, 1e-3, 3e-3, 1e-2)),
                        seeds=(0, 1, 2), eval_examples=512, eval_batch_size=64)
  return config
