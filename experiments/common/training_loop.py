"""The run the drivers share: resume, train with buffered metric writes, evaluate, checkpoint.

A driver writes its steps per device (`compile_steps`), builds its model, data and fresh state, hands the
pieces that differ between models to `train`, and turns the `LoopResult` into its return dict
(`LoopResult.summary` holds the keys every driver returns). How the steps run on many devices
(`config.parallelism`: "pmap", the default, or "mesh") is the business of the `parallel` object the steps
were compiled for; the loop is the same for both.
"""
from __future__ import annotations

import dataclasses
import functools
import logging
import math
import os
import tempfile
import time
from typing import Any, Callable, Mapping

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

import acclip_optax
from experiments.common import checkpoint
from experiments.common import classification
from experiments.common import metrics as metrics_lib
from experiments.common import optimizers
from experiments.common import parallel
from experiments.common import results
# Preemption (SIGTERM) lives in its own module; the loop's callers know these names from here.
from experiments.common.preemption import PREEMPTED_EXIT_STATUS, Preempted, PreemptionNotice  # noqa: F401


def default_loop_config() -> ml_collections.ConfigDict:
  """The loop's own fields with their defaults (driver configs update it and set batch sizes and steps).

  seed; log_every_steps (metrics are fetched from the devices this often; every step is logged);
  eval_every_steps and checkpoint_every_steps (0: only at the end); save_checkpoints, max_checkpoints_to_keep;
  halt_after_steps (> 0: stop, with a checkpoint, after this many steps, as if preempted); stop_on_nonfinite
  (stop at a NaN/inf loss and report the run as diverged); tensorboard; plot; parallelism ("pmap" or
  "mesh") and mesh_shape ((data, fsdp); see `parallel.create`); and multi-host
  `jax.distributed.initialize(coordinator_address, num_processes, process_id)` when `distributed`.
  """
  config = ml_collections.ConfigDict()
  config.seed = 0
  config.log_every_steps = 100
  config.eval_every_steps = 0
  config.checkpoint_every_steps = 0
  config.save_checkpoints = True
  config.max_checkpoints_to_keep = 2
  config.halt_after_steps = 0
  config.stop_on_nonfinite = True
  config.tensorboard = False
  config.plot = True
  config.parallelism = "pmap"  # or "mesh": jax.jit over a (data, fsdp) mesh (experiments.common.parallel)
  config.mesh_shape = ml_collections.config_dict.placeholder(tuple)  # (data, fsdp); None: all devices on data
  config.distributed = False
  config.coordinator_address = ml_collections.config_dict.placeholder(str)
  config.num_processes = ml_collections.config_dict.placeholder(int)
  config.process_id = ml_collections.config_dict.placeholder(int)
  return config


def initialize(config, workdir: str) -> str:
  """Starts JAX's distributed runtime when the config asks for it, checks the run's settings and workdir.

  Everything here fails in about a second, before any data is loaded: the loop's settings
  (`check_loop_config`), the optimizer's (`optimizers.check_optimizer_config`), and a workdir that can
  be created and written.

  Returns:
    The workdir's absolute path (created if missing).

  Raises:
    ValueError: a bad setting, or a workdir that is a file or cannot be written.
  """
  parallel.maybe_initialize_distributed(config)
  check_loop_config(config)
  optimizers.check_optimizer_config(config)
  return prepare_workdir(workdir)


def check_loop_config(config) -> None:
  """Refuses loop settings that would fail late or silently: ValueError naming the field.

  batch_size and eval_batch_size must be >= 1 and divide by the device count; log_every_steps and
  max_checkpoints_to_keep >= 1; halt_after_steps, eval_every_steps and checkpoint_every_steps >= 0; seed
  in [0, 2**32) (NumPy's generators take no other).
  """
  if not 0 <= config.seed < 2**32:
    raise ValueError(f"seed={config.seed} must lie in [0, 2**32)")
  for name in ("batch_size", "eval_batch_size", "log_every_steps", "max_checkpoints_to_keep"):
    if config[name] < 1:
      raise ValueError(f"{name}={config[name]} must be >= 1")
  for name in ("halt_after_steps", "eval_every_steps", "checkpoint_every_steps"):
    if config[name] < 0:
      raise ValueError(f"{name}={config[name]} must be >= 0 (0 turns it off)")
  parallel.process_batch_size(config.batch_size)
  parallel.process_batch_size(config.eval_batch_size)
  parallel.create(config)  # parallelism and mesh_shape


def prepare_workdir(workdir: str) -> str:
  """Creates the workdir and checks that it is a writable directory; returns its absolute path.

  Raises:
    ValueError: the path is a file, or it cannot be created or written (naming the path and the reason).
  """
  workdir = os.path.abspath(workdir)
  if os.path.exists(workdir) and not os.path.isdir(workdir):
    raise ValueError(f"workdir={workdir!r} is a file, not a directory; give a directory for the run")
  try:
    os.makedirs(workdir, exist_ok=True)
    with tempfile.TemporaryFile(dir=workdir):
      pass
  except OSError as error:
    raise ValueError(f"workdir={workdir!r} cannot be used: {error.strerror or error}") from error
  return workdir


@dataclasses.dataclass(frozen=True)
class CompiledSteps:
  """A model's train and eval steps compiled for one parallelism (drivers add their compiled init).

  Attributes:
    parallelism: the `parallel.PmapParallelism` or `parallel.MeshParallelism` that places states and batches
      for these steps and fetches their values.
    train_step: `(placed state, placed batch) -> (state, metrics with train_loss)`; donates its state.
    eval_step: `(placed params or state, placed batch) -> sums over all devices`.
  """
  parallelism: parallel.Parallelism
  train_step: Callable
  eval_step: Callable


def compile_steps(parallelism: parallel.Parallelism, train_grads: Callable, eval_step: Callable, *, model: Any,
                  optimizer: optimizers.OptimizerSpec, eval_per_row: bool = False) -> dict[str, Any]:
  """The fields of a CompiledSteps from a driver's per-device steps.

  `train_grads(state, batch, *, model, axis_name) -> (g, aux)` ends with `classification.sum_over_devices`,
  and `classification.apply_gradients` makes the update; `eval_step(x, batch, *, model, axis_name)` returns
  sums over `axis_name` (or, with `eval_per_row`, values per row: `parallelism.compile_row_step`). tx is `optimizer.create()`; its own peak learning rate is irrelevant because the
  update reads the peak learning rate from the optimizer state it is given, so one compiled step (cached by
  `optimizer.step_key()`) serves a whole learning-rate sweep.
  """
  tx = optimizer.create()
  return {"parallelism": parallelism,
          "train_step": parallelism.compile_train_step(functools.partial(train_grads, model=model),
                                                       functools.partial(classification.apply_gradients, tx)),
          "eval_step": (parallelism.compile_row_step if eval_per_row else parallelism.compile_eval_step)(
              functools.partial(eval_step, model=model))}


def all_finite(params: Any, loss: jax.Array) -> jax.Array:
  """One bool: the loss and every floating-point parameter are finite.

  The parameters, not the whole state: an optimizer may keep an infinite value on purpose (ZClip's
  threshold when it did not clip), and non-finite moments reach the parameters at the next step anyway.
  """
  checks = [jnp.all(jnp.isfinite(leaf)) for leaf in jax.tree.leaves((params, loss))
            if jnp.issubdtype(leaf.dtype, jnp.inexact)]
  return jnp.all(jnp.stack(checks))


@dataclasses.dataclass(frozen=True)
class LoopResult:
  """What `train` leaves to the driver.

  Attributes:
    state: the state after the last step, placed on the devices by the run's parallelism.
    start_step: the step the run resumed from (0 for a new run).
    step: optimizer updates done (the data position).
    history: the train records of the whole run in step order, those written before a resume included
      (read back from the metrics file; on the main process only); the last record of each logging
      interval also holds the interval's throughput.
    eval_metrics: the last evaluation's metrics ({} when none ran).
    diverged: a non-finite loss or state stopped the run (config.stop_on_nonfinite).
    halted: config.halt_after_steps stopped the run before its schedule's end.
    metrics_path: the metrics JSONL file.
    checkpoint_step: the newest checkpoint on disk when the run ended (None: there is none).
  """
  state: Any
  start_step: int
  step: int
  history: list[dict[str, float]]
  eval_metrics: dict[str, float]
  diverged: bool
  halted: bool
  metrics_path: str
  checkpoint_step: int | None = None

  def summary(self, wall_time: float) -> dict[str, Any]:
    """The keys every driver returns, in order.

    They are train_loss, train_accuracy (last step), train_loss_last10 (mean of the last 10 logged steps),
    eval_loss, eval_accuracy, steps, diverged, halted, checkpoint_step, wall_time_s and steps_per_s (over
    wall_time).
    """
    last = self.history[-1] if self.history else {}
    return {
        "train_loss": last.get("train_loss", float("nan")),
        "train_accuracy": last.get("train_accuracy", float("nan")),
        "train_loss_last10": float(np.mean([r["train_loss"] for r in self.history[-10:]])) if self.history
                             else float("nan"),
        "eval_loss": self.eval_metrics.get("eval_loss", float("nan")),
        "eval_accuracy": self.eval_metrics.get("eval_accuracy", float("nan")),
        "steps": self.step,
        "diverged": self.diverged,
        "halted": self.halted,
        "checkpoint_step": self.checkpoint_step,
        "wall_time_s": wall_time,
        "steps_per_s": (self.step - self.start_step) / wall_time,
    }


def _write_config(config, workdir: str) -> None:
  """Writes `<workdir>/config.json` atomically (main process only)."""
  if not parallel.is_main_process():
    return
  results.write_text(os.path.join(workdir, "config.json"), config.to_json_best_effort(indent=2))


class _MetricLog:
  """Step metrics kept on the devices until a logging step, then fetched together and written.

  One record per step goes to the metrics file and `history`; the last record of an interval also gets the
  interval's throughput (`throughput_name` = interval steps * units_per_step / interval seconds) and the
  clipping statistics of that step's update (`acclip_optax.clip_stats`), computed only there.
  """

  def __init__(self, writer: metrics_lib.MetricWriter, history: list[dict], progress: Any,
               parallelism: parallel.Parallelism,
               clip_stats: Callable | None, throughput_name: str, units_per_step: int):
    self.writer, self.history, self.progress, self.parallelism = writer, history, progress, parallelism
    self.clip_stats, self.throughput_name, self.units_per_step = clip_stats, throughput_name, units_per_step
    self.pending: list[tuple[int, Any]] = []
    self.interval_start = time.time()

  def add(self, step: int, metrics: Mapping[str, jax.Array]) -> None:
    self.pending.append((step, metrics))
    self.progress.update(1)

  def flush(self, state: Any) -> bool:
    """Writes the buffered steps' metrics; False if a loss among them was not finite."""
    if not self.pending:
      return True
    fetched = self.parallelism.to_host([m for _, m in self.pending])
    throughput = len(self.pending) * self.units_per_step / max(time.time() - self.interval_start, 1e-9)
    stats = self.parallelism.to_host(self.clip_stats(state)) if self.clip_stats else {}
    finite = True
    for (step, _), values in zip(self.pending, fetched):
      record = {name: float(value) for name, value in values.items()}
      if step == self.pending[-1][0]:
        record[self.throughput_name] = throughput
        record.update({name: float(value) for name, value in stats.items()})
      self.writer.write(step, record)
      self.history.append(record)
      finite = finite and math.isfinite(record["train_loss"])
    self.progress.set_postfix(loss=f"{self.history[-1]['train_loss']:.3f}")
    self.pending.clear()
    self.interval_start = time.time()
    return finite


class _Checkpoints:
  """Saves finite states only, so a diverged run never replaces its good checkpoints.

  A checkpoint holds `parallelism.checkpoint_state(state).as_dict()` (one host copy under pmap; the sharded
  arrays themselves under a mesh, which Orbax writes where they live) with meta
  {"data_position": step, "signature": signature}.
  """

  def __init__(self, manager: checkpoint.CheckpointManager, parallelism: parallel.Parallelism,
               signature: Mapping[str, Any],
               enabled: bool):
    self.manager, self.parallelism, self.signature, self.enabled = manager, parallelism, signature, enabled
    self._all_finite = parallelism.on_devices(all_finite)

  def save(self, step: int, state: Any, loss: jax.Array) -> bool:
    """Checkpoints a finite state; returns False (and writes nothing) for a non-finite one."""
    if not self.enabled:
      return True
    if not bool(self.parallelism.to_host(self._all_finite(state.params, loss))):
      logging.warning("Step %d: the loss or the state is not finite; no checkpoint written", step)
      return False
    self.manager.save(step, self.parallelism.checkpoint_state(state).as_dict(),
                      {"data_position": step, "signature": self.signature})
    return True


def _restore(manager: checkpoint.CheckpointManager, config, state: Any, signature: Mapping[str, Any],
             parallelism: parallel.Parallelism) -> tuple[Any, bool]:
  """(the state to start from, placed on the devices; whether it came from a checkpoint)."""
  restored = manager.restore_latest(parallelism.restore_template(state.as_dict()), signature)
  if restored is not None:
    checkpoint.check_halt_after_steps(config.halt_after_steps, int(np.asarray(restored[0]["step"])),
                                      manager.directory)
  if restored is None:
    return parallelism.place_state(state), False
  logging.info("Resumed from step %d of %s", int(np.asarray(restored[0]["step"])), manager.directory)
  return parallelism.place_state(type(state)(**restored[0])), True


def train(config, workdir: str, *, state: Any, signature: Mapping[str, Any], total_steps: int,
          steps: CompiledSteps, train_batch: Callable[[int], Any], evaluate: Callable[[Any], dict[str, float]],
          throughput_name: str, units_per_step: int) -> LoopResult:
  """Resumes from `<workdir>/checkpoints` if it holds a checkpoint, trains to the end, evaluates, saves.

  The run goes to last_step = min(total_steps, config.halt_after_steps) (total_steps when that is 0).
  `<workdir>/config.json` is written once the checkpoint (if any) and the metrics file have been accepted,
  so a refused rerun leaves the workdir as it was. Step metrics stay on the devices until a logging step
  (every config.log_every_steps steps, before every checkpoint, and the last; `_MetricLog`), so a checkpoint
  is never newer than metrics.jsonl. Evaluation (config.eval_every_steps) and
  checkpoints (config.checkpoint_every_steps, only when config.save_checkpoints; `_Checkpoints`) run at
  their intervals before last_step and once at the end. A run that resumes at last_step (it already ended
  there) evaluates once more but writes nothing.

  Divergence: a checkpoint is written only for a state whose last loss and parameters are all finite (one
  scalar computed on the devices, fetched when saving, which syncs anyway). A non-finite train loss at a
  logging step, or non-finite parameters at a checkpoint step, stops the run when config.stop_on_nonfinite
  (no final evaluation or checkpoint; a state found non-finite only at the final save has been evaluated,
  and is not saved), and the newest checkpoint on disk is then the last finite state; the log names it.

  Preemption: SIGTERM (`PreemptionNotice`) stops the run after the current step, which is checkpointed
  (if finite) without an evaluation, and raises `Preempted`; a rerun resumes there and continues exactly.

  Args:
    config: reads max_checkpoints_to_keep, tensorboard, halt_after_steps, log_every_steps,
      eval_every_steps, checkpoint_every_steps (0: only at the end), stop_on_nonfinite, save_checkpoints.
    workdir: the run directory (absolute).
    state: the fresh host state, a struct with `step` and `params` fields and `as_dict()`; a checkpoint
      replaces it.
    signature: the run's settings a checkpoint must share to be resumed (see checkpoint.CheckpointManager).
    total_steps: the schedule's length.
    steps: the compiled steps and their parallelism, which places the state and each batch.
    train_batch: `step -> this process's rows of the global batch` for the update after `step` updates.
    evaluate: `placed state -> {name: float}`, written at the step it ran.
    throughput_name: the throughput record's name, e.g. "tokens_per_s".
    units_per_step: what one step processes in those units (tokens, images).

  Returns:
    A LoopResult.

  Raises:
    checkpoint.CheckpointError: a checkpoint in the workdir that cannot be resumed.
    Preempted: a SIGTERM arrived while the run trained (it is checkpointed).
  """
  is_main = parallel.is_main_process()
  par = steps.parallelism
  manager = checkpoint.CheckpointManager(
      os.path.join(workdir, "checkpoints"), max_to_keep=config.max_checkpoints_to_keep)
  writer = None
  try:  # the checkpoint manager and the metric writer are closed on every way out, errors included
    # Whether the optimizer has clipping statistics (a pmap returning {} fails across processes).
    has_clip_stats = bool(jax.eval_shape(acclip_optax.clip_stats, state))
    state, resumed = _restore(manager, config, state, signature, par)
    start_step = int(par.to_host(state.step))
    writer = metrics_lib.MetricWriter(workdir, enabled=is_main, resume_step=start_step if resumed else None,
                                      tensorboard=config.tensorboard)
    _write_config(config, workdir)  # last: a rerun refused on the checkpoint or the metrics changes nothing
    last_step = min(total_steps, config.halt_after_steps) if config.halt_after_steps else total_steps

    history = [r for r in writer.kept_records if "train_loss" in r]
    evaluated_before = any("eval_loss" in r and r["step"] == start_step for r in writer.kept_records)
    progress = metrics_lib.progress_bar(last_step, initial=start_step, enabled=is_main)
    log = _MetricLog(writer, history, progress, par, par.on_devices(acclip_optax.clip_stats) if has_clip_stats
                     else None, throughput_name, units_per_step)
    checkpoints = _Checkpoints(manager, par, signature, config.save_checkpoints)
    eval_metrics: dict[str, float] = {}
    diverged = preempted = False

    def due(every: int, step: int) -> bool:
      return bool(every) and step % every == 0 and step < last_step

    step = start_step
    with PreemptionNotice() as notice:
      while step < last_step:
        state, step_metrics = steps.train_step(state, par.place_batch(train_batch(step)))
        step += 1
        log.add(step, step_metrics)
        if step % config.log_every_steps == 0 or step == last_step:
          diverged = not log.flush(state) and config.stop_on_nonfinite
        if not diverged and due(config.eval_every_steps, step):
          eval_metrics = evaluate(state)
          writer.write(step, eval_metrics)
        if not diverged and due(config.checkpoint_every_steps, step):
          # The metrics on disk first: a checkpoint is never newer than the log, so a crash right after it
          # loses no step of metrics.jsonl (the resumed run starts after the checkpoint).
          diverged = not log.flush(state) and config.stop_on_nonfinite
          if not diverged and not checkpoints.save(step, state, step_metrics["train_loss"]):
            diverged = config.stop_on_nonfinite
        if diverged:
          break
        if notice.reached() and step < last_step:  # at last_step: finish the run, then stop the process
          preempted = True
          break
      log.flush(state)
      progress.close()

      if preempted:  # save at once and leave the evaluation to the rerun: a notice leaves seconds
        checkpoints.save(step, state, step_metrics["train_loss"])  # a non-finite state: the rerun resumes an older one
      elif not diverged:
        eval_metrics = evaluate(state)
        if step > start_step or not evaluated_before:
          writer.write(step, eval_metrics)
        if step > start_step and not checkpoints.save(step, state, step_metrics["train_loss"]):
          diverged = config.stop_on_nonfinite
      manager.wait_until_finished()
      checkpoint_step = manager.latest_step()
      if diverged:
        logging.error(
            "Diverged: a non-finite loss or state by step %d. %s", step,
            f"The newest checkpoint, step {checkpoint_step} in {manager.directory}, is the last finite state "
            "written; a rerun resumes from it." if checkpoint_step is not None else "No checkpoint was written.")
      if notice.requested:  # also a notice during the last step or the evaluation: the process stops
        preempted_error = Preempted(workdir, step, checkpoint_step)
        logging.error("%s", preempted_error)
        raise preempted_error
  finally:
    manager.close()
    if writer is not None:
      writer.close()
  return LoopResult(
      state=state, start_step=start_step, step=step, history=history, eval_metrics=eval_metrics,
      diverged=diverged, halted=bool(config.halt_after_steps) and step < total_steps and not diverged,
      metrics_path=writer.path, checkpoint_step=checkpoint_step)
