"""BERT masked-language-model pre-training: `train_and_evaluate(config, workdir) -> dict`.

Data parallel with `jax.pmap` over all devices of all processes. One step, on each device d holding a
slice B_d of the global batch B:

    local_loss_d = sum_{masked (i, p) in B_d} CE(logits_ip, label_ip) / sum_{masked (i, p) in B} 1
    g = psum_d grad(local_loss_d)       # = the gradient of the global masked-token mean, on every device
    params, opt_state <- optimizer(g)   # identical on every device, so replicated state stays identical

Dividing by the global masked-token count (not by each device's) makes the result equal to a 1-device step
on the same global batch, whatever the device count. Dropout keys come from (run key, step, global device
index). Metrics (loss, MLM accuracy, learning rate, gradient norm, clip statistics, tokens/s, eval loss and
accuracy) go to `<workdir>/metrics.jsonl`; checkpoints to `<workdir>/checkpoints`; a loss plot to
`<workdir>/loss.png`.

Compile once: the pmapped steps are cached per (model architecture, optimizer settings except the peak
learning rate, schedule length), and the peak learning rate lives in the optimizer state, so a sweep that
calls `train_and_evaluate` many times in one process over learning rates and seeds compiles once.
"""
from __future__ import annotations

import dataclasses
import functools
import logging
import math
import os
import time
from typing import Any

import flax
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax

import acclip_optax
from experiments.bert import input_pipeline
from experiments.bert import models
from experiments.common import checkpoint
from experiments.common import metrics as metrics_lib
from experiments.common import optimizers
from experiments.common import parallel

AXIS = parallel.AXIS_NAME


@flax.struct.dataclass
class TrainState:
  """Everything a resumed run needs besides the data position (which is `step`)."""
  step: jax.Array  # int32, optimizer updates done
  params: Any
  opt_state: Any
  rng: jax.Array  # uint32 raw key data (portable across checkpoint formats)

  def as_dict(self) -> dict:
    return {"step": self.step, "params": self.params, "opt_state": self.opt_state, "rng": self.rng}


def mlm_sums(logits: jax.Array, labels: jax.Array, weights: jax.Array) -> dict[str, jax.Array]:
  """Weighted sums of cross-entropy, correct predictions and weights over the masked positions."""
  cross_entropy = optax.softmax_cross_entropy_with_integer_labels(logits, labels)
  correct = (jnp.argmax(logits, axis=-1) == labels).astype(jnp.float32)
  return {"loss_sum": jnp.sum(cross_entropy * weights), "correct_sum": jnp.sum(correct * weights),
          "weight_sum": jnp.sum(weights)}


def _apply_model(model, params, batch, *, deterministic, rngs=None):
  return model.apply({"params": params}, batch["input_ids"], batch["token_type_ids"],
                     batch["attention_mask"], batch["masked_positions"], deterministic=deterministic,
                     rngs=rngs)


def train_step(state: TrainState, batch: dict, *, model, tx) -> tuple[TrainState, dict]:
  """One pmapped update (see the module docstring); returns the new state and replicated metrics."""
  dropout_rng = parallel.device_rng(jax.random.wrap_key_data(state.rng), state.step)
  global_weight = jnp.maximum(jax.lax.psum(jnp.sum(batch["masked_weights"]), AXIS), 1.0)

  def loss_fn(params):
    logits = _apply_model(model, params, batch, deterministic=False, rngs={"dropout": dropout_rng})
    sums = mlm_sums(logits, batch["masked_labels"], batch["masked_weights"])
    return sums["loss_sum"] / global_weight, sums

  grads, sums = jax.grad(loss_fn, has_aux=True)(state.params)
  grads = jax.lax.psum(grads, AXIS)
  updates, opt_state = tx.update(grads, state.opt_state, state.params)
  params = optax.apply_updates(state.params, updates)
  sums = jax.lax.psum(sums, AXIS)
  metrics = {
      "train_loss": sums["loss_sum"] / global_weight,
      "train_accuracy": sums["correct_sum"] / global_weight,
      "grad_norm": optax.tree.norm(grads),
      "learning_rate": optimizers.current_learning_rate(opt_state),
      **acclip_optax.clip_stats(opt_state),
  }
  new_state = state.replace(step=state.step + 1, params=params, opt_state=opt_state)
  return new_state, metrics


def eval_step(params, batch, *, model) -> dict[str, jax.Array]:
  logits = _apply_model(model, params, batch, deterministic=True)
  return jax.lax.psum(mlm_sums(logits, batch["masked_labels"], batch["masked_weights"]), AXIS)


@dataclasses.dataclass(frozen=True)
class _CompiledSteps:
  init_params: Any
  train_step: Any
  eval_step: Any


@functools.lru_cache(maxsize=8)
def _compiled_steps(model_config: models.BertConfig, optimizer_signature: tuple) -> _CompiledSteps:
  """The jitted init and pmapped steps for one architecture and optimizer signature (cached).

  The optimizer is rebuilt from the signature; its own peak learning rate is irrelevant because the update
  reads the peak learning rate from the optimizer state it is given.
  """
  total_steps, *fields = optimizer_signature
  tx = optimizers.create_optimizer(ml_collections.ConfigDict(dict(fields)), total_steps)
  model = models.BertForMaskedLM(model_config)

  def init_params(key, max_seq_len, max_predictions):
    tokens = jnp.zeros((1, max_seq_len), jnp.int32)
    positions = jnp.zeros((1, max_predictions), jnp.int32)
    return model.init(key, tokens, tokens, tokens, positions, deterministic=True)["params"]

  return _CompiledSteps(
      init_params=jax.jit(init_params, static_argnums=(1, 2)),
      train_step=jax.pmap(functools.partial(train_step, model=model, tx=tx), axis_name=AXIS,
                          donate_argnums=(0,)),
      eval_step=jax.pmap(functools.partial(eval_step, model=model), axis_name=AXIS))


def _first_device(tree):
  """Host values of the first local device's copy (metrics and states are replicated)."""
  return jax.tree.map(lambda x: np.asarray(x.addressable_shards[0].data[0]), tree)


def _run_signature(config, model_config: models.BertConfig, data: input_pipeline.MlmData) -> dict:
  """Settings a checkpoint must share with the run that resumes it."""
  return {
      "model": dataclasses.asdict(model_config),
      "vocab_sha256": input_pipeline._file_sha256(data.vocab_path),  # pylint: disable=protected-access
      "optimizer": {k: config[k] for k in optimizers.default_optimizer_config()},
      **{k: config[k] for k in ("seed", "batch_size", "num_train_steps", "max_seq_len", "mask_prob",
                                "max_predictions_per_seq", "corpus")},
  }


def evaluate(compiled: _CompiledSteps, params, eval_batches: list[dict]) -> dict[str, float]:
  """Masked-token mean loss and accuracy over the held-out batches."""
  totals = {"loss_sum": 0.0, "correct_sum": 0.0, "weight_sum": 0.0}
  for batch in eval_batches:
    sums = _first_device(compiled.eval_step(params, batch))
    for name in totals:
      totals[name] += float(sums[name])
  weight = max(totals["weight_sum"], 1.0)
  return {"eval_loss": totals["loss_sum"] / weight, "eval_accuracy": totals["correct_sum"] / weight}


def _steady_rate(interval_rates: list[float]) -> float:
  """The median throughput of the logging intervals after the first (which includes compilation)."""
  rates = interval_rates[1:] or interval_rates
  return float(np.median(rates)) if rates else float("nan")


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str) -> dict[str, Any]:
  """Pre-trains BERT with MLM as `config` says, resuming from `<workdir>/checkpoints` if present.

  Args:
    config: see configs/default.py for every field.
    workdir: the run directory (config.json, vocab.txt, metrics.jsonl, checkpoints/, loss.png).

  Returns:
    A dict: train_loss and train_accuracy (last step), train_loss_last10 (mean of the last 10 logged
    steps), eval_loss, eval_accuracy, steps (updates done), diverged (a non-finite loss stopped the run),
    halted (stopped early by halt_after_steps), wall_time_s, steps_per_s (of this call, set-up and
    compilation included), tokens_per_s (steady state: median over the logging intervals but the
    first), num_params, vocab_size, metrics_path, loss_plot (or None), workdir.

  Raises:
    ValueError: bad corpus, vocabulary, batch size or optimizer settings; checkpoint.CheckpointError: a
    checkpoint in the workdir that cannot be resumed.
  """
  start_time = time.time()
  parallel.maybe_initialize_distributed(config)
  workdir = os.path.abspath(workdir)
  os.makedirs(workdir, exist_ok=True)
  is_main = parallel.is_main_process()

  if is_main:
    with open(os.path.join(workdir, "config.json"), "w") as f:
      f.write(config.to_json_best_effort(indent=2))
  data = input_pipeline.create_datasets(config, workdir)
  train_rows = parallel.process_rows(config.batch_size)
  eval_rows = parallel.process_rows(config.eval_batch_size)
  data.steps_per_epoch(config.batch_size)  # fails early if the corpus is smaller than one batch
  model_config = models.BertConfig(vocab_size=data.vocab_size, **config.model)
  if config.max_seq_len > model_config.max_position_embeddings:
    raise ValueError(f"max_seq_len={config.max_seq_len} exceeds model.max_position_embeddings="
                     f"{model_config.max_position_embeddings}")
  total_steps = config.num_train_steps
  compiled = _compiled_steps(model_config, optimizers.optimizer_signature(config, total_steps))

  root_key = jax.random.key(config.seed)
  params = compiled.init_params(jax.random.fold_in(root_key, 0), config.max_seq_len,
                                config.max_predictions_per_seq)
  tx = optimizers.create_optimizer(config, total_steps)  # its init puts this run's peak lr in the state
  state = jax.device_get(TrainState(
      step=jnp.zeros((), jnp.int32), params=params, opt_state=tx.init(params),
      rng=jax.random.key_data(jax.random.fold_in(root_key, 1))))
  num_params = models.count_params(state.params)

  manager = checkpoint.CheckpointManager(
      os.path.join(workdir, "checkpoints"), max_to_keep=config.max_checkpoints_to_keep)
  try:
    restored = manager.restore_latest(state.as_dict(), _run_signature(config, model_config, data))
  except checkpoint.CheckpointError:
    manager.close()
    raise
  if restored is not None:
    state = TrainState(**restored[0])
    logging.info("Resumed from step %d of %s", int(state.step), manager.directory)
  start_step = int(state.step)
  state = parallel.replicate(state)

  writer = metrics_lib.MetricWriter(workdir, enabled=is_main,
                                    resume_step=start_step if restored is not None else None,
                                    tensorboard=config.tensorboard)
  eval_batches = [parallel.shard_batch(b) for b in data.eval_batches(config.eval_batch_size, eval_rows)]
  tokens_per_step = config.batch_size * config.max_seq_len
  last_step = min(total_steps, config.halt_after_steps) if config.halt_after_steps else total_steps
  progress = metrics_lib.progress_bar(last_step, initial=start_step, enabled=is_main)

  history: list[dict[str, float]] = []
  pending: list[tuple[int, dict]] = []
  eval_metrics: dict[str, float] = {}
  diverged = False
  interval_start, interval_steps = time.time(), 0

  def flush() -> bool:
    """Fetches the buffered step metrics, writes them; False if a loss was not finite."""
    nonlocal interval_start, interval_steps
    fetched = jax.device_get([_first_device(m) for _, m in pending])
    tokens_per_s = interval_steps * tokens_per_step / max(time.time() - interval_start, 1e-9)
    finite = True
    for (step, _), values in zip(pending, fetched):
      record = {name: float(value) for name, value in values.items()}
      if step == pending[-1][0]:
        record["tokens_per_s"] = tokens_per_s
      writer.write(step, record)
      history.append(record)
      finite = finite and math.isfinite(record["train_loss"])
    if fetched:
      progress.set_postfix(loss=f"{history[-1]['train_loss']:.3f}")
    pending.clear()
    interval_start, interval_steps = time.time(), 0
    return finite

  def save(step: int) -> None:
    if config.save_checkpoints:
      manager.save(step, _first_device(state).as_dict(),
                   {"data_position": step, "signature": _run_signature(config, model_config, data)})

  step = start_step
  while step < last_step:
    batch = parallel.shard_batch(data.train_batch(step, config.batch_size, train_rows))
    state, step_metrics = compiled.train_step(state, batch)
    step += 1
    interval_steps += 1
    pending.append((step, step_metrics))
    progress.update(1)
    if step % config.log_every_steps == 0 or step == last_step:
      if not flush() and config.stop_on_nonfinite:
        diverged = True
        logging.warning("Non-finite loss at step <= %d; stopping", step)
        break
    if config.eval_every_steps and step % config.eval_every_steps == 0 and step < last_step:
      eval_metrics = evaluate(compiled, state.params, eval_batches)
      writer.write(step, eval_metrics)
    if config.checkpoint_every_steps and step % config.checkpoint_every_steps == 0 and step < last_step:
      save(step)
  flush()
  progress.close()

  if not diverged:
    eval_metrics = evaluate(compiled, state.params, eval_batches)
    writer.write(step, eval_metrics)
    if step > start_step:
      save(step)
  manager.wait_until_finished()
  manager.close()
  writer.close()

  loss_plot = None
  if config.plot and is_main and history:
    loss_plot = metrics_lib.plot_loss_curves({"bert": writer.path}, os.path.join(workdir, "loss.png"),
                                             title=f"BERT MLM, {config.optimizer}")
  wall_time = time.time() - start_time
  last = history[-1] if history else {}
  return {
      "train_loss": last.get("train_loss", float("nan")),
      "train_accuracy": last.get("train_accuracy", float("nan")),
      "train_loss_last10": float(np.mean([r["train_loss"] for r in history[-10:]])) if history
                           else float("nan"),
      "eval_loss": eval_metrics.get("eval_loss", float("nan")),
      "eval_accuracy": eval_metrics.get("eval_accuracy", float("nan")),
      "steps": step,
      "diverged": diverged,
      "halted": bool(config.halt_after_steps) and step < total_steps and not diverged,
      "wall_time_s": wall_time,
      "steps_per_s": (step - start_step) / wall_time,
      "tokens_per_s": _steady_rate([r["tokens_per_s"] for r in history if "tokens_per_s" in r]),
      "num_params": num_params,
      "vocab_size": data.vocab_size,
      "metrics_path": writer.path,
      "loss_plot": loss_plot,
      "workdir": workdir,
  }
