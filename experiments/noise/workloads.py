"""The noise study's two workloads, each built from its driver's own pieces (model, data, train and eval step).

* BERT (experiments.bert, tiny or mini) masked-language modelling, dropout off (rates 0) so that the noise is
  that of data sampling and masking only. Loss: the masked-token mean cross-entropy

      L(theta; B) = sum_{masked (i, p) in B} w_ip CE(logits_ip, label_ip) / max(sum w_ip, 1).

* ResNet-18 (experiments.resnet, narrow, 3x3 stem) on Fashion-MNIST, BatchNorm in training mode, no
  augmentation. Loss: the batch mean cross-entropy.

Training uses the drivers' per-device `train_grads` and `eval_step`, pmapped, (`experiments.bert.train`,
`experiments.resnet.train`) and their `TrainState`s; the noise measurement uses `Workload.loss`, the same loss
on one device (`acclip_optax.noise.gradient_noise` differentiates it per minibatch).
"""
from __future__ import annotations

import dataclasses
import importlib
import os
import shutil
from typing import Any, Callable

import jax
import jax.numpy as jnp
import ml_collections
import optax

from experiments.bert import input_pipeline as bert_input_pipeline
from experiments.bert import models as bert_models
from experiments.bert import train as bert_train
from experiments.common import classification
from experiments.common import optimizers
from experiments.common import parallel
from experiments.resnet import input_pipeline as resnet_input_pipeline
from experiments.resnet import models as resnet_models
from experiments.resnet import train as resnet_train
from experiments.resnet.configs import tiny as resnet_tiny

MODELS = ("bert", "resnet")
BERT_GROUPS = ("embeddings", "attention", "feed_forward", "layer_norm", "mlm_head")
RESNET_GROUPS = ("conv", "batch_norm", "dense")


@dataclasses.dataclass(frozen=True)
class Workload:
  """A model, its data and its loss, as the study needs them.

  Attributes:
    name: "bert" or "resnet".
    model: the Flax module the pmapped steps apply (hashable: it keys the compiled-step cache).
    train_grads: the driver's per-device `train_grads(state, batch, *, model, axis_name) -> (g, aux)`.
    eval_step: the driver's `eval_step(x, batch, *, model, axis_name) -> psum-ed weighted sums`.
    initial_state: `(seed, optimizer spec) -> host TrainState` at step 0 (initialisation from
      `jax.random.key(seed)`, the optimizer state of `optimizer.create()`).
    evaluate: `(pmapped eval_step, replicated state) -> {"eval_loss", "eval_accuracy"}` over the held-out
      batches (`classification.evaluate`).
    loss: `(params, batch) -> mean training loss` on one device (the noise measurement's loss).
    train_batch: `(seed, step, batch_size) -> batch`, a function of (seed, step) only.
    group_of: the parameter group of a key path; groups: the group names.
    trajectory_optimizer: the model's usual optimizer (name, peak learning rate, momentum).
    decay: its learning-rate decay after warm-up ("linear" or "cosine").
    throughput_name, units_per_example: the training loop's throughput record (tokens or images).
    description: one line for the summary; data: the input pipeline's description.
    evaluate_train_set: `(pmapped eval_step, replicated state) -> {"eval_loss", "eval_accuracy"}` over every
      training example, in evaluation mode (ResNet only; None for BERT).
  """
  name: str
  model: Any
  train_grads: Callable
  eval_step: Callable
  initial_state: Callable[[int, optimizers.OptimizerSpec], Any]
  evaluate: Callable[[Callable, Any], dict[str, float]]
  loss: Callable[[Any, Any], jax.Array]
  train_batch: Callable[[int, int, int], dict]
  group_of: Callable[[tuple], str]
  groups: tuple[str, ...]
  trajectory_optimizer: ml_collections.ConfigDict
  decay: str
  throughput_name: str
  units_per_example: int
  description: str
  data: dict
  evaluate_train_set: Callable[[Callable, Any], dict[str, float]] | None = None


def create(name: str, config, out_dir: str) -> Workload:
  """The workload `name` (one of MODELS) at the sizes of `config` (a `study.StudyConfig`)."""
  return bert_workload(config, out_dir) if name == "bert" else resnet_workload(config)


def bert_parameter_group(path: tuple) -> str:
  """embeddings / attention / feed_forward / layer_norm / mlm_head for a key path of BertForMaskedLM."""
  names = [str(getattr(key, "key", key)) for key in path]
  if any(n.endswith("layer_norm") for n in names):
    return "layer_norm"
  if any(n.endswith("embeddings") for n in names):
    return "embeddings"
  if "attention" in names:
    return "attention"
  if any(n in ("intermediate", "output") for n in names):
    return "feed_forward"
  return "mlm_head"


def _seeded(data: Any) -> Callable[[int, int, int], dict]:
  """`(seed, step, batch_size) -> data.train_batch(step, batch_size)` with the data order of `seed`."""
  def train_batch(seed: int, step: int, batch_size: int) -> dict:
    return dataclasses.replace(data, seed=seed).train_batch(step, batch_size)
  return train_batch


def bert_workload(config, out_dir: str) -> Workload:
  """BERT MLM on `config.bert_corpus`; the WordPiece vocabulary is trained afresh in `out_dir/bert_vocab`."""
  bert_config = importlib.import_module(f"experiments.bert.configs.{config.bert_size}").get_config()
  bert_config.vocab_size = config.bert_vocab_size
  bert_config.max_seq_len = config.bert_seq_len
  bert_config.max_predictions_per_seq = max(1, round(config.bert_seq_len * bert_config.mask_prob))
  bert_config.corpus = config.bert_corpus
  bert_config.max_documents = config.bert_max_documents
  bert_config.max_eval_sequences = config.eval_examples
  bert_config.seed = config.seed
  vocab_dir = os.path.join(out_dir, "bert_vocab")
  shutil.rmtree(vocab_dir, ignore_errors=True)  # the study's own cache: retrain rather than refuse a stale one
  data = bert_input_pipeline.create_datasets(bert_config, vocab_dir)
  # Dropout rates 0: the driver's train step (deterministic=False) then applies no dropout either.
  model_fields = dict(bert_config.model.to_dict(), dropout_rate=0.0, attention_dropout_rate=0.0,
                      max_position_embeddings=config.bert_seq_len)
  model = bert_models.BertForMaskedLM(bert_models.BertConfig(vocab_size=data.vocab_size, **model_fields))
  tokens = jnp.zeros((1, config.bert_seq_len), jnp.int32)
  init = jax.jit(lambda key: model.init(key, tokens, tokens, tokens, tokens[:, :1], deterministic=True)["params"])

  def initial_state(seed: int, optimizer: optimizers.OptimizerSpec) -> bert_train.TrainState:
    key = jax.random.key(seed)
    params = init(key)
    return jax.device_get(bert_train.TrainState(
        step=jnp.zeros((), jnp.int32), params=params, opt_state=optimizer.create().init(params),
        rng=jax.random.key_data(jax.random.fold_in(key, 1))))

  buckets = data.frequency_buckets(bert_train.NUM_FREQUENCY_BUCKETS)  # the driver's eval step reports them too
  eval_batches = [parallel.shard_batch({**batch, "masked_buckets": buckets[batch["masked_labels"]]})
                  for batch in data.eval_batches(config.bert_train_batch_size)]

  def loss(params, batch):
    logits = model.apply({"params": params}, batch["input_ids"], batch["token_type_ids"], batch["attention_mask"],
                         batch["masked_positions"], deterministic=True)
    sums = classification.weighted_sums(logits, batch["masked_labels"], batch["masked_weights"])
    return sums["loss_sum"] / jnp.maximum(sums["weight_sum"], 1.0)

  return Workload(
      name="bert", model=model, train_grads=bert_train.train_grads, eval_step=bert_train.eval_step,
      initial_state=initial_state,
      evaluate=lambda eval_step, state: classification.evaluate(eval_step, state.params, eval_batches,
                                                                parallel.PmapParallelism().to_host),
      loss=loss, train_batch=_seeded(data), group_of=bert_parameter_group, groups=BERT_GROUPS,
      trajectory_optimizer=ml_collections.ConfigDict(dict(optimizer="adam",
                                                          learning_rate=config.bert_learning_rate)),
      decay="linear", throughput_name="tokens_per_s", units_per_example=config.bert_seq_len,
      data=data.description(),
      description=(f"BERT-{config.bert_size} MLM on {bert_input_pipeline.corpus_name(data.corpus)} "
                   f"({data.document_counts['train']} train and {data.document_counts['eval']} held-out "
                   f"documents, {len(data.train_sequences)} train "
                   f"sequences of {config.bert_seq_len} tokens, vocabulary {data.vocab_size})"))


def resnet_workload(config) -> Workload:
  """ResNet-18 of width `config.resnet_filters` on `config.resnet_dataset` (no fallback, no augmentation)."""
  resnet_config = resnet_tiny.get_config()
  resnet_config.augment = False
  resnet_config.dataset = config.resnet_dataset
  resnet_config.allow_digits_fallback = False
  resnet_config.max_train_examples = config.resnet_train_examples
  resnet_config.seed = config.seed
  data = resnet_input_pipeline.create_datasets(resnet_config)
  spec = resnet_train.ModelSpec(name="resnet18", num_classes=data.num_classes, num_filters=config.resnet_filters,
                         small_images=True, dtype="float32", image_shape=data.image_shape)
  init = resnet_train.compile_init(spec)
  # The measurement runs outside pmap, so its model has no BatchNorm axis name. In training mode BatchNorm
  # normalises with the batch's own statistics: the running statistics passed in are unused.
  single_device_model, initial_batch_stats = spec.create(), init(jax.random.key(config.seed))["batch_stats"]

  def initial_state(seed: int, optimizer: optimizers.OptimizerSpec) -> resnet_train.TrainState:
    variables = init(jax.random.key(seed))
    return jax.device_get(resnet_train.TrainState(
        step=jnp.zeros((), jnp.int32), params=variables["params"], batch_stats=variables["batch_stats"],
        opt_state=optimizer.create().init(variables["params"])))

  eval_batches = [parallel.shard_batch(batch) for batch in data.eval_batches(
      config.resnet_train_batch_size, max_examples=config.eval_examples)]
  # The training set as evaluation batches: the same images, padded the same way.
  train_set = dataclasses.replace(data, test_images=data.train_images, test_labels=data.train_labels)
  train_set_batches = [parallel.shard_batch(batch) for batch in train_set.eval_batches(config.resnet_train_batch_size)]
  evaluate = lambda batches: lambda eval_step, state: classification.evaluate(
      eval_step, state, batches, parallel.PmapParallelism().to_host)

  def loss(params, batch):
    logits, _ = single_device_model.apply({"params": params, "batch_stats": initial_batch_stats}, batch["image"],
                                          train=True, mutable=["batch_stats"])
    return jnp.mean(optax.softmax_cross_entropy_with_integer_labels(logits, batch["label"]))

  return Workload(
      name="resnet", model=spec.create(axis_name=parallel.AXIS_NAME), train_grads=resnet_train.train_grads,
      eval_step=resnet_train.eval_step, initial_state=initial_state,
      evaluate=evaluate(eval_batches), evaluate_train_set=evaluate(train_set_batches),
      loss=loss, train_batch=_seeded(data), group_of=resnet_models.parameter_group, groups=RESNET_GROUPS,
      trajectory_optimizer=ml_collections.ConfigDict(dict(optimizer="sgd", momentum=0.9,
                                                          learning_rate=config.resnet_learning_rate)),
      decay="cosine", throughput_name="images_per_s", units_per_example=1, data=data.description(),
      description=(f"ResNet-18 (width {config.resnet_filters}, 3x3 stem) on {data.name} "
                   f"({len(data.train_labels)} train and {len(data.test_labels)} test images "
                   f"{data.image_shape}, from {data.source})"))
