"""ResNet image classification: `train_and_evaluate(config, workdir) -> dict`.

Data parallel over all devices of all processes, with `jax.pmap` (the default) or `jax.jit` over a (data, fsdp)
mesh (`config.parallelism = "mesh"`, experiments.common.parallel; the same numbers). One step, on each device d
holding a slice B_d of the global batch B (|B| = config.batch_size):

    local_loss_d = sum_{i in B_d} CE(logits_i, label_i) / |B|
    BatchNorm:   batch mean/variance pmean-ed over devices (the model's axis_name), so the running
                 statistics are those of the global batch and identical on every replica
    g = psum_d grad(local_loss_d)         # the gradient of the global-batch mean loss, on every device
    params, opt_state <- optimizer(g)     # identical on every device

The Flax ImageNet recipe is the default (configs/default.py): SGD with Nesterov momentum 0.9, L2 weight
decay on kernels added to the gradient (weight_decay_mode='coupled', no decay on BatchNorm and biases),
linear warm-up then cosine decay, and a learning rate scaled with the batch,
lr = base_learning_rate * batch_size / 256. Any optimizer of experiments.common.optimizers (adam, acclip,
gclip, ...) can replace it by name.

Metrics (loss, accuracy, learning rate, gradient norm, clip statistics, images/s, eval loss and accuracy)
go to `<workdir>/metrics.jsonl`, checkpoints to `<workdir>/checkpoints`, a loss plot to `<workdir>/loss.png`.
The pmapped steps are cached per (model, input shape, optimizer settings except the peak learning rate), so
a learning-rate/seed sweep in one process compiles once.
"""
from __future__ import annotations

import dataclasses
import functools
import math
import os
import time
from typing import Any

import flax
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from experiments.common import classification
from experiments.common import metrics as metrics_lib
from experiments.common import optimizers
from experiments.common import parallel
from experiments.common import training_loop
from experiments.common import workdir_lock
from experiments.resnet import input_pipeline
from experiments.resnet import models

@flax.struct.dataclass
class TrainState:
  """Everything a resumed run needs besides the data position (which is `step`)."""
  step: jax.Array  # int32, optimizer updates done
  params: Any
  batch_stats: Any  # BatchNorm running means and variances
  opt_state: Any

  def as_dict(self) -> dict:
    return {"step": self.step, "params": self.params, "batch_stats": self.batch_stats,
            "opt_state": self.opt_state}


@dataclasses.dataclass(frozen=True)
class ModelSpec:
  """The architecture and input shape (hashable: it keys the compiled-step cache)."""
  name: str
  num_classes: int
  num_filters: int
  small_images: bool
  dtype: str
  image_shape: tuple[int, int, int]

  def create(self, axis_name=None) -> models.ResNet:
    return models.create_model(self.name, num_classes=self.num_classes, num_filters=self.num_filters,
                               small_images=self.small_images, axis_name=axis_name, dtype=self.dtype)


classification_sums = classification.weighted_sums


def train_grads(state: TrainState, batch: dict, *, model, axis_name) -> tuple[Any, dict]:
  """One device's part of an update (module docstring): the gradient summed over `axis_name` and the new
  BatchNorm statistics (over the global batch: `model` averages them over the same axis)."""
  global_count = jax.lax.psum(jnp.asarray(batch["label"].shape[0], jnp.float32), axis_name)

  def loss_fn(params):
    logits, new_model_state = model.apply(
        {"params": params, "batch_stats": state.batch_stats}, batch["image"], train=True,
        mutable=["batch_stats"])
    sums = classification_sums(logits, batch["label"], jnp.ones_like(batch["label"], jnp.float32))
    return sums["loss_sum"] / global_count, (sums, new_model_state["batch_stats"])

  grads, (sums, batch_stats) = jax.grad(loss_fn, has_aux=True)(state.params)
  return classification.sum_over_devices(grads, sums, global_count, axis_name, batch_stats=batch_stats)


def eval_step(state: TrainState, batch: dict, *, model, axis_name) -> dict[str, jax.Array]:
  logits = model.apply({"params": state.params, "batch_stats": state.batch_stats}, batch["image"],
                       train=False)
  return jax.lax.psum(classification_sums(logits, batch["label"], batch["weight"]), axis_name)


@dataclasses.dataclass(frozen=True)
class CompiledSteps(training_loop.CompiledSteps):
  init_variables: Any


@functools.lru_cache(maxsize=8)
def compiled_steps(spec: ModelSpec, optimizer: optimizers.OptimizerSpec,
                   parallelism: parallel.Parallelism) -> CompiledSteps:
  """The jitted init and compiled steps of one model, optimizer and parallelism (cached: pass
  `spec.step_key()`)."""
  return CompiledSteps(
      init_variables=compile_init(spec),
      **training_loop.compile_steps(parallelism, train_grads, eval_step,
                                    model=spec.create(axis_name=parallelism.axis_name), optimizer=optimizer))


# XLA's optimised compile of ResNet's init (dozens of truncated-normal initialisers) takes ~40 s on CPU,
# at the lowest level ~7 s; init runs once, so its speed does not matter.
_FAST_COMPILE_OPTIONS = {"xla_backend_optimization_level": 0, "xla_llvm_disable_expensive_passes": True}


def compile_init(spec: ModelSpec):
  """`key -> variables` ({'params', 'batch_stats'}) of the model `spec`, compiled (quickly on CPU)."""
  def init_variables(key):
    return spec.create().init(key, jnp.zeros((1,) + spec.image_shape, jnp.float32), train=False)

  lowered = jax.jit(init_variables).lower(jax.random.key(0))
  return lowered.compile(_FAST_COMPILE_OPTIONS if jax.default_backend() == "cpu" else None)


def peak_learning_rate(config) -> float:
  """config.learning_rate, or base_learning_rate * batch_size / 256 when base_learning_rate is set."""
  if config.get("base_learning_rate") is not None:
    return config.base_learning_rate * config.batch_size / 256.0
  return config.learning_rate


def schedule_steps(config, steps_per_epoch: int) -> tuple[int, int]:
  """(total_steps, warmup_steps): num_train_steps or num_epochs of data; warmup_epochs or warmup_steps."""
  total = config.num_train_steps or int(math.ceil(config.num_epochs * steps_per_epoch))
  if total < 1:
    raise ValueError(f"num_train_steps={config.num_train_steps}, num_epochs={config.num_epochs}: "
                     "the run must have at least one step")
  warmup = (int(round(config.warmup_epochs * steps_per_epoch)) if config.get("warmup_epochs")
            else config.warmup_steps)
  return total, min(warmup, total)


def model_spec(config, data: input_pipeline.ImageData) -> ModelSpec:
  return ModelSpec(name=config.model, num_classes=data.num_classes, num_filters=config.num_filters,
                   small_images=config.small_images, dtype=config.dtype, image_shape=data.image_shape)


def check_config(config) -> None:
  """Every ResNet setting, before any data is read: ValueError naming the field as the config spells it.

  The loop's and the optimizer's own fields are checked by `training_loop.initialize`; here the schedule's
  length, the data fields (`input_pipeline.check_settings`), the model (built, with its abstract
  parameters, for 10 classes at config.image_size) and the optimizer's state on those parameters.
  """
  for name in ("num_epochs", "warmup_epochs"):
    if not (math.isfinite(config[name]) and config[name] >= 0):
      raise ValueError(f"{name}={config[name]} must be a finite number >= 0")
  if config.num_train_steps < 0 or not (config.num_train_steps or config.num_epochs):
    raise ValueError(f"num_train_steps={config.num_train_steps}, num_epochs={config.num_epochs}: the run "
                     "must have at least one step")
  base = config.get("base_learning_rate")
  if base is not None and not (math.isfinite(base) and base >= 0):
    raise ValueError(f"base_learning_rate={base} must be a finite number >= 0 (or None: learning_rate)")
  input_pipeline.check_settings(config)
  spec = ModelSpec(name=config.model, num_classes=10, num_filters=config.num_filters,
                   small_images=config.small_images, dtype=config.dtype,
                   image_shape=(config.image_size, config.image_size, 3))
  images = jax.ShapeDtypeStruct((1,) + spec.image_shape, jnp.float32)
  variables = jax.eval_shape(lambda x: spec.create().init(jax.random.key(0), x, train=False), images)
  optimizer = optimizers.OptimizerSpec.from_config(config, max(config.num_train_steps, config.warmup_steps, 1))
  jax.eval_shape(optimizer.create().init, variables["params"])


def _run_signature(config, spec: ModelSpec, data: input_pipeline.ImageData,
                   optimizer: optimizers.OptimizerSpec) -> dict:
  """Settings a checkpoint must share with the run that resumes it."""
  return {"model": dataclasses.asdict(spec), "dataset": data.name,
          "optimizer": optimizer.to_dict(),
          **{k: config[k] for k in ("seed", "batch_size", "num_train_steps", "num_epochs")}}


@workdir_lock.owns_workdir
def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str) -> dict[str, Any]:
  """Trains the ResNet `config` describes, resuming from `<workdir>/checkpoints` if present.

  Args:
    config: see configs/default.py for every field.
    workdir: the run directory (metrics.jsonl, checkpoints, loss.png).

  Returns:
    A dict: train_loss, train_accuracy (last step), train_loss_last10 (mean of the last 10 steps),
    eval_loss, eval_accuracy, steps, diverged, halted, wall_time_s, steps_per_s, images_per_s, num_params,
    dataset (the one actually used, e.g. 'digits' after a fallback), learning_rate (the peak),
    metrics_path, loss_plot, workdir.

  Raises:
    ValueError: bad dataset name, batch size or optimizer settings; FileNotFoundError: a missing dataset
    (fallback off); checkpoint.CheckpointError: a checkpoint in the workdir that cannot be resumed.
  """
  start_time = time.time()
  workdir = training_loop.initialize(config, workdir)
  check_config(config)

  data = input_pipeline.create_datasets(config)
  train_rows = parallel.process_rows(config.batch_size)
  eval_rows = parallel.process_rows(config.eval_batch_size)
  total_steps, warmup_steps = schedule_steps(config, data.steps_per_epoch(config.batch_size))
  config = ml_collections.ConfigDict(config.to_dict())
  config.learning_rate = peak_learning_rate(config)
  config.warmup_steps = warmup_steps
  spec = model_spec(config, data)
  optimizer = optimizers.OptimizerSpec.from_config(config, total_steps)
  par = parallel.create(config)
  compiled = compiled_steps(spec, optimizer.step_key(), par)

  variables = compiled.init_variables(jax.random.key(config.seed))
  state = jax.device_get(TrainState(step=jnp.zeros((), jnp.int32), params=variables["params"],
                                    batch_stats=variables["batch_stats"],
                                    opt_state=optimizer.create().init(variables["params"])))
  num_params = models.count_params(state.params)
  eval_batches = [par.place_batch(b) for b in data.eval_batches(
      config.eval_batch_size, eval_rows, config.get("max_eval_examples", 0))]

  result = training_loop.train(
      config, workdir, state=state, signature=_run_signature(config, spec, data, optimizer), total_steps=total_steps,
      steps=compiled,
      train_batch=lambda step: data.train_batch(step, config.batch_size, train_rows),
      evaluate=lambda state: classification.evaluate(compiled.eval_step, state, eval_batches, par.to_host),
      throughput_name="images_per_s", units_per_step=config.batch_size)

  loss_plot = None
  if config.plot and parallel.is_main_process() and result.history:
    loss_plot = metrics_lib.plot_loss_curves(
        {config.model: result.metrics_path}, os.path.join(workdir, "loss.png"),
        title=f"{config.model} on {data.name}, {config.optimizer}")
  images_per_s = [r["images_per_s"] for r in result.history if "images_per_s" in r]
  return {
      **result.summary(wall_time=time.time() - start_time),
      "images_per_s": float(np.mean(images_per_s)) if result.history else float("nan"),
      "num_params": num_params,
      "dataset": data.name,
      "learning_rate": config.learning_rate,
      "metrics_path": result.metrics_path,
      "loss_plot": loss_plot,
      "workdir": workdir,
  }
