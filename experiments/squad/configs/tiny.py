"""A few steps on short windows, the size of the tests (the model's sizes come from the pre-training run).

    python -m experiments.squad.main --config experiments/squad/configs/tiny.py --workdir /tmp/squad_tiny \
        --pretrained_workdir /tmp/bert_tiny \
        --config.train_file=tests/data/squad_v1_tiny.json --config.dev_file=tests/data/squad_v1_tiny.json
"""
from experiments.bert.configs import tiny
from experiments.squad.configs import default


def get_config():
  config = default.get_config()
  config.model = tiny.get_config().model  # only without a pre-training workdir
  config.max_seq_len = 64
  config.doc_stride = 16
  config.max_query_len = 16
  config.batch_size = 4
  config.eval_batch_size = 8
  config.num_train_steps = 2
  config.learning_rate = 1e-3
  config.log_every_steps = 1
  config.checkpoint_every_steps = 0
  config.plot = False
  return config
