"""The batch-size study (RQ8, a question of our own): does the Adam-SGD gap on BERT shrink with the noise?

Protocol (after Kunstner et al., ICLR 2023): one fixed objective, the masked-LM loss of tiny BERT on the
first `max_train_sequences` training sequences of the corpus, each masked once (`static_masking`), no
dropout and no weight decay, so that a batch of all of them is the exact gradient of the objective. At each
batch size, each optimizer (SGD with momentum, Adam, GClip, the paper's ACClip) is a cell of the BERT
comparison (`experiments.comparison`): the same model, data order, steps, warm-up and decay; its own
learning-rate sweep, chosen on the final training-set loss (`selection_metric`), extended past its grid while
the best sits at an end; the other seeds at its best. Measured: the final loss on the whole training set
(the optimisation question) and the held-out loss beside it.

Budget: equal steps at every batch size (`num_train_steps`). The question is what each update does with a
gradient of less noise; equal epochs would give the full batch a few dozen updates where the smallest batch
has thousands, so a gap there would measure too few steps, not the noise.

The noise at each batch size is measured with the noise toolkit (`experiments.noise.measure`) at the
initial parameters of the first seed: `num_minibatches` minibatch gradients against their mean (the
minibatches drawn as the runs draw them), their norms, and the tail index of the noise at sampled
coordinates (Mohammadi's and Hill's estimators). At the full batch every minibatch is the whole objective:
the noise is zero by construction, and is recorded as such without measuring.

Cells run in the config's order (SGD and Adam at the smallest and the full batch first: they decide the
verdict), each resumable; then the control, ResNet-18 on Fashion-MNIST by the same protocol
(`experiments.batch_size.control`), which decides nothing; the summary is rewritten after every cell. The rule
lives in `experiments.batch_size.verdict`.
"""
from __future__ import annotations

import dataclasses
import os
import time
from collections.abc import Mapping
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections

from experiments.batch_size import control as control_lib
from experiments.batch_size import plots
from experiments.batch_size import summary as summary_lib
from experiments.bert import input_pipeline
from experiments.bert import models
from experiments.bert import train
from experiments.common import classification
from experiments.common import optimizers as optimizers_lib
from experiments.common import results
from experiments.common import workdir_lock
from experiments.comparison import study as comparison_study
from experiments.comparison import summary as comparison_summary
from experiments.noise import measure
from experiments.noise import workloads

NOISE_FILENAME = "noise.json"
# What a cell keeps of the comparison's per-optimizer result.
CELL_KEYS = ("grid", "learning_rates", "sweep", "diverged_learning_rates", "best_learning_rate", "best_at_edge",
             "seeds", comparison_study.TRAIN_SET_LOSS, comparison_study.TRAIN_SET_ACCURACY, "eval_loss",
             "eval_accuracy", "wall_s")


@dataclasses.dataclass(frozen=True)
class BatchSizeSettings:
  """The study a config describes (configs/quick.py, configs/full.py; see the module docstring).

  Attributes:
    mode, expected_time: the config's name and how long it takes, in words.
    comparison: the comparison config (experiments/comparison/configs/<name>.py) whose cells these are.
    overrides: run config fields on top of the comparison's (nested dicts merge); they must fix the
      objective: `max_train_sequences` > 0 and `static_masking`.
    optimizers: registry names.
    batch_sizes: ascending; the last must be `max_train_sequences` (the full batch).
    cells: (batch size, optimizer) pairs in the order they run; every pair of the two lists.
    num_minibatches, num_coordinates: the noise measurement's minibatches and sampled coordinates.
    seeds: the seeds of every cell; empty: the comparison's.
    control: the ResNet control's fields (`control.ControlSettings`); empty: no control.
  """
  mode: str
  expected_time: str
  comparison: str
  overrides: dict[str, Any]
  optimizers: tuple[str, ...]
  batch_sizes: tuple[int, ...]
  cells: tuple[tuple[int, str], ...]
  num_minibatches: int
  num_coordinates: int
  seeds: tuple[int, ...] = ()
  control: dict[str, Any] = dataclasses.field(default_factory=dict)

  @classmethod
  def from_config(cls, config: Mapping[str, Any]) -> "BatchSizeSettings":
    """The settings of a config (a ConfigDict, or the dict a summary.json recorded).

    Raises:
      ValueError: an unknown field or optimizer, an objective that is not fixed, batch sizes that do not end
        at the full batch, cells that are not the grid.
    """
    values = ml_collections.ConfigDict(dict(config)).to_dict()
    unknown = sorted(set(values) - {field.name for field in dataclasses.fields(cls)})
    if unknown:
      raise ValueError(f"batch-size study config: unknown field(s) {unknown}")
    values.update(optimizers=tuple(values["optimizers"]), batch_sizes=tuple(int(b) for b in values["batch_sizes"]),
                  cells=tuple((int(b), str(name)) for b, name in values["cells"]),
                  seeds=tuple(int(seed) for seed in values.get("seeds", ())))
    settings = cls(**values)
    bad = [name for name in settings.optimizers if name not in optimizers_lib.REGISTRY]
    if bad or not settings.optimizers:
      raise ValueError(f"optimizers={list(settings.optimizers)!r}: give one or more of "
                       f"{', '.join(optimizers_lib.REGISTRY)}")
    subset = settings.overrides.get("max_train_sequences", 0)
    if not (subset and settings.overrides.get("static_masking")):
      raise ValueError("overrides must fix the objective: max_train_sequences > 0 and static_masking=True")
    sizes = settings.batch_sizes
    if list(sizes) != sorted(set(sizes)) or len(sizes) < 2 or sizes[0] < 1 or sizes[-1] != subset:
      raise ValueError(f"batch_sizes={list(sizes)} must ascend from >= 1 to the full batch, max_train_sequences="
                       f"{subset}")
    grid = {(b, name) for b in sizes for name in settings.optimizers}
    if sorted(settings.cells) != sorted(grid):
      raise ValueError("cells must hold every (batch size, optimizer) pair once; missing "
                       f"{sorted(grid - set(settings.cells))}, extra {sorted(set(settings.cells) - grid)}")
    control_lib.ControlSettings.from_config(settings.control)  # its own errors, naming control.<field>
    if settings.num_minibatches < 2 or settings.num_coordinates < 1:
      raise ValueError(f"num_minibatches={settings.num_minibatches} must be >= 2 and num_coordinates="
                       f"{settings.num_coordinates} >= 1")
    return settings


def comparison_settings(settings: BatchSizeSettings) -> comparison_study.ComparisonSettings:
  """The comparison every cell belongs to: its config with the study's optimizers, overrides and measure."""
  return comparison_study.study_comparison(settings.comparison, settings.optimizers, settings.overrides,
                                          settings.seeds, selection_metric=comparison_study.TRAIN_SET_LOSS)


def measure_noise(compared: comparison_study.ComparisonSettings, settings: BatchSizeSettings,
                  workdir: str) -> dict[str, Any]:
  """The gradient noise at the initial parameters of the first seed, per batch size (module docstring)."""
  seed = compared.seeds[0]
  config = comparison_study.run_config(compared, settings.optimizers[0], 1.0, seed)
  data = input_pipeline.create_datasets(config, workdir)
  model_config = models.BertConfig(vocab_size=data.vocab_size, **config.model)
  model = models.BertForMaskedLM(model_config)
  # The runs' own initialisation (train.train_and_evaluate): the key folded with 0.
  params = train._init_params(model_config)(jax.random.fold_in(jax.random.key(seed), 0), config.max_seq_len,  # pylint: disable=protected-access
                                           config.max_predictions_per_seq)

  def loss(params, batch):
    logits = train.apply_model(model, params, batch, deterministic=True)
    sums = classification.weighted_sums(logits, batch["masked_labels"], batch["masked_weights"])
    return sums["loss_sum"] / jnp.maximum(sums["weight_sum"], 1.0)

  labels = measure.group_labels(params, workloads.bert_parameter_group, workloads.BERT_GROUPS)
  measured = {}
  for batch_size in settings.batch_sizes:
    if batch_size == len(data.train_sequences):
      measured[str(batch_size)] = {"noise_norm_median": 0.0, "note": "the full batch: no noise by construction"}
      continue
    batches = [data.train_batch(step, batch_size) for step in range(settings.num_minibatches)]
    found = measure.measure(loss, params, batches, labels=labels, groups=workloads.BERT_GROUPS,
                            num_coordinates=settings.num_coordinates, key=jax.random.key(seed), seed=seed)
    measured[str(batch_size)] = found.numbers
  return {"point": "initialisation", "seed": seed, "train_sequences": int(len(data.train_sequences)),
          "by_batch_size": measured}


def _cached_noise(compared, settings: BatchSizeSettings, out_dir: str) -> dict[str, Any]:
  """`measure_noise`, computed once per study config into out_dir (it takes a minute at full size)."""
  path = os.path.join(out_dir, NOISE_FILENAME)
  key = {"overrides": compared.overrides, "batch_sizes": list(settings.batch_sizes),
         "num_minibatches": settings.num_minibatches, "num_coordinates": settings.num_coordinates}
  key = results.to_jsonable(key)
  if os.path.exists(path):
    cached = results.read_json(path, required=("key",))
    if cached["key"] == key:
      return cached
  value = dict(measure_noise(compared, settings, os.path.join(out_dir, "noise_data")), key=key)
  results.write_json(path, value)
  return value


def setup_text(settings: BatchSizeSettings, compared: comparison_study.ComparisonSettings) -> str:
  """The study's setup in words, made from its config and the comparison's."""
  config = comparison_study.run_config(compared, settings.optimizers[0], 1.0, compared.seeds[0])
  return (comparison_study.setup_text(compared, with_decay=False, batch_text="B")
          + f". The objective: the first {config.max_train_sequences} training sequences, each masked once, "
          f"dropout {config.model.dropout_rate:g}, weight decay {config.weight_decay:g}; batch sizes B = "
          f"{', '.join(map(str, settings.batch_sizes))} (the last the full batch), {config.num_train_steps} steps "
          f"at every batch size; the learning rate chosen on the final training-set loss; noise measured at "
          f"initialisation over {settings.num_minibatches} minibatches, {settings.num_coordinates} sampled "
          "coordinates.")


def _write(out_dir: str, summary: Mapping[str, Any]) -> dict[str, Any]:
  return results.write_summary(out_dir, summary, plots.plot_figures, summary_lib.summary_markdown)


@workdir_lock.owns_output_folder
def run(out_dir: str, config: ml_collections.ConfigDict) -> dict[str, Any]:
  """Runs the study a config describes into ``out_dir``; returns its summary (also summary.json there).

  Rerunning into the same folder reuses every finished run and resumes a preempted one; summary.json and
  summary.md are rewritten after every cell (``"complete": false`` until the last).
  """
  start = time.perf_counter()
  settings = BatchSizeSettings.from_config(config)
  os.makedirs(out_dir, exist_ok=True)
  compared = comparison_settings(settings)
  compared, corpus = comparison_study.with_shared_vocabulary(compared, out_dir)
  noise = _cached_noise(compared, settings, out_dir)
  control_settings = control_lib.ControlSettings.from_config(settings.control)
  if control_settings is not None:
    control_lib.check_devices(control_settings, jax.local_device_count())
  cells: dict[int, dict[str, Any]] = {}
  summary: dict[str, Any] = {}

  def write(control: Mapping[str, Any] | None = None) -> dict[str, Any]:
    done = sum(len(by_name) for by_name in cells.values())
    control_part = {} if control_settings is None else {"control": {
        "setup": control_lib.setup_text(control_settings), **(control or {"complete": False, "cells": {}})}}
    return _write(out_dir, {
        # Complete: BERT's cells, which the verdict reads; the control's own state is control["complete"].
        "mode": settings.mode, "cells_done": done, "cells_planned": len(settings.cells),
        "complete": done == len(settings.cells),
        "config": config.to_dict(), "setup": setup_text(settings, compared),
        "data_description": [comparison_summary.corpus_text(corpus)], "noise": noise,
        "cells": {str(b): cells[b] for b in settings.batch_sizes if b in cells},
        **control_part, "wall_s": time.perf_counter() - start,
    })

  for batch_size, name in settings.cells:
    cell = dataclasses.replace(compared, overrides={**compared.overrides, "batch_size": batch_size})
    result = comparison_study._compare_optimizer(cell, os.path.join(out_dir, f"batch{batch_size}"), name,  # pylint: disable=protected-access
                                                 cell.learning_rates[name])
    cells.setdefault(batch_size, {})[name] = {k: result.get(k) for k in CELL_KEYS}
    summary = write()
  if control_settings is not None:  # after BERT's cells, which decide the verdict

    def on_cell(control: Mapping[str, Any]) -> None:
      nonlocal summary
      summary = write(control)

    control_lib.run_control(control_settings, os.path.join(out_dir, "control"), on_cell)
  return summary
