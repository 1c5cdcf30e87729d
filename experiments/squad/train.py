"""SQuAD v1.1 fine-tuning of a pre-trained BERT encoder: `finetune(config, workdir, pretrained_workdir)`.

Data parallel over all devices of all processes (`jax.pmap`, or `jax.jit` over a (data, fsdp) mesh with
`config.parallelism = "mesh"`), with the convention of
experiments/bert/train.py. One step, on each device d holding a slice B_d of the global batch B of windows
(every training row has weight w_i = 1):

    loss_i = (CE(start_logits_i, s_i) + CE(end_logits_i, e_i)) / 2          (experiments.squad.models)
    local_loss_d = sum_{i in B_d} w_i loss_i / sum_{i in B} w_i              (psum of the weights)
    g = psum_d grad(local_loss_d)       # = the gradient of the global-batch mean loss, on every device
    S = pmax_d S_d                      # each attention head's largest pre-softmax logit over the global batch
    params, opt_state <- optimizer(g; max_logits=S)   # identical on every device, so replicated state stays
                                                      # identical; S also logged as `max_attention_logit`

The run goes through `experiments.common.training_loop.train`: it resumes from `<workdir>/checkpoints`,
stops on a non-finite loss (config.stop_on_nonfinite) without checkpointing a non-finite state, and writes
`<workdir>/metrics.jsonl`. Its evaluation (every config.eval_every_steps, and once the training ends) runs
every dev window and gives

    eval_loss        the dev span loss (mean over the windows; a window without the answer targets [CLS]),
    eval_accuracy    the windows whose start and end argmaxes are both right,
    dev_exact_match, dev_f1   the official v1.1 scores of the decoded answers (experiments.squad.evaluation),

and the final evaluation's answers go to `<workdir>/predictions.json` ({qid: answer}, as the official
evaluation script reads). Dropout keys come from (run key, step, global device index). The length is
config.num_train_steps, or config.num_epochs passes over the training windows when that is <= 0, with a
warm-up over config.warmup_fraction of it. The compiled steps are cached per (model architecture, parallelism, optimizer
settings except the peak learning rate), so fine-tuning runs in one process that differ only by learning rate
or seed compile once.
"""
from __future__ import annotations

import dataclasses
import functools
import json
import math
import os
import time
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from experiments.bert import input_pipeline as bert_input_pipeline
from experiments.bert import models as bert_models
from experiments.bert import pretrained as bert_pretrained
from experiments.common import classification
from experiments.common import config_checks
from experiments.common import metrics as metrics_lib
from experiments.common import optimizers
from experiments.common import parallel
from experiments.common import results
from experiments.common import training_loop
from experiments.common import workdir_lock
from experiments.squad import evaluation
from experiments.squad import input_pipeline
from experiments.squad import models

def _apply_model(model, params, batch, *, deterministic, rngs=None, with_max_logits=False):
  """(start_logits, end_logits); with_max_logits: also {attention module: its heads' largest pre-softmax
  logit on this batch}, from the same pass (as experiments.bert.train.apply_model)."""
  args = (batch["input_ids"], batch["token_type_ids"], batch["attention_mask"])
  if not with_max_logits:
    return model.apply({"params": params}, *args, deterministic=deterministic, rngs=rngs)
  return bert_models.apply_with_max_attention_logits(model, params, *args, deterministic=deterministic, rngs=rngs)


def train_grads(state: bert_pretrained.TrainState, batch: dict, *, model, axis_name) -> tuple[Any, dict]:
  """One device's part of an update (see the module docstring): the gradient summed over `axis_name`."""
  dropout_rng = parallel.device_rng(jax.random.wrap_key_data(state.rng), state.step, axis_name)
  global_weight = jnp.maximum(jax.lax.psum(jnp.sum(batch["weights"]), axis_name), 1.0)

  def loss_fn(params):
    (start_logits, end_logits), max_logits = _apply_model(model, params, batch, deterministic=False,
                                                          rngs={"dropout": dropout_rng}, with_max_logits=True)
    sums = models.span_sums(start_logits, end_logits, batch["start_positions"], batch["end_positions"],
                            batch["weights"])
    return sums["loss_sum"] / global_weight, (sums, max_logits)

  grads, (sums, max_logits) = jax.grad(loss_fn, has_aux=True)(state.params)
  return classification.sum_over_devices(grads, sums, global_weight, axis_name, max_logits=max_logits)


def eval_step(params, batch, *, model, axis_name) -> dict[str, jax.Array]:
  """Start and end logits and the per-window span terms of one device's dev rows (no dropout).

  No cross-device sum: every process runs every dev window (decoding needs all the logits), so the totals
  are taken on the host (`predict`).
  """
  del axis_name
  start_logits, end_logits = _apply_model(model, params, batch, deterministic=True)
  terms = models.span_terms(start_logits, end_logits, batch["start_positions"], batch["end_positions"])
  return {"start_logits": start_logits, "end_logits": end_logits, **terms}


@dataclasses.dataclass(frozen=True)
class _CompiledSteps(training_loop.CompiledSteps):
  init_params: Any  # jitted `key -> params` of the whole model (compiled on first use: a run from scratch)


@functools.lru_cache(maxsize=8)
def _compiled_steps(model_config: bert_models.BertConfig, optimizer: optimizers.OptimizerSpec,
                    parallelism: parallel.Parallelism) -> _CompiledSteps:
  """The jitted init and compiled steps of one architecture, optimizer and parallelism (cached: pass
  `spec.step_key()`)."""
  model = models.BertForQuestionAnswering(model_config)

  def init_params(key):
    tokens = jnp.zeros((1, 1), jnp.int32)  # the parameter shapes do not depend on the sequence length
    return model.init(key, tokens, tokens, tokens + 1, deterministic=True)["params"]

  return _CompiledSteps(init_params=jax.jit(init_params),
                        **training_loop.compile_steps(parallelism, train_grads, eval_step, model=model,
                                                      optimizer=optimizer, eval_per_row=True))


def predict(steps: training_loop.CompiledSteps, params, data: input_pipeline.SquadData,
            batch_size: int) -> dict[str, np.ndarray]:
  """`eval_step` over every dev window, in order, padding dropped.

  Args:
    steps: the compiled steps (their `eval_step` and parallelism).
    params: the placed parameters.
    data: the run's data.
    batch_size: dev rows per call on this process (a multiple of the local device count).

  Returns:
    {"start_logits", "end_logits": [N, L], "loss", "correct": [N]} for the N dev windows.
  """
  outputs = []
  for batch in data.dev_batches(batch_size):
    par = steps.parallelism
    outputs.append(par.rows_to_host(steps.eval_step(params, par.place_common_batch(batch))))
  num_windows = len(data.dev_features)
  return {name: np.concatenate([o[name] for o in outputs])[:num_windows] for name in outputs[0]}


# ---------------------------------------------------------------------------------------------------------
# The pre-trained encoder.


class Pretrained(NamedTuple):
  """What fine-tuning takes from a pre-training run (or from the config, without one)."""
  model_config: bert_models.BertConfig
  tokenizer: Any  # a tokenizers.Tokenizer
  encoder: Any  # the checkpoint's params['bert'], or None: the encoder starts from random weights
  vocab_sha256: str


def load_pretrained(config, pretrained_workdir: str | None) -> Pretrained:
  """The model config, tokenizer and (if any) pre-trained encoder params of a fine-tuning run.

  From a pre-training workdir: its `vocab.txt` (or config.vocab_file, which must be the same file) and the
  model sizes recorded with its newest checkpoint, whose ``params['bert']`` is restored
  (`experiments.bert.pretrained`; a workdir `experiments.bert.hf_checkpoint import` wrote is one). Without
  one: `config.vocab_file` and `config.model`, and no encoder params (random initialisation).

  Raises:
    FileNotFoundError: no vocabulary or no checkpoint.
    ValueError: the vocabulary does not match the checkpoint's (a `config.vocab_file` of another size or
      contents, or a workdir whose vocab.txt changed since the checkpoint), or config.lowercase is not the
      casing the workdir's vocab_info.json records.
  """
  if not pretrained_workdir:
    if not config.vocab_file:
      raise ValueError("Set config.vocab_file (a BERT vocab.txt) or give a pretrained_workdir.")
    tokenizer = bert_input_pipeline.load_tokenizer(config.vocab_file, config.lowercase)
    model_config = bert_models.BertConfig(vocab_size=tokenizer.get_vocab_size(), **config.model)
    return Pretrained(model_config, tokenizer, None, bert_input_pipeline.vocab_sha256(config.vocab_file))

  vocab_path = config.vocab_file or os.path.join(pretrained_workdir, "vocab.txt")
  tokenizer = bert_input_pipeline.load_tokenizer(vocab_path, config.lowercase)
  if os.path.isfile(os.path.join(pretrained_workdir, "vocab_info.json")):
    pretrained_lowercase = bert_pretrained.vocabulary_lowercase(pretrained_workdir)
    if pretrained_lowercase != config.lowercase:
      casing = "lower-cased" if pretrained_lowercase else "cased"
      raise ValueError(f"The pre-training workdir {pretrained_workdir!r} reads {casing} text; fine-tune "
                       f"with --config.lowercase={pretrained_lowercase}.")
  directory = bert_pretrained.checkpoint_dir(pretrained_workdir)
  signature = bert_pretrained.latest_meta(directory)[1]["signature"]
  model_config = bert_models.BertConfig(**signature["model"])
  vocab_sha256 = bert_input_pipeline.vocab_sha256(vocab_path)
  if tokenizer.get_vocab_size() != model_config.vocab_size or vocab_sha256 != signature.get("vocab_sha256"):
    raise ValueError(
        f"Vocabulary {vocab_path!r} ({tokenizer.get_vocab_size()} tokens) is not the one the checkpoint in "
        f"{directory!r} was trained with ({model_config.vocab_size} tokens, sha256 "
        f'{signature.get("vocab_sha256")}); fine-tune with the pre-training vocab.txt.')
  encoder = bert_pretrained.restore_params(directory, bert_models.abstract_params(model_config),
                                           signature["optimizer"])["bert"]
  return Pretrained(model_config, tokenizer, encoder, vocab_sha256)


# ---------------------------------------------------------------------------------------------------------
# Fine-tuning.


def _check_workdir(workdir: str, pretrained_workdir: str | None) -> None:
  """Refuses a fine-tuning workdir that is, or lies inside, the pre-training workdir.

  Fine-tuning writes metrics.jsonl, checkpoints/ and predictions.json, which would replace the pre-training
  run's files. Checked before the workdir is created.
  """
  if pretrained_workdir:
    fine, pre = os.path.realpath(workdir), os.path.realpath(pretrained_workdir)
    if os.path.commonpath([fine, pre]) == pre:
      raise ValueError(
          f"workdir={workdir!r} is {'the' if fine == pre else 'inside the'} pre-training workdir "
          f"{pretrained_workdir!r}; fine-tuning would overwrite that run's metrics.jsonl. Give the "
          "fine-tuning run a workdir of its own.")


def check_config(config) -> None:
  """Every SQuAD setting, before any data is read: ValueError (FileNotFoundError for a missing file) naming
  the field as the config spells it.

  The loop's and the optimizer's own fields are checked by `training_loop.initialize`; here the files, the
  schedule, the windows (`input_pipeline.check_window_settings`), the from-scratch encoder's `model` sizes
  (built, with abstract parameters, whether or not a pre-training workdir replaces them) and the
  optimizer's state on those parameters.
  """
  for name in ("train_file", "dev_file"):
    if not config[name]:
      raise ValueError(f"Set config.{name} (SQuAD v1.1 {name[:-5]}-v1.1.json).")
    if not os.path.isfile(config[name]):
      raise FileNotFoundError(f"{name}={config[name]!r} does not exist")
  if config.vocab_file:
    bert_input_pipeline.check_vocab_file(config.vocab_file)
  if not (math.isfinite(config.num_epochs) and config.num_epochs >= 0):
    raise ValueError(f"num_epochs={config.num_epochs} must be a finite number >= 0")
  if config.num_train_steps <= 0 and config.num_epochs <= 0:
    raise ValueError(f"num_train_steps={config.num_train_steps} and num_epochs={config.num_epochs}: set one "
                     "of them > 0")
  if not 0 <= config.warmup_fraction <= 1:
    raise ValueError(f"warmup_fraction={config.warmup_fraction} must lie in [0, 1]")
  if config.warmup_steps:
    raise ValueError(f"warmup_steps={config.warmup_steps}: fine-tuning sets the warm-up with warmup_fraction "
                     "(warmup_steps = int(warmup_fraction * total steps)); leave warmup_steps at 0")
  if config.max_answer_length < 1:
    raise ValueError(f"max_answer_length={config.max_answer_length} must be >= 1")
  input_pipeline.check_window_settings(config.max_seq_len, config.doc_stride, config.max_query_len)
  model_config = config_checks.build(lambda: bert_models.BertConfig(vocab_size=1, **config.model), "model",
                                     config.model.keys())
  params = config_checks.build(lambda: bert_models.abstract_params(model_config), "model", config.model.keys())
  jax.eval_shape(optimizers.OptimizerSpec.from_config(config, 1).create().init, params)


def schedule_steps(config, num_train_windows: int) -> tuple[int, int]:
  """(total_steps, warmup_steps).

  total = num_train_steps if > 0, else max(1, int(num_epochs * num_train_windows / batch_size));
  warmup = int(warmup_fraction * total).
  """
  if config.num_train_steps > 0:
    total = int(config.num_train_steps)
  else:
    total = max(1, int(config.num_epochs * num_train_windows // config.batch_size))
  return total, int(config.warmup_fraction * total)


def _run_signature(config, pretrained: Pretrained, data: input_pipeline.SquadData,
                   optimizer: optimizers.OptimizerSpec) -> dict:
  """Settings a checkpoint must share with the run that resumes it."""
  return {
      "model": dataclasses.asdict(pretrained.model_config),
      "vocab_sha256": pretrained.vocab_sha256,
      "optimizer": optimizer.to_dict(),
      "train_windows": len(data.train_features),
      **{k: config[k] for k in ("seed", "batch_size", "max_seq_len", "doc_stride", "max_query_len")},
  }


def _initial_state(compiled: _CompiledSteps, config, optimizer: optimizers.OptimizerSpec,
                   pretrained: Pretrained) -> bert_pretrained.TrainState:
  """A fresh host state: the pre-trained encoder (when given) and a new span head."""
  root_key = jax.random.key(config.seed)
  init_key = jax.random.fold_in(root_key, 0)
  if pretrained.encoder is None:
    params = compiled.init_params(init_key)
  else:
    params = {"bert": pretrained.encoder, **models.init_head(pretrained.model_config, init_key)}
  return jax.device_get(bert_pretrained.TrainState(
      step=jnp.zeros((), jnp.int32), params=params, opt_state=optimizer.create().init(params),
      rng=jax.random.key_data(jax.random.fold_in(root_key, 1))))


def _write_predictions(workdir: str, predictions: dict[str, str]) -> str:
  path = os.path.join(workdir, "predictions.json")
  if parallel.is_main_process():
    results.write_text(path, json.dumps(predictions, ensure_ascii=False, indent=1))
  return path


@workdir_lock.owns_workdir
def finetune(config: ml_collections.ConfigDict, workdir: str,
             pretrained_workdir: str | None = None) -> dict[str, Any]:
  """Fine-tunes BERT on SQuAD v1.1 as `config` says, resuming from `<workdir>/checkpoints` if present.

  Args:
    config: see experiments/squad/configs/default.py for every field.
    workdir: the run directory (config.json, metrics.jsonl, checkpoints/, predictions.json, loss.png).
    pretrained_workdir: a pre-training workdir (its `vocab.txt` and newest checkpoint give the tokenizer,
      model sizes and encoder weights); None uses `config.pretrained_workdir`, and if that is empty too the
      encoder starts from random weights with the sizes of `config.model` and `config.vocab_file`.

  Returns:
    A dict: the keys of `training_loop.LoopResult.summary` (train_loss, ..., eval_loss: the dev span loss,
    eval_accuracy, steps, diverged, halted, checkpoint_step, wall_time_s, steps_per_s), exact_match and f1
    (the official dev scores in percent of the final state; nan when the run diverged),
    train_questions_skipped (see `input_pipeline.build_features`), train_windows, dev_questions,
    num_params, metrics_path, predictions_path (None when the run diverged), loss_plot (or None), workdir.

  Raises:
    ValueError: bad settings, a workdir that is (or lies inside) the pre-training workdir or cannot be
      written, or bad SQuAD files; checkpoint.CheckpointError: a checkpoint in the workdir that cannot be
      resumed.
  """
  start_time = time.time()
  pretrained_workdir = pretrained_workdir or config.get("pretrained_workdir") or None
  _check_workdir(workdir, pretrained_workdir)
  workdir = training_loop.initialize(config, workdir)
  check_config(config)
  pretrained = load_pretrained(config, pretrained_workdir)
  if config.max_seq_len > pretrained.model_config.max_position_embeddings:
    raise ValueError(f"max_seq_len={config.max_seq_len} exceeds the model's max_position_embeddings="
                     f"{pretrained.model_config.max_position_embeddings}.")
  data = input_pipeline.create_datasets(config, pretrained.tokenizer)
  total_steps, warmup_steps = schedule_steps(config, len(data.train_features))
  optimizer = optimizers.OptimizerSpec.from_config(config, total_steps).replace(warmup_steps=warmup_steps)
  compiled = _compiled_steps(pretrained.model_config, optimizer.step_key(), parallel.create(config))
  state = _initial_state(compiled, config, optimizer, pretrained)
  train_rows = parallel.process_rows(config.batch_size)
  eval_rows = parallel.process_batch_size(config.eval_batch_size)
  predictions: dict[str, str] = {}

  def evaluate(state) -> dict[str, float]:
    """eval_loss, eval_accuracy, dev_exact_match, dev_f1 of the dev windows (module docstring)."""
    outputs = predict(compiled, state.params, data, eval_rows)
    predictions.clear()
    predictions.update(evaluation.decode_predictions(
        data.dev_examples, data.dev_features, outputs["start_logits"], outputs["end_logits"],
        max_answer_length=config.max_answer_length))
    scores = evaluation.squad_v1_scores(data.dev_examples, predictions)
    return {"eval_loss": float(np.mean(outputs["loss"])),
            "eval_accuracy": float(np.mean(outputs["correct"])),
            "dev_exact_match": scores["exact_match"], "dev_f1": scores["f1"]}

  result = training_loop.train(
      config, workdir, state=state, signature=_run_signature(config, pretrained, data, optimizer),
      total_steps=total_steps, steps=compiled,
      train_batch=lambda step: data.train_batch(step, config.batch_size, train_rows),
      evaluate=evaluate,
      throughput_name="tokens_per_s", units_per_step=config.batch_size * config.max_seq_len)

  loss_plot = None
  if config.plot and parallel.is_main_process() and result.history:
    loss_plot = metrics_lib.plot_loss_curves({"squad": result.metrics_path},
                                             os.path.join(workdir, "loss.png"),
                                             title=f"SQuAD v1.1 fine-tuning, {config.optimizer}")
  return {
      **result.summary(wall_time=time.time() - start_time),
      "exact_match": math.nan if result.diverged else result.eval_metrics["dev_exact_match"],
      "f1": math.nan if result.diverged else result.eval_metrics["dev_f1"],
      "train_questions_skipped": data.train_features.num_skipped,
      "train_windows": len(data.train_features),
      "dev_questions": len(data.dev_examples),
      "num_params": bert_models.count_params(state.params),
      "metrics_path": result.metrics_path,
      "predictions_path": None if result.diverged else _write_predictions(workdir, predictions),
      "loss_plot": loss_plot,
      "workdir": workdir,
  }
