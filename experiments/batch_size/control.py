"""The batch-size study's control (RQ8): the same measure on ResNet-18 and the embedded Fashion-MNIST subset.

Kunstner et al. (ICLR 2023) set transformers against CNNs, where SGD and Adam end close. The control asks how
the study's measure, gap(B) = SGD's mean final training-set loss minus Adam's (each tuned per batch size,
equal steps), behaves on a model that is not an attention model, run by the same protocol. It decides
nothing: the rule (`experiments.batch_size.verdict`) is BERT's; the control is reported beside it.

Protocol: ResNet-18 of width `filters` (3x3 stem, no augmentation; `experiments.noise.workloads`) on a fixed
set of training images, the first `batch_sizes[-1]` of a fixed shuffle of the subset (the full batch is all
of them); at each batch size each optimizer's learning-rate sweep (`comparison.sweep.sweep_learning_rates`:
the middle of its grid, extended past the grid while the best sits at an end), chosen on the final
training-set loss, then the other seeds at its best; `num_train_steps` steps at every batch size, warm-up
over the first tenth then cosine decay, no weight decay. The training-set loss and accuracy are measured in
evaluation mode (BatchNorm's running statistics) over the whole training set, the held-out loss on
`eval_examples` test images. A run whose final training-set loss is not finite or at least ln(classes) (no
better than a uniform guess) diverged.

One difference from BERT's objective: BatchNorm normalises a training batch by that batch's statistics, so a
small batch's loss is not exactly a sample of the full batch's; part of the control's noise is BatchNorm's.
"""
from __future__ import annotations

import dataclasses
import math
import os
import types
from collections.abc import Callable, Mapping
from typing import Any

import ml_collections

from experiments.common import optimizers as optimizers_lib
from experiments.common import results
from experiments.comparison import sweep as sweep_lib
from experiments.noise import training
from experiments.noise import workloads

RESULT_FILENAME = "run_result.json"
MEASURE, HELD_OUT = "train_set_loss", "eval_loss"
NUMBERS = (MEASURE, "train_set_accuracy", HELD_OUT, "eval_accuracy")  # a stored "nan" or "inf" read back as a float


@dataclasses.dataclass(frozen=True)
class ControlSettings:
  """The control a config's `control` field describes (module docstring).

  Attributes:
    dataset: the ResNet driver's dataset name (`experiments.resnet.input_pipeline`).
    filters: the ResNet-18's width (its first stage's channels).
    batch_sizes: ascending; the last is the number of training images (the full batch).
    num_train_steps: steps at every batch size.
    optimizers: registry names.
    learning_rates: optimizer -> its learning-rate grid.
    seeds: the sweep's seed first, then the seeds the best learning rate is rerun with.
    eval_examples: held-out test images; eval_batch_size: the evaluation's batch.
  """
  dataset: str
  filters: int
  batch_sizes: tuple[int, ...]
  num_train_steps: int
  optimizers: tuple[str, ...]
  learning_rates: dict[str, tuple[float, ...]]
  seeds: tuple[int, ...]
  eval_examples: int
  eval_batch_size: int

  @property
  def train_examples(self) -> int:
    return self.batch_sizes[-1]

  @classmethod
  def from_config(cls, config: Mapping[str, Any] | None) -> "ControlSettings | None":
    """The settings of a study config's `control` field; None when it is empty (no control).

    Raises:
      ValueError: naming the field: unknown or missing fields, an unknown optimizer or one without a grid,
        batch sizes that do not ascend, a non-positive size or step count, fewer than one seed.
    """
    values = dict(ml_collections.ConfigDict(dict(config or {})).to_dict())
    if not values:
      return None
    fields = {field.name for field in dataclasses.fields(cls)}
    if set(values) != fields:
      raise ValueError(f"control: unknown field(s) {sorted(set(values) - fields)}, missing "
                       f"{sorted(fields - set(values))}")
    values.update(batch_sizes=tuple(int(b) for b in values["batch_sizes"]), optimizers=tuple(values["optimizers"]),
                  learning_rates={name: tuple(float(lr) for lr in grid)
                                  for name, grid in values["learning_rates"].items()},
                  seeds=tuple(int(seed) for seed in values["seeds"]))
    settings = cls(**values)
    bad = [name for name in settings.optimizers
           if name not in optimizers_lib.REGISTRY or not settings.learning_rates.get(name)]
    if bad or not settings.optimizers:
      raise ValueError(f"control.optimizers={list(settings.optimizers)!r}: each a registry name with a grid in "
                       f"control.learning_rates; not so: {bad}")
    sizes = settings.batch_sizes
    if list(sizes) != sorted(set(sizes)) or len(sizes) < 2 or sizes[0] < 1:
      raise ValueError(f"control.batch_sizes={list(sizes)} must ascend from >= 1; the last is the full batch")
    for name in ("filters", "num_train_steps", "eval_examples", "eval_batch_size"):
      if getattr(settings, name) < 1:
        raise ValueError(f"control.{name}={getattr(settings, name)} must be >= 1")
    if not settings.seeds:
      raise ValueError("control.seeds must hold at least one seed")
    return settings


def check_devices(settings: ControlSettings, device_count: int) -> None:
  """ValueError unless every batch size splits evenly over the `device_count` devices the runs use (checked
  before a study starts, not after its BERT cells)."""
  bad = [b for b in settings.batch_sizes if b % device_count]
  if bad:
    raise ValueError(f"control.batch_sizes={list(settings.batch_sizes)}: {bad} do not split over the "
                     f"{device_count} local devices; use multiples of {device_count}")


def _workload(settings: ControlSettings):
  return workloads.resnet_workload(types.SimpleNamespace(
      resnet_dataset=settings.dataset, resnet_filters=settings.filters, resnet_train_examples=settings.train_examples,
      seed=settings.seeds[0], resnet_train_batch_size=settings.eval_batch_size, eval_examples=settings.eval_examples,
      resnet_learning_rate=settings.learning_rates[settings.optimizers[0]][0]))


def _run(workload, settings: ControlSettings, name: str, learning_rate: float, seed: int, batch_size: int,
         workdir: str) -> dict[str, Any]:
  """One run's final numbers, reused from `workdir/run_result.json` when it recorded the same run."""
  signature = results.to_jsonable({"dataset": settings.dataset, "filters": settings.filters,
                                   "train_examples": settings.train_examples, "eval_examples": settings.eval_examples,
                                   "eval_batch_size": settings.eval_batch_size, "steps": settings.num_train_steps,
                                   "optimizer": name, "learning_rate": learning_rate, "seed": seed,
                                   "batch_size": batch_size})
  path = os.path.join(workdir, RESULT_FILENAME)
  if os.path.exists(path):
    found = results.read_json(path, required=("signature",))
    if found["signature"] != signature:  # another setup's run: never overwritten
      differs = sorted(k for k in set(signature) | set(found["signature"])
                       if signature.get(k) != found["signature"].get(k))
      raise ValueError(f"{path} records a run of another setup (it differs in {differs}); use a new output "
                       "folder, or move that run away to run this one")
    return {k: results.as_number(v) if k in NUMBERS else v for k, v in found.items()}
  spec = training.optimizer(ml_collections.ConfigDict(dict(optimizer=name, learning_rate=learning_rate)), "cosine",
                            settings.num_train_steps)
  result = training.train(workload, spec, seed=seed, batch_size=batch_size, workdir=workdir)
  record = {"signature": signature, "diverged": bool(result["diverged"]), "wall_s": result["wall_time_s"]}
  if not result["diverged"]:
    train_set = workload.evaluate_train_set(training.compiled_steps(workload, spec).eval_step, result["state"])
    record.update({MEASURE: train_set["eval_loss"], "train_set_accuracy": train_set["eval_accuracy"],
                   HELD_OUT: result["eval_loss"], "eval_accuracy": result["eval_accuracy"]})
  results.write_json(path, record)
  return record


def _cell(workload, settings: ControlSettings, name: str, batch_size: int, out_dir: str) -> dict[str, Any]:
  """One (batch size, optimizer) cell: the sweep with the first seed, the other seeds at its best."""
  divergence_loss = math.log(workload.data["num_classes"])
  run = lambda lr, seed: _run(workload, settings, name, lr, seed, batch_size,
                              os.path.join(out_dir, f"batch{batch_size}", name, f"lr{lr:g}_seed{seed}"))
  swept = sweep_lib.sweep_learning_rates(settings.learning_rates[name],
                                         lambda lr: run(lr, settings.seeds[0]).get(MEASURE),
                                         divergence_loss=divergence_loss)
  best = sweep_lib.best_learning_rate(swept, divergence_loss)
  seed_runs = [run(best, seed) for seed in settings.seeds] if best is not None else []
  return {"grid": list(settings.learning_rates[name]), "learning_rates": list(swept),
          "sweep": [{"learning_rate": lr, MEASURE: loss} for lr, loss in swept.items()],
          "diverged_learning_rates": [lr for lr, loss in swept.items() if sweep_lib.is_diverged(loss, divergence_loss)],
          "best_learning_rate": best, "best_at_edge": sweep_lib.at_edge(swept, divergence_loss),
          "seeds": list(settings.seeds) if seed_runs else [],
          **{key: results.seed_statistics([math.nan if r.get(key) is None else r[key] for r in seed_runs])
             for key in NUMBERS}}  # nan: a diverged seed


def run_control(settings: ControlSettings, out_dir: str, on_cell: Callable[[dict[str, Any]], None]
                ) -> dict[str, Any]:
  """Runs every cell into `out_dir` (finished runs reused); `on_cell(control so far)` after each cell.

  Returns:
    {"description": the model and data in words, "data": what was loaded, "complete": bool,
     "cells": {batch size: {optimizer: cell}}}, a cell as the BERT cells (grid, sweep, best_learning_rate,
    best_at_edge, and seed statistics of train_set_loss, train_set_accuracy, eval_loss, eval_accuracy).
  """
  workload = _workload(settings)
  control: dict[str, Any] = {"description": workload.description, "data": workload.data, "complete": False,
                             "cells": {}}
  pairs = [(b, name) for b in settings.batch_sizes for name in settings.optimizers]
  for done, (batch_size, name) in enumerate(pairs, start=1):
    control["cells"].setdefault(str(batch_size), {})[name] = _cell(workload, settings, name, batch_size, out_dir)
    control["complete"] = done == len(pairs)
    on_cell(control)
  return control


def setup_text(settings: ControlSettings) -> str:
  """The control's setup in words, from its settings."""
  return (f"ResNet-18 of width {settings.filters} (3x3 stem, BatchNorm, no augmentation) on the first "
          f"{settings.train_examples} training images of a fixed shuffle of {settings.dataset}; batch sizes "
          f"{', '.join(map(str, settings.batch_sizes))} (the last the full batch), {settings.num_train_steps} steps at "
          "every batch size (warm-up over the first tenth, cosine decay, no weight decay); "
          + "; ".join(f"{name} swept over {', '.join(f'{lr:g}' for lr in settings.learning_rates[name])}"
                      for name in settings.optimizers)
          + f" (extended past the grid while the best sits at an end), chosen on the final training-set loss; "
          f"seeds {', '.join(map(str, settings.seeds))}; held-out loss on {settings.eval_examples} test images")
