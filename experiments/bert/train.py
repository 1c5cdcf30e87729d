"""BERT masked-language-model pre-training: `train_and_evaluate(config, workdir) -> dict`.

Data parallel over all devices of all processes, with `jax.pmap` (the default) or `jax.jit` over a (data,
fsdp) mesh (`config.parallelism = "mesh"`, experiments.common.parallel; the same numbers). One step, on each
device d holding a slice B_d of the global batch B:

    local_loss_d = sum_{masked (i, p) in B_d} CE(logits_ip, label_ip) / sum_{masked (i, p) in B} 1
    g = psum_d grad(local_loss_d)       # = the gradient of the global masked-token mean, on every device
    S = pmax_d S_d                      # each attention head's largest pre-softmax logit over the global batch
    params, opt_state <- optimizer(g; max_logits=S)   # identical on every device

Dividing by the global masked-token count (not by each device's) makes the result equal to a 1-device step
on the same global batch, whatever the device count. Dropout keys come from (run key, step, global device
index). Metrics (loss, MLM accuracy, learning rate, gradient norm, the largest attention logit `max_attention_logit`, clip
statistics, tokens/s, eval loss and accuracy) go to `<workdir>/metrics.jsonl`; checkpoints to `<workdir>/checkpoints`; a loss plot to
`<workdir>/loss.png`.

Compile once: the compiled steps are cached per (model architecture, optimizer settings except the peak
learning rate, schedule length, parallelism), and the peak learning rate lives in the optimizer state, so a sweep that
calls `train_and_evaluate` many times in one process over learning rates and seeds compiles once.
"""
from __future__ import annotations

import dataclasses
import functools
import os
import time
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax

from experiments.bert import input_pipeline
from experiments.bert import models
from experiments.bert import pretrained
from experiments.common import classification
from experiments.common import config_checks
from experiments.common import metrics as metrics_lib
from experiments.common import optimizers
from experiments.common import parallel
from experiments.common import training_loop
from experiments.common import workdir_lock

TrainState = pretrained.TrainState  # one state for pre-training and fine-tuning

mlm_sums = classification.weighted_sums  # over the masked positions: the others have weight 0


def apply_model(model, params, batch, *, deterministic, rngs=None, with_max_logits=False):
  """The MLM logits [batch, max_predictions, vocab] of `batch` at its masked positions; with_max_logits:
  (logits, {attention module: its heads' largest pre-softmax logit on this batch}), from the same pass."""
  args = (batch["input_ids"], batch["token_type_ids"], batch["attention_mask"], batch["masked_positions"])
  if not with_max_logits:
    return model.apply({"params": params}, *args, deterministic=deterministic, rngs=rngs)
  return models.apply_with_max_attention_logits(model, params, *args, deterministic=deterministic, rngs=rngs)


def train_grads(state: TrainState, batch: dict, *, model, axis_name) -> tuple[Any, dict]:
  """One device's part of an update (see the module docstring): the gradient summed over `axis_name`.

  Returns:
    `classification.sum_over_devices`' (g, aux), which `classification.apply_gradients` turns into the update.
  """
  dropout_rng = parallel.device_rng(jax.random.wrap_key_data(state.rng), state.step, axis_name)
  global_weight = jnp.maximum(jax.lax.psum(jnp.sum(batch["masked_weights"]), axis_name), 1.0)

  def loss_fn(params):
    logits, max_logits = apply_model(model, params, batch, deterministic=False, rngs={"dropout": dropout_rng},
                                     with_max_logits=True)
    sums = mlm_sums(logits, batch["masked_labels"], batch["masked_weights"])
    return sums["loss_sum"] / global_weight, (sums, max_logits)

  grads, (sums, max_logits) = jax.grad(loss_fn, has_aux=True)(state.params)
  return classification.sum_over_devices(grads, sums, global_weight, axis_name, max_logits=max_logits)


NUM_FREQUENCY_BUCKETS = 4  # held-out loss by training-set token frequency (`MlmData.frequency_buckets`)


def eval_step(params, batch, *, model, axis_name) -> dict[str, jax.Array]:
  """`mlm_sums` over the masked positions and, per frequency bucket b of the label (batch["masked_buckets"]),
  bucket_loss_sums[b] = sum of w * CE over its positions and bucket_weight_sums[b] = sum of w."""
  logits = apply_model(model, params, batch, deterministic=True)
  labels, weights = batch["masked_labels"], batch["masked_weights"]
  sums = mlm_sums(logits, labels, weights)
  in_bucket = jax.nn.one_hot(batch["masked_buckets"], NUM_FREQUENCY_BUCKETS) * weights[..., None]
  cross_entropy = optax.softmax_cross_entropy_with_integer_labels(logits, labels)
  sums["bucket_loss_sums"] = jnp.sum(cross_entropy[..., None] * in_bucket, axis=(0, 1))
  sums["bucket_weight_sums"] = jnp.sum(in_bucket, axis=(0, 1))
  return jax.lax.psum(sums, axis_name)


def evaluate_mlm(eval_step_fn, params, batches, to_host, split: str = "eval") -> dict[str, float]:
  """{split}_loss, {split}_accuracy and {split}_loss_bucket{b} (NaN for an empty bucket) over `batches`
  (placed), with the parallelism's `to_host`."""
  totals = None
  for batch in batches:
    sums = jax.tree.map(lambda x: np.asarray(x, np.float64), to_host(eval_step_fn(params, batch)))
    totals = sums if totals is None else jax.tree.map(np.add, totals, sums)
  weight = max(float(totals["weight_sum"]), 1.0)
  results = {f"{split}_loss": float(totals["loss_sum"]) / weight,
             f"{split}_accuracy": float(totals["correct_sum"]) / weight}
  for b, (loss, count) in enumerate(zip(totals["bucket_loss_sums"], totals["bucket_weight_sums"])):
    results[f"{split}_loss_bucket{b}"] = float(loss / count) if count > 0 else float("nan")
  return results


@dataclasses.dataclass(frozen=True)
class CompiledSteps(training_loop.CompiledSteps):
  init_params: Any


@functools.lru_cache(maxsize=8)
def _init_params(model_config: models.BertConfig) -> Any:
  """The jitted init of one architecture (it does not depend on the optimizer or the parallelism)."""
  model = models.BertForMaskedLM(model_config)

  def init_params(key, max_seq_len, max_predictions):
    tokens = jnp.zeros((1, max_seq_len), jnp.int32)
    positions = jnp.zeros((1, max_predictions), jnp.int32)
    return model.init(key, tokens, tokens, tokens, positions, deterministic=True)["params"]

  return jax.jit(init_params, static_argnums=(1, 2))


@functools.lru_cache(maxsize=8)
def compiled_steps(model_config: models.BertConfig, optimizer: optimizers.OptimizerSpec,
                   parallelism: parallel.Parallelism) -> "CompiledSteps":
  """The jitted init and compiled steps of one architecture, optimizer and parallelism (cached: pass
  `spec.step_key()`; the eval step is compiled once per architecture and parallelism)."""
  steps = training_loop.compile_steps(parallelism, train_grads, eval_step,
                                      model=models.BertForMaskedLM(model_config), optimizer=optimizer)
  return CompiledSteps(init_params=_init_params(model_config), **steps)


def _run_signature(config, model_config: models.BertConfig, data: input_pipeline.MlmData,
                   optimizer: optimizers.OptimizerSpec) -> dict:
  """Settings a checkpoint must share with the run that resumes it."""
  return {
      "model": dataclasses.asdict(model_config),
      "vocab_sha256": input_pipeline.vocab_sha256(data.vocab_path),
      # A run resumed on a corpus that changed since its checkpoint would mix two data sets in one run.
      "corpus_sha256": data.corpus_sha256,
      "optimizer": optimizer.to_dict(),
      **{k: config[k] for k in ("seed", "batch_size", "num_train_steps", "max_seq_len", "mask_prob",
                                "max_predictions_per_seq", "corpus")},
      **({"init_from": os.path.abspath(config.init_from)} if config.init_from else {}),
      # Only when set, so that checkpoints written before these fields existed still resume.
      **{k: config[k] for k in ("max_train_sequences", "static_masking") if config.get(k)},
  }


def check_config(config) -> None:
  """Every BERT setting, before any data is read: ValueError naming the field as the config spells it.

  The loop's and the optimizer's own fields are checked by `training_loop.initialize`; here the data
  fields (`input_pipeline.check_settings`), the model (its config and abstract parameters are built, at
  config.vocab_size) and the optimizer's state on those parameters (the schedule fits the run).
  """
  if config.num_train_steps < 1:
    raise ValueError(f"num_train_steps={config.num_train_steps} must be >= 1")
  if config.max_seq_len > config.model.max_position_embeddings:
    raise ValueError(f"max_seq_len={config.max_seq_len} exceeds model.max_position_embeddings="
                     f"{config.model.max_position_embeddings}")
  input_pipeline.check_settings(config)
  model_config = config_checks.build(lambda: models.BertConfig(vocab_size=config.vocab_size, **config.model),
                                     "model", config.model.keys())
  params = config_checks.build(lambda: models.abstract_params(model_config, config.max_seq_len),
                               "model", config.model.keys())
  optimizer = optimizers.OptimizerSpec.from_config(config, config.num_train_steps)
  jax.eval_shape(optimizer.create().init, params)
  if config.init_from:
    check_init_from(config, model_config)


# The model fields a run may set afresh when it continues another's weights: they do not change the weights.
_TRAINING_FIELDS = ("vocab_size", "dropout_rate", "attention_dropout_rate", "dtype")


def check_init_from(config, model_config: models.BertConfig) -> None:
  """config.init_from's newest checkpoint fits this run: the same sizes, vocab_file and casing.

  Raises:
    FileNotFoundError: no checkpoint there.
    ValueError: naming the fields (model.*, vocab_file, lowercase) to set to the checkpoint's values.
  """
  signature = pretrained.latest_meta(pretrained.checkpoint_dir(config.init_from))[1]["signature"]
  saved = dataclasses.asdict(models.BertConfig(**signature["model"]))
  ours = dataclasses.asdict(model_config)
  differing = [name for name in saved if name not in _TRAINING_FIELDS and saved[name] != ours[name]]
  if differing:
    raise ValueError(f"init_from={config.init_from!r} holds a model with "
                     f"{', '.join(f'model.{name}={saved[name]!r}' for name in differing)}; this run has "
                     f"{', '.join(f'model.{name}={ours[name]!r}' for name in differing)}")
  vocab_path = os.path.join(config.init_from, "vocab.txt")
  if not config.vocab_file or input_pipeline.vocab_sha256(config.vocab_file) != signature["vocab_sha256"]:
    raise ValueError(f"init_from={config.init_from!r} was trained with the vocabulary {vocab_path!r}: set "
                     f"vocab_file={vocab_path!r} (vocab_file={config.vocab_file!r})")
  lowercase = pretrained.vocabulary_lowercase(config.init_from)
  if lowercase != config.lowercase:
    raise ValueError(f"init_from={config.init_from!r} reads {'lower-cased' if lowercase else 'cased'} text: "
                     f"set lowercase={lowercase}")


def _bucket_description(data: input_pipeline.MlmData, buckets: np.ndarray) -> list[dict[str, float]]:
  tokens = data.train_sequences[data.train_sequences != data.pad_id]
  counts = np.bincount(tokens, minlength=data.vocab_size)[:data.vocab_size]
  return [{"tokens": int(np.sum(buckets == b)),
           "train_share": float(counts[buckets == b].sum() / max(counts.sum(), 1))}
          for b in range(NUM_FREQUENCY_BUCKETS)]


def _steady_rate(interval_rates: list[float]) -> float:
  """The median throughput of the logging intervals after the first (which includes compilation)."""
  rates = interval_rates[1:] or interval_rates
  return float(np.median(rates)) if rates else float("nan")


@workdir_lock.owns_workdir
def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str) -> dict[str, Any]:
  """Pre-trains BERT with MLM as `config` says, resuming from `<workdir>/checkpoints` if present.

  Args:
    config: see configs/default.py for every field.
    workdir: the run directory (config.json, vocab.txt, metrics.jsonl, checkpoints/, loss.png).

  Returns:
    A dict: train_loss and train_accuracy (last step), train_loss_last10 (mean of the last 10 logged
    steps), eval_loss, eval_accuracy, validation_loss and validation_accuracy (only with a validation
    split: config.validation_fraction > 0), train_set_loss and train_set_accuracy (static_masking only: the
    whole training objective), steps (updates done), diverged (a non-finite loss or state
    stopped the run), halted (stopped early by halt_after_steps), checkpoint_step (the newest on disk),
    wall_time_s, steps_per_s (of this call, set-up and compilation included), tokens_per_s (steady state:
    median over the logging intervals but the first), num_params, vocab_size, document_counts
    (train/eval/validation documents), corpus_sha256 (`input_pipeline.documents_sha256`), metrics_path,
    loss_plot (or None), workdir.

  Raises:
    ValueError: bad corpus, vocabulary, workdir or run settings (the settings are checked before the
    corpus is read); checkpoint.CheckpointError: a checkpoint in the workdir that cannot be resumed.
  """
  start_time = time.time()
  workdir = training_loop.initialize(config, workdir)
  is_main = parallel.is_main_process()

  check_config(config)
  data = input_pipeline.create_datasets(config, workdir)
  train_rows = parallel.process_rows(config.batch_size)
  eval_rows = parallel.process_rows(config.eval_batch_size)
  data.steps_per_epoch(config.batch_size)  # fails early if the corpus is smaller than one batch
  model_config = models.BertConfig(vocab_size=data.vocab_size, **config.model)
  total_steps = config.num_train_steps
  optimizer = optimizers.OptimizerSpec.from_config(config, total_steps)
  par = parallel.create(config)
  compiled = compiled_steps(model_config, optimizer.step_key(), par)

  root_key = jax.random.key(config.seed)
  if config.init_from:  # continued pre-training (check_config checked the checkpoint against this run)
    directory = pretrained.checkpoint_dir(config.init_from)
    params = pretrained.restore_params(directory, models.abstract_params(model_config),
                                       pretrained.latest_meta(directory)[1]["signature"]["optimizer"])
  else:
    params = compiled.init_params(jax.random.fold_in(root_key, 0), config.max_seq_len,
                                  config.max_predictions_per_seq)
  state = jax.device_get(TrainState(
      step=jnp.zeros((), jnp.int32), params=params, opt_state=optimizer.create().init(params),
      rng=jax.random.key_data(jax.random.fold_in(root_key, 1))))
  num_params = models.count_params(state.params)
  splits = ("eval",) + (("validation",) if len(data.validation_sequences) else ()) + (
      ("train",) if config.static_masking else ())
  buckets = data.frequency_buckets(NUM_FREQUENCY_BUCKETS)
  split_batches = {split: [par.place_batch({**b, "masked_buckets": buckets[b["masked_labels"]]})
                           for b in data.eval_batches(config.eval_batch_size, eval_rows, split=split)]
                   for split in splits}

  def evaluate(state) -> dict[str, float]:
    """eval_* and, with a validation split, validation_* and, with static masking, train_set_* (the whole
    training objective): loss, accuracy, loss by frequency bucket."""
    results = {}
    for split, batches in split_batches.items():
      results.update(evaluate_mlm(compiled.eval_step, state.params, batches, par.to_host,
                                  "train_set" if split == "train" else split))
    return results

  result = training_loop.train(
      config, workdir, state=state, signature=_run_signature(config, model_config, data, optimizer),
      total_steps=total_steps, steps=compiled,
      train_batch=lambda step: data.train_batch(step, config.batch_size, train_rows),
      evaluate=evaluate,
      throughput_name="tokens_per_s", units_per_step=config.batch_size * config.max_seq_len)

  loss_plot = None
  if config.plot and is_main and result.history:
    loss_plot = metrics_lib.plot_loss_curves({"bert": result.metrics_path},
                                             os.path.join(workdir, "loss.png"),
                                             title=f"BERT MLM, {config.optimizer}")
  return {
      **result.summary(wall_time=time.time() - start_time),
      **result.eval_metrics,  # the held-out and validation splits' loss, accuracy and loss by frequency bucket
      "tokens_per_s": _steady_rate([r["tokens_per_s"] for r in result.history if "tokens_per_s" in r]),
      "num_params": num_params,
      "vocab_size": data.vocab_size,
      "document_counts": data.document_counts,
      "corpus_sha256": data.corpus_sha256,
      # Per bucket: the vocabulary tokens in it and their share of the training token occurrences.
      "frequency_buckets": _bucket_description(data, buckets),
      "metrics_path": result.metrics_path,
      "loss_plot": loss_plot,
      "workdir": workdir,
  }
