"""Training the noise study's workloads with the drivers' loop, `experiments.common.training_loop.train`.

Every run, the noise trajectory as each run of the optimizer comparison, is `training_loop.train` with the
workload's driver steps pmapped over the local devices (`parallel.AXIS_NAME`): per device d holding the
slice B_d of the batch B,

    g = psum_d grad(sum_{i in B_d} w_i CE_i / sum_{i in B} w_i),   params, opt_state <- optimizer(g)

(`classification.sum_over_devices` and `classification.apply_gradients`). The train step is compiled once per
(model, `OptimizerSpec.step_key()`): the peak learning rate lives in the optimizer state, so one compiled
step serves every learning rate and seed of a sweep, and the trajectory shares it with the sweep runs of
its optimizer when train_steps == sweep_steps. The eval step is compiled once per model.

A trajectory that stops at intermediate steps to be measured is a sequence of `train` calls on one workdir:
each halts at the next stop (`halt_after_steps`) and leaves a checkpoint there, from which the next call
resumes, as after a preemption. Its cost is small: Orbax saves and restores a 4 MB state in about 0.1 s on
CPU, and the modes have at most one intermediate stop per model (full: step 75 of 300; quick and tiny: none).
The sweep runs write no checkpoint.
"""
from __future__ import annotations

import functools
import time
from typing import Any, Iterator, Sequence

import ml_collections

from experiments.common import optimizers
from experiments.common import parallel
from experiments.common import training_loop
from experiments.noise import workloads

LOG_EVERY_STEPS = 10  # the loop fetches the step metrics (and checks the loss is finite) this often


def optimizer(base: ml_collections.ConfigDict, decay: str, total_steps: int) -> optimizers.OptimizerSpec:
  """`base` (name, peak learning rate, own fields) over `total_steps`: warm-up over the first tenth, then
  `decay`, no weight decay."""
  config = optimizers.default_optimizer_config()
  config.update(base)
  config.update(learning_rate_decay=decay, warmup_steps=max(1, total_steps // 10), weight_decay=0.0)
  return optimizers.OptimizerSpec.from_config(config, max(total_steps, 1))


_EVAL_STEPS: dict[tuple, Any] = {}  # (eval_step, model) -> its first pmapped version
PARALLELISM = parallel.PmapParallelism()


@functools.lru_cache(maxsize=16)
def _pmapped_steps(train_grads, eval_step, model, optimizer_key: optimizers.OptimizerSpec
                   ) -> training_loop.CompiledSteps:
  steps = training_loop.compile_steps(PARALLELISM, train_grads, eval_step, model=model, optimizer=optimizer_key)
  # The evaluation does not depend on the optimizer: one compiled eval step per model.
  return training_loop.CompiledSteps(
      parallelism=PARALLELISM, train_step=steps["train_step"],
      eval_step=_EVAL_STEPS.setdefault((eval_step, model), steps["eval_step"]))


def compiled_steps(workload: workloads.Workload, spec: optimizers.OptimizerSpec) -> training_loop.CompiledSteps:
  """The workload's pmapped train and eval steps for `spec`, cached by (model, `spec.step_key()`)."""
  return _pmapped_steps(workload.train_grads, workload.eval_step, workload.model, spec.step_key())


def train(workload: workloads.Workload, spec: optimizers.OptimizerSpec, *, seed: int, batch_size: int,
          workdir: str, halt_after_steps: int = 0, save_checkpoints: bool = False) -> dict[str, Any]:
  """One run of `spec.total_steps` steps from `workload.initial_state(seed, spec)` with the data order of `seed`.

  It resumes from a checkpoint in `workdir` when there is one (of the same run: workload, seed, batch size and
  optimizer), stops after `halt_after_steps` steps when > 0, and stops early on a non-finite loss
  (`config.stop_on_nonfinite`; then no final evaluation).

  Returns:
    `training_loop.LoopResult.summary` (train_loss_last10, eval_loss, eval_accuracy, steps, diverged, ...)
    with "start_step" (the step it resumed from, 0 for a new run) and "state" (the replicated state at the end).
  """
  steps = compiled_steps(workload, spec)
  config = training_loop.default_loop_config()
  config.update(max_checkpoints_to_keep=1, halt_after_steps=halt_after_steps, log_every_steps=LOG_EVERY_STEPS,
                save_checkpoints=save_checkpoints, plot=False, seed=seed)
  config.update(workload=workload.name, batch_size=batch_size, optimizer=spec.to_dict())
  start = time.perf_counter()
  result = training_loop.train(
      config, training_loop.prepare_workdir(workdir), state=workload.initial_state(seed, spec),
      signature={"workload": workload.name, "seed": seed, "batch_size": batch_size, "optimizer": spec.to_dict()},
      total_steps=spec.total_steps, steps=steps,
      train_batch=lambda step: workload.train_batch(seed, step, batch_size),
      evaluate=lambda state: workload.evaluate(steps.eval_step, state),
      throughput_name=workload.throughput_name, units_per_step=batch_size * workload.units_per_example)
  return dict(result.summary(wall_time=time.perf_counter() - start), start_step=result.start_step,
              state=result.state)


def trajectory(workload: workloads.Workload, spec: optimizers.OptimizerSpec, *, seed: int, batch_size: int,
               stops: Sequence[int], workdir: str) -> Iterator[tuple[int, Any, dict[str, Any]]]:
  """One run of `train`, paused at each of the sorted `stops` (0: the initialisation).

  Yields:
    (stop, host parameters at that step, the `train` summary of the segment that ended there; {} at 0).

  Raises:
    RuntimeError: the run diverged before a stop (its noise cannot be measured).
  """
  for stop in stops:
    if stop == 0:
      yield 0, workload.initial_state(seed, spec).params, {}
      continue
    result = train(workload, spec, seed=seed, batch_size=batch_size, workdir=workdir, halt_after_steps=stop,
                   save_checkpoints=stop < stops[-1])
    if result["diverged"] or result["steps"] != stop:
      raise RuntimeError(f"noise study: the {workload.name} trajectory ({spec.name}, peak learning rate "
                         f"{spec.learning_rate}) diverged before step {stop}; lower its learning rate")
    yield stop, PARALLELISM.to_host(result["state"]).params, result
