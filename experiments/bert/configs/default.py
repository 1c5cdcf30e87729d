"""Every field a BERT pre-training run reads, with BERT-base-like training defaults.

The size configs (tiny.py, mini.py, base6.py, base.py, large.py) start from this one and change the model
and the schedule. Run any of them with
    python -m experiments.bert.main --config experiments/bert/configs/<name>.py --workdir DIR
and override a field with e.g. `--config.optimizer=acclip --config.learning_rate=1e-4`.
"""
import ml_collections

from experiments.common import optimizers
from experiments.common import training_loop


def get_config() -> ml_collections.ConfigDict:
  config = ml_collections.ConfigDict()

  # Model (experiments.bert.models.BertConfig; vocab_size comes from the vocabulary).
  config.model = ml_collections.ConfigDict(dict(
      hidden_size=768, num_layers=12, num_heads=12, intermediate_size=3072, max_position_embeddings=512,
      type_vocab_size=2, dropout_rate=0.1, attention_dropout_rate=0.1, dtype="float32"))

  # Data (experiments.bert.input_pipeline).
  config.corpus = "pydoc"  # 'pydoc', a .txt/.rst/.md file or folder, or 'hf:NAME'
  config.hf_config = ml_collections.config_dict.placeholder(str)
  config.hf_data_files = ml_collections.config_dict.placeholder(str)
  config.hf_split = "train"
  config.hf_text_field = "text"
  config.max_documents = 0  # 0: all
  config.vocab_file = ""  # a BERT vocab.txt; empty: train a WordPiece vocabulary of vocab_size
  config.vocab_size = 8192
  config.lowercase = True
  # Continued pre-training: a pre-training workdir (a run of this driver, or a Hugging Face BERT that
  # `python -m experiments.bert.hf_checkpoint import` wrote) whose newest weights start the run instead of a
  # random initialisation. The model sizes, vocab_file (its vocab.txt) and lowercase must be its own; the
  # optimizer, schedule and data order start afresh. Empty: random initialisation.
  config.init_from = ""
  config.max_seq_len = 128
  config.mask_prob = 0.15
  config.max_predictions_per_seq = 20
  config.eval_fraction = 0.05  # documents held out for evaluation (eval_loss, eval_accuracy)
  config.validation_fraction = 0.0  # more held out for choosing hyperparameters (validation_loss); 0: none
  config.max_eval_sequences = 512  # 0: all; caps the evaluation and validation sequences alike
  config.max_train_sequences = 0  # 0: all; else the first N packed training sequences (a fixed subset)
  # True: each training sequence keeps one mask (the objective is a fixed sum: a full batch has no noise),
  # and evaluations report the loss on the whole training set (train_set_loss, train_set_accuracy).
  config.static_masking = False

  # Optimizer (experiments.common.optimizers): BERT's recipe, AdamW with warm-up and linear decay.
  config.update(optimizers.default_optimizer_config())
  config.optimizer = "adamw"
  config.learning_rate = 1e-4
  config.warmup_steps = 1000
  config.learning_rate_decay = "linear"
  config.weight_decay = 0.01
  config.b2 = 0.999
  config.eps = 1e-6

  # Training loop.
  config.update(training_loop.default_loop_config())
  config.batch_size = 256  # global, over all processes and devices
  config.eval_batch_size = 256
  config.num_train_steps = 100_000
  config.log_every_steps = 100  # metrics are fetched from the devices this often (every step is logged)
  config.eval_every_steps = 5000  # 0: only at the end
  config.checkpoint_every_steps = 5000  # 0: only at the end
  return config
