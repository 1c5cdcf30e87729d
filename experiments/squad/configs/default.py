"""SQuAD v1.1 fine-tuning with BERT's recipe: AdamW, peak lr 3e-5, 10% warm-up, linear decay, 2 epochs.

    python -m experiments.squad.main --config experiments/squad/configs/default.py --workdir /tmp/squad \
        --pretrained_workdir /tmp/bert_base \
        --config.train_file=/data/squad/train-v1.1.json --config.dev_file=/data/squad/dev-v1.1.json

The model sizes, vocabulary and encoder weights come from the pre-training workdir (its vocab.txt and newest
checkpoint); `model` and `vocab_file` are only used without one (an encoder trained from scratch). Use
`--config.optimizer=acclip --config.learning_rate=...` to fine-tune with ACClip, as the paper's SQuAD runs.
Re-running with the same workdir resumes from its latest checkpoint.
"""
import ml_collections

from experiments.bert.configs import default
from experiments.common import optimizers
from experiments.common import training_loop


def get_config() -> ml_collections.ConfigDict:
  config = ml_collections.ConfigDict()
  config.train_file = ""  # train-v1.1.json
  config.dev_file = ""  # dev-v1.1.json
  config.pretrained_workdir = ""  # a pre-training workdir; the CLI flag --pretrained_workdir overrides it
  config.vocab_file = ""  # only without a pretrained workdir (or to check it is the pre-training one)
  config.lowercase = True
  config.model = default.get_config().model  # sizes of a from-scratch encoder (BERT-base)

  # Windows and decoding (the original run_squad.py defaults).
  config.max_seq_len = 384
  config.doc_stride = 128
  config.max_query_len = 64
  config.max_answer_length = 30

  # Optimizer (experiments.common.optimizers).
  config.update(optimizers.default_optimizer_config())
  config.optimizer = "adamw"
  config.weight_decay = 0.01
  config.b2 = 0.999
  config.eps = 1e-6
  config.learning_rate = 3e-5
  config.warmup_fraction = 0.1  # warmup_steps = int(warmup_fraction * total steps); leave warmup_steps 0

  # Training loop (experiments.common.training_loop).
  config.update(training_loop.default_loop_config())
  config.batch_size = 32  # global, over all processes and devices
  config.eval_batch_size = 64
  config.num_epochs = 2.0
  config.num_train_steps = -1  # > 0 overrides num_epochs
  config.log_every_steps = 50  # metrics are fetched from the devices this often (every step is logged)
  config.eval_every_steps = 0  # dev loss, EM and F1 (a pass over the dev set); 0: only at the end
  config.checkpoint_every_steps = 1000  # 0: only at the end
  return config
