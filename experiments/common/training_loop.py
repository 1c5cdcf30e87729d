"""The run the pmap drivers share: resume, train with buffered metric writes, evaluate, checkpoint.

A driver builds its model, data, compiled steps and fresh state, hands the pieces that differ between
models to `train`, and turns the `LoopResult` into its return dict (`LoopResult.summary` holds the keys
every driver returns).
"""
from __future__ import annotations

import dataclasses
import functools
import itertools
import logging
import math
import os
import signal
import tempfile
import threading
import time
from typing import Any, Callable, Mapping

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

import acclip_optax
from experiments.common import checkpoint
from experiments.common import metrics as metrics_lib
from experiments.common import optimizers
from experiments.common import parallel


def default_loop_config() -> ml_collections.ConfigDict:
  """The loop's own fields with their defaults (driver configs update it and set batch sizes and steps).

  seed; log_every_steps (metrics are fetched from the devices this often; every step is logged);
  eval_every_steps and checkpoint_every_steps (0: only at the end); save_checkpoints, max_checkpoints_to_keep;
  halt_after_steps (> 0: stop, with a checkpoint, after this many steps, as if preempted); stop_on_nonfinite
  (stop at a NaN/inf loss and report the run as diverged); tensorboard; plot; and multi-host
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
class PmappedSteps:
  """A model's train and eval steps, pmapped over the local devices; drivers add their compiled init."""
  train_step: Callable
  eval_step: Callable


def pmap_steps(train_step: Callable, eval_step: Callable, *, model: Any,
               optimizer: optimizers.OptimizerSpec) -> dict[str, Callable]:
  """The fields of a PmappedSteps: `train_step(state, batch, model=, tx=)`, `eval_step(x, batch, model=)`.

  tx is `optimizer.create()`; its own peak learning rate is irrelevant because the update reads the peak
  learning rate from the optimizer state it is given, so one compiled step (cached by
  `optimizer.step_key()`) serves a whole learning-rate sweep. The train step donates its state.
  """
  tx = optimizer.create()
  return {"train_step": jax.pmap(functools.partial(train_step, model=model, tx=tx),
                                 axis_name=parallel.AXIS_NAME, donate_argnums=(0,)),
          "eval_step": jax.pmap(functools.partial(eval_step, model=model), axis_name=parallel.AXIS_NAME)}


def first_device(tree: Any) -> Any:
  """Host values of the first local device's copy (metrics and states are replicated)."""
  return jax.tree.map(lambda x: np.asarray(x.addressable_shards[0].data[0]), tree)


def _all_finite(params: Any, loss: jax.Array) -> jax.Array:
  """One bool: the loss and every floating-point parameter are finite.

  The parameters, not the whole state: an optimizer may keep an infinite value on purpose (ZClip's
  threshold when it did not clip), and non-finite moments reach the parameters at the next step anyway.
  """
  checks = [jnp.all(jnp.isfinite(leaf)) for leaf in jax.tree.leaves((params, loss))
            if jnp.issubdtype(leaf.dtype, jnp.inexact)]
  return jnp.all(jnp.stack(checks))


# Runs on the devices where the replicated state lives; only its one scalar per device comes to the host.
_all_finite_on_devices = jax.pmap(_all_finite)
# The clipping statistics of a state's last update (acclip_optax.clip_stats), computed at logging steps only.
_clip_stats_on_devices = jax.pmap(acclip_optax.clip_stats)


class Preempted(SystemExit):
  """A preemption notice (SIGTERM) stopped the process at a step boundary; a rerun resumes.

  The loop saves the state of that step (if it is finite and config.save_checkpoints is on) before it
  raises, so rerunning the same command continues from there and loses no progress. It subclasses
  SystemExit, as KeyboardInterrupt does BaseException, so that code which records a failure and goes on
  (`except Exception`) does not swallow it: the process stops, with this message and exit status 1.

  Attributes:
    workdir: the run's directory.
    step: the step at which the notice stopped the run.
    checkpoint_step: the newest checkpoint on disk, where a rerun resumes (None: there is none).
  """

  def __init__(self, workdir: str, step: int, checkpoint_step: int | None):
    self.workdir, self.step, self.checkpoint_step = workdir, step, checkpoint_step
    where = (f"the newest checkpoint is step {checkpoint_step} in {workdir}; rerun the same command to resume "
             "from it" if checkpoint_step is not None else f"no checkpoint in {workdir}; a rerun starts over")
    super().__init__(f"Preempted (SIGTERM) at step {step}: {where}.")


# The ids this process gives JAX's preemption sync point: one per loop iteration of every `train` call in
# the process, increasing, so that a notice between two runs, or before a resumed run's first step, is
# still met at the next iteration (the sync point is the largest id any process has passed, plus one).
_SYNC_POINT_IDS = itertools.count(1)


class PreemptionNotice:
  """SIGTERM as a preemption notice, checked by the loop after every step (a context manager).

  One process: a handler that only sets a flag, installed while the loop runs (from the main thread; the
  previous Python handler, or the default action, comes back on exit). Several processes
  (`jax.distributed`): JAX's preemption sync manager (`multihost_utils.reached_preemption_sync_point`, fed
  one increasing id per iteration, `_SYNC_POINT_IDS`), which hears the notice on any process and picks one
  iteration at which every process stops and saves. A loop in another thread, or several processes
  without JAX's preemption service, gets no notice: SIGTERM then acts as it would without us.
  """

  def __init__(self):
    self._requested = False
    self._installed = False
    self._previous = None
    self._multi_host = False

  def _handle(self, signum, frame):  # pylint: disable=unused-argument
    self._requested = True
    logging.warning("SIGTERM: stopping after this step with a checkpoint")

  def __enter__(self) -> "PreemptionNotice":
    if jax.process_count() > 1:
      self._multi_host = bool(jax.config.jax_enable_preemption_service)
      if not self._multi_host:
        logging.warning("jax_enable_preemption_service is off: SIGTERM will end the run without a checkpoint")
    elif threading.current_thread() is threading.main_thread():
      self._previous = signal.signal(signal.SIGTERM, self._handle)
      self._installed = True
    return self

  def __exit__(self, *exc_info) -> None:
    if self._installed:  # None: the previous handler was not set from Python; the default is the closest
      signal.signal(signal.SIGTERM, self._previous if self._previous is not None else signal.SIG_DFL)
      self._installed = False

  @property
  def requested(self) -> bool:
    """Whether a notice has been heard (by this process's handler, or at a multi-process sync point)."""
    return self._requested

  def reached(self) -> bool:
    """Whether to stop and save after this iteration; call once per iteration (every process agrees)."""
    if self._multi_host and not self._requested:
      from jax.experimental import multihost_utils  # pylint: disable=g-import-not-at-top
      try:
        self._requested = multihost_utils.reached_preemption_sync_point(next(_SYNC_POINT_IDS))
      except RuntimeError as error:  # no sync manager in this runtime: no notice, as documented
        logging.warning("No preemption notice: %s", error)
        self._multi_host = False
    return self._requested


@dataclasses.dataclass(frozen=True)
class LoopResult:
  """What `train` leaves to the driver.

  Attributes:
    state: the replicated state after the last step.
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
  path = os.path.join(workdir, "config.json")
  with open(path + ".tmp", "w") as f:
    f.write(config.to_json_best_effort(indent=2))
  os.replace(path + ".tmp", path)


def train(config, workdir: str, *, state: Any, signature: Mapping[str, Any], total_steps: int,
          train_step: Callable[[Any, Any], tuple[Any, Mapping[str, jax.Array]]],
          train_batch: Callable[[int], Any], evaluate: Callable[[Any], dict[str, float]],
          throughput_name: str, units_per_step: int) -> LoopResult:
  """Resumes from `<workdir>/checkpoints` if it holds a checkpoint, trains to the end, evaluates, saves.

  The run goes to last_step = min(total_steps, config.halt_after_steps) (total_steps when that is 0).
  `<workdir>/config.json` is written once the checkpoint (if any) and the metrics file have been accepted,
  so a refused rerun leaves the workdir as it was. Step metrics stay on the devices until a logging step (every
  config.log_every_steps steps and the last), when they are fetched together and written to
  `<workdir>/metrics.jsonl` one record per step; the last record of the interval also gets
  `throughput_name` = interval steps * units_per_step / interval seconds and the clipping statistics of
  that step's update (`acclip_optax.clip_stats`), computed only there. Evaluation
  (config.eval_every_steps) and checkpoints (config.checkpoint_every_steps, only when
  config.save_checkpoints) run at their intervals before last_step and once at the end; a checkpoint holds
  `first_device(state).as_dict()` with meta {"data_position": step, "signature": signature}. A run that
  resumes at last_step (it already ended there) evaluates once more but writes nothing.

  Divergence: a checkpoint is written only for a state whose last loss and parameters are all finite (one
  scalar computed on the devices, fetched when saving, which syncs anyway), so a diverged run never
  replaces its good checkpoints. A non-finite train loss at a logging step, or non-finite parameters at a
  checkpoint step, stops the run when config.stop_on_nonfinite (no final evaluation or checkpoint; a state
  found non-finite only at the final save has been evaluated, and is not saved), and the newest checkpoint
  on disk is then the last finite state; the log names it.

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
    train_step: the pmapped `(state, sharded batch) -> (state, replicated metrics with train_loss)`.
    train_batch: `step -> this process's rows of the global batch` for the update after `step` updates;
      sharded over the local devices here.
    evaluate: `replicated state -> {name: float}`, written at the step it ran.
    throughput_name: the throughput record's name, e.g. "tokens_per_s".
    units_per_step: what one step processes in those units (tokens, images).

  Returns:
    A LoopResult.

  Raises:
    checkpoint.CheckpointError: a checkpoint in the workdir that cannot be resumed.
    Preempted: a SIGTERM arrived while the run trained (it is checkpointed).
  """
  is_main = parallel.is_main_process()
  manager = checkpoint.CheckpointManager(
      os.path.join(workdir, "checkpoints"), max_to_keep=config.max_checkpoints_to_keep)
  try:
    restored = manager.restore_latest(state.as_dict(), signature)
    if restored is not None:
      checkpoint.check_halt_after_steps(config.halt_after_steps, int(restored[0]["step"]), manager.directory)
  except checkpoint.CheckpointError:
    manager.close()
    raise
  if restored is not None:
    state = type(state)(**restored[0])
    logging.info("Resumed from step %d of %s", int(state.step), manager.directory)
  start_step = int(state.step)
  # Whether the optimizer has clipping statistics (a pmap returning {} fails across processes).
  has_clip_stats = bool(jax.eval_shape(acclip_optax.clip_stats, state))
  state = parallel.replicate(state)

  writer = metrics_lib.MetricWriter(workdir, enabled=is_main,
                                    resume_step=start_step if restored is not None else None,
                                    tensorboard=config.tensorboard)
  _write_config(config, workdir)  # last: a rerun refused on reading the checkpoint or the metrics changes nothing
  last_step = min(total_steps, config.halt_after_steps) if config.halt_after_steps else total_steps
  progress = metrics_lib.progress_bar(last_step, initial=start_step, enabled=is_main)

  history = [r for r in writer.kept_records if "train_loss" in r]
  evaluated_before = any("eval_loss" in r and r["step"] == start_step for r in writer.kept_records)
  pending: list[tuple[int, dict]] = []
  eval_metrics: dict[str, float] = {}
  diverged = False
  interval_start, interval_steps = time.time(), 0

  def flush() -> bool:
    """Fetches the buffered step metrics, writes them; False if a loss was not finite.

    The last record also gets the interval's throughput and the clipping statistics of the state's last
    update (`acclip_optax.clip_stats`: clip_fraction, global_norm), computed here rather than in every step.
    """
    nonlocal interval_start, interval_steps
    fetched = jax.device_get([first_device(m) for _, m in pending])
    throughput = interval_steps * units_per_step / max(time.time() - interval_start, 1e-9)
    clip_stats = first_device(_clip_stats_on_devices(state)) if pending and has_clip_stats else {}
    finite = True
    for (step, _), values in zip(pending, fetched):
      record = {name: float(value) for name, value in values.items()}
      if step == pending[-1][0]:
        record[throughput_name] = throughput
        record.update({name: float(value) for name, value in clip_stats.items()})
      writer.write(step, record)
      history.append(record)
      finite = finite and math.isfinite(record["train_loss"])
    if fetched:
      progress.set_postfix(loss=f"{history[-1]['train_loss']:.3f}")
    pending.clear()
    interval_start, interval_steps = time.time(), 0
    return finite

  def save(step: int, loss: jax.Array) -> bool:
    """Checkpoints a finite state; for a non-finite one writes the pending metrics and returns False."""
    if not config.save_checkpoints:
      return True
    if not bool(first_device(_all_finite_on_devices(state.params, loss))):
      flush()
      logging.warning("Step %d: the loss or the state is not finite; no checkpoint written", step)
      return False
    manager.save(step, first_device(state).as_dict(), {"data_position": step, "signature": signature})
    return True

  step = start_step
  preempted = False  # stopped by a preemption notice before last_step
  with PreemptionNotice() as notice:
    while step < last_step:
      state, step_metrics = train_step(state, parallel.shard_batch(train_batch(step)))
      step += 1
      interval_steps += 1
      pending.append((step, step_metrics))
      progress.update(1)
      if step % config.log_every_steps == 0 or step == last_step:
        if not flush() and config.stop_on_nonfinite:
          diverged = True
          break
      if config.eval_every_steps and step % config.eval_every_steps == 0 and step < last_step:
        eval_metrics = evaluate(state)
        writer.write(step, eval_metrics)
      if config.checkpoint_every_steps and step % config.checkpoint_every_steps == 0 and step < last_step:
        if not save(step, step_metrics["train_loss"]) and config.stop_on_nonfinite:
          diverged = True
          break
      if notice.reached() and step < last_step:  # at last_step: finish the run, then stop the process
        preempted = True
        break
    flush()
    progress.close()

    if preempted:  # save at once and leave the evaluation to the rerun: a notice leaves seconds
      save(step, step_metrics["train_loss"])  # refuses a non-finite state: the rerun resumes an older one
    elif not diverged:
      eval_metrics = evaluate(state)
      if step > start_step or not evaluated_before:
        writer.write(step, eval_metrics)
      if step > start_step and not save(step, step_metrics["train_loss"]):
        diverged = config.stop_on_nonfinite
    manager.wait_until_finished()
    checkpoint_step = manager.latest_step()
    if diverged:
      logging.error(
          "Diverged: a non-finite loss or state by step %d. %s", step,
          f"The newest checkpoint, step {checkpoint_step} in {manager.directory}, is the last finite state "
          "written; a rerun resumes from it." if checkpoint_step is not None else "No checkpoint was written.")
    manager.close()
    writer.close()
    if notice.requested:  # also a notice during the last step or the evaluation: the process stops
      raise Preempted(workdir, step, checkpoint_step)
  return LoopResult(
      state=state, start_step=start_step, step=step, history=history, eval_metrics=eval_metrics,
      diverged=diverged, halted=bool(config.halt_after_steps) and step < total_steps and not diverged,
      metrics_path=writer.path, checkpoint_step=checkpoint_step)
