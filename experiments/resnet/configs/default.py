"""Every field a ResNet run reads, with the Flax ImageNet recipe for ResNet-50 as defaults.

The recipe: SGD with Nesterov momentum 0.9, L2 weight decay 1e-4 on kernels (added to the gradient, not on
BatchNorm parameters or biases), 5 warm-up epochs then cosine decay to 0 over 100 epochs, and the learning
rate scaled with the batch, lr = 0.1 * batch_size / 256. Other configs start from this one:
    python -m experiments.resnet.main --config experiments/resnet/configs/<name>.py --workdir DIR
and override a field with e.g. `--config.optimizer=adam --config.learning_rate=1e-3
--config.base_learning_rate=None`.
"""
import ml_collections

from experiments.common import optimizers
from experiments.common import training_loop


def get_config() -> ml_collections.ConfigDict:
  config = ml_collections.ConfigDict()

  # Model (experiments.resnet.models.create_model).
  config.model = "resnet50"
  config.num_filters = 64
  config.small_images = False  # True: 3x3 stem without max-pool, for 28-32 px inputs
  config.dtype = "float32"  # computation dtype; "bfloat16" on TPU/GPU

  # Data (experiments.resnet.input_pipeline).
  config.dataset = "imagenet"  # fashion_mnist | cifar10 | imagenet | digits
  config.data_dir = ""  # '' searches the usual places (see input_pipeline.DEFAULT_DIRS)
  config.allow_digits_fallback = False  # True: missing dataset -> warn loudly and use sklearn's digits
  config.image_size = 224  # image folders only; array sets keep their own size
  config.augment = True
  config.max_train_examples = 0  # 0: all
  config.max_eval_examples = 0  # 0: all

  # Optimizer (experiments.common.optimizers): the Flax ImageNet recipe.
  config.update(optimizers.default_optimizer_config())
  config.optimizer = "sgd"
  config.momentum = 0.9
  config.nesterov = True
  config.base_learning_rate = 0.1  # lr = base_learning_rate * batch_size / 256; None: use learning_rate
  config.learning_rate = 0.1
  config.learning_rate_decay = "cosine"
  config.warmup_epochs = 5.0  # 0: use warmup_steps
  config.weight_decay = 1e-4
  config.weight_decay_mode = "coupled"  # L2: weight_decay * w added to the gradient

  # Training loop.
  config.update(training_loop.default_loop_config())
  config.batch_size = 1024  # global, over all processes and devices
  config.eval_batch_size = 1024
  config.num_epochs = 100.0
  config.num_train_steps = 0  # > 0 overrides num_epochs
  config.log_every_steps = 100
  config.eval_every_steps = 0  # 0: only at the end
  config.checkpoint_every_steps = 5000
  return config
