"""The paper's RQ1 on real data: is BERT's gradient noise heavy-tailed and ResNet's not, and does SGD trail
Adam on BERT but not on ResNet?

Two workloads (`workloads`), each built from its driver's own pieces (model, input pipeline, train and eval
step): BERT (experiments.bert, tiny or mini) masked-language modelling on `pydoc_data.topics`, dropout off so
the noise is that of data sampling and masking only; ResNet-18 (experiments.resnet, narrow) on
Fashion-MNIST: the subset embedded in the repository in the quick mode (`resnet_dataset="fashion_mnist_subset"`,
the same on every machine), the complete set in the full mode (an error saying how to install it when it is
missing; no fallback), BatchNorm in training mode, no augmentation. Every run trains with the drivers' loop,
`experiments.common.training_loop.train` (`training`).

For each workload:

1. Noise along training. A run with the model's usual optimizer (BERT: Adam with warm-up and linear decay;
   ResNet: SGD with momentum 0.9 and cosine decay) stops at the steps `measure_fractions * train_steps`
   (initialisation included); its optimizer settings equal those of the comparison runs below, so with
   train_steps == sweep_steps both share one compiled step. At each stop `measure.measure` takes, over the
   same `num_noise_batches` minibatches of size B, the noise norms ||g_B - g||, the running variance
   estimate, and the tail indices of the noise at `num_coordinates` random coordinates, standardised and
   pooled over all coordinates and per parameter group (BERT: embeddings, attention, feed_forward,
   layer_norm, mlm_head; ResNet: conv, batch_norm, dense). Figures (`plots`): noise-norm histograms at every
   batch size of `*_batch_sizes` at the first and last stop; Hill and variance plots at the main (last)
   batch size at every stop.
2. Optimizer comparison. SGD with momentum 0.9 and Adam, same schedule (10% warm-up, then linear decay for
   BERT, cosine for ResNet), no weight decay, `sweep_steps` steps, a small learning-rate grid, `sweep_seeds`
   seeds (initialisation and data order). Each optimizer's learning rate is the one with the lowest mean
   held-out loss; while it is the smallest or largest run so far, the next one beyond it runs
   (`comparison.sweep.sweep_learning_rates`: up to `sweep_max_extensions` beyond each end of the grid; a
   diverged one beyond the best bounds it), so that the best lies inside what ran or is marked; the gap
   is SGD's best mean held-out loss minus Adam's, with the seeds' standard
   deviations beside them. A run whose loss turns non-finite stops there (the loop's stop_on_nonfinite)
   and scores held-out loss inf, accuracy nan.

Outputs in `out_dir`: PNGs, `results.csv` (one measurement per row), `summary.md` (`summary`),
`summary.json`.

Caveats, also written to summary.md: the models are small and trained for minutes, far from the paper's
BERT-base/ResNet-50 on ImageNet; both estimators assume a stable law (finite-variance Student-t noise also
gives alpha < 2); the learning rates are tuned on the held-out set that scores them.
"""
from __future__ import annotations

import dataclasses
import logging
import math
import os
import tempfile
import time
from typing import Any

import jax
import ml_collections
import numpy as np

from experiments.common import results as results_lib
from experiments.common import study_cli
from experiments.common import workdir_lock
from experiments.common import training_loop
from experiments.comparison import sweep as sweep_lib
from experiments.noise import measure
from experiments.noise import plots
from experiments.noise import summary
from experiments.noise import training
from experiments.noise import workloads
from experiments.noise.workloads import MODELS


@dataclasses.dataclass(frozen=True)
class StudyConfig:
  """The study's sizes, checked: `from_config` of configs/full.py, quick.py or tiny.py (whose comments say
  what each field is). `mode` is the config's name."""
  models: tuple[str, ...]
  bert_size: str
  bert_seq_len: int
  bert_vocab_size: int
  bert_corpus: str
  bert_max_documents: int
  bert_train_batch_size: int
  bert_batch_sizes: tuple[int, ...]
  bert_learning_rate: float
  bert_adam_lrs: tuple[float, ...]
  bert_sgd_lrs: tuple[float, ...]
  resnet_dataset: str
  resnet_filters: int
  resnet_train_examples: int
  resnet_train_batch_size: int
  resnet_batch_sizes: tuple[int, ...]
  resnet_learning_rate: float
  resnet_adam_lrs: tuple[float, ...]
  resnet_sgd_lrs: tuple[float, ...]
  train_steps: int
  measure_fractions: tuple[float, ...]
  num_noise_batches: int
  num_coordinates: int
  sweep_steps: int
  sweep_seeds: int
  eval_examples: int
  seed: int
  sweep_max_extensions: int = 2
  mode: str = "custom"

  @classmethod
  def from_config(cls, config) -> "StudyConfig":
    """The checked settings of a config (a ConfigDict, or the dict a summary.json recorded)."""
    return study_cli.dataclass_from_config(cls, config, "noise")

  def validate(self) -> None:
    unknown = set(self.models) - set(MODELS)
    if unknown or not self.models:
      raise ValueError(f"models={self.models} must be a non-empty subset of {MODELS}")
    if self.bert_size not in ("tiny", "mini"):
      raise ValueError(f"bert_size={self.bert_size!r} must be 'tiny' or 'mini'")
    if self.num_noise_batches < 8:
      raise ValueError(f"num_noise_batches={self.num_noise_batches} must be >= 8 (the tail estimators "
                       "need a few blocks)")
    if not self.measure_fractions or not all(0.0 <= f <= 1.0 for f in self.measure_fractions):
      raise ValueError(f"measure_fractions={self.measure_fractions} must be non-empty values in [0, 1]")
    if self.sweep_seeds < 1 or self.sweep_steps < 1 or self.train_steps < 0 or self.sweep_max_extensions < 0:
      raise ValueError(f"sweep_seeds={self.sweep_seeds}, sweep_steps={self.sweep_steps} must be >= 1 and "
                       f"train_steps={self.train_steps}, sweep_max_extensions={self.sweep_max_extensions} >= 0")


def _noise_along_training(workload: workloads.Workload, config: StudyConfig, batch_sizes: tuple[int, ...],
                          train_batch_size: int, out_dir: str, workdir: str, rows: list, files: list) -> dict:
  """Part 1 of the module docstring for one workload."""
  spec = training.optimizer(workload.trajectory_optimizer, workload.decay, config.train_steps)
  stops = sorted({int(round(f * config.train_steps)) for f in config.measure_fractions})
  main_batch = batch_sizes[-1]
  noise_batches = {b: [workload.train_batch(config.seed + 1000, i, b) for i in range(config.num_noise_batches)]
                   for b in batch_sizes}
  key = jax.random.key(config.seed + 7)
  labels, points = None, []
  for stop, params, run in training.trajectory(workload, spec, seed=config.seed, batch_size=train_batch_size,
                                               stops=stops, workdir=workdir):
    if labels is None:
      labels = measure.group_labels(params, workload.group_of, workload.groups)
    point = {"step": stop, "train_loss": run.get("train_loss_last10", float("nan")),
             "eval_loss": run.get("eval_loss", float("nan")), "batch_sizes": {}}
    ends = stop in (stops[0], stops[-1])
    for batch_size in batch_sizes if ends else (main_batch,):
      measured = measure.measure(workload.loss, params, noise_batches[batch_size], labels=labels,
                                 groups=workload.groups, num_coordinates=config.num_coordinates, key=key,
                                 seed=config.seed)
      entry = point["batch_sizes"][batch_size] = measured.numbers
      base = dict(model=workload.name, part="noise", step=stop, batch_size=batch_size)
      for name in ("noise_norm_median", "noise_norm_max_over_median", "alpha_hill_norms", "variance_final",
                   "variance_growth"):
        rows.append(dict(base, group="all", metric=name, value=entry[name]))
      for group, stats in [("all", entry["pooled"])] + list(entry["groups"].items()):
        for name in ("alpha_mohammadi", "alpha_hill", "n"):
          rows.append(dict(base, group=group, metric=name, value=stats[name]))
      files.extend(plots.measurement_figures(measured, model=workload.name, step=stop, batch_size=batch_size,
                                             num_params=labels.size, out_dir=out_dir, histogram=ends,
                                             traces=batch_size == main_batch))
    points.append(point)
    logging.info("noise study: %s step %d measured", workload.name, stop)
  return {"num_params": int(labels.size), "main_batch_size": main_batch, "points": points}


def _optimizer_comparison(workload: workloads.Workload, config: StudyConfig, learning_rates: dict[str, tuple],
                          batch_size: int, workdir: str, rows: list) -> dict:
  """Part 2 of the module docstring for one workload."""
  results = {}
  for name, grid in learning_rates.items():
    base = ml_collections.ConfigDict(dict(optimizer=name, learning_rate=grid[0]))
    if name == "sgd":
      base.momentum = 0.9
    spec = training.optimizer(base, workload.decay, config.sweep_steps)
    per_lr = {}

    def mean_loss(learning_rate, name=name, spec=spec, per_lr=per_lr):
      losses, accuracies = [], []
      for seed in range(config.sweep_seeds):
        run = training.train(workload, spec.replace(learning_rate=learning_rate), seed=config.seed + 100 + seed,
                             batch_size=batch_size,
                             workdir=os.path.join(workdir, f"{workload.name}_{name}_{learning_rate}_{seed}"))
        eval_loss = run["eval_loss"] if math.isfinite(run["eval_loss"]) else float("inf")
        losses.append(eval_loss)
        accuracies.append(run["eval_accuracy"])
        for metric, value in (("eval_loss", eval_loss), ("eval_accuracy", run["eval_accuracy"])):
          rows.append(dict(model=workload.name, part="sweep", optimizer=name, learning_rate=learning_rate,
                           seed=seed, metric=metric, value=value))
      # Sample std over seeds (ddof=1), the comparison's convention (results.seed_statistics); inf when a
      # seed diverged, so that the gap in seed sd below cannot look significant.
      loss_stats, accuracy_stats = results_lib.seed_statistics(losses), results_lib.seed_statistics(accuracies)
      per_lr[learning_rate] = {"eval_loss_mean": loss_stats["mean"],
                               "eval_loss_median": float(np.median(losses)),
                               "diverged_seeds": int(np.sum(~np.isfinite(losses))),
                               "eval_loss_std": loss_stats["std"] if np.all(np.isfinite(losses))
                               else float("inf"),
                               "eval_accuracy_mean": accuracy_stats["mean"],
                               "eval_accuracy_std": accuracy_stats["std"]}
      return per_lr[learning_rate]["eval_loss_mean"]

    # The grid, then the next learning rate beyond an end while the best sits there (comparison.sweep).
    swept = sweep_lib.sweep_learning_rates(grid, mean_loss, min_points=len(grid),
                                           max_extensions=config.sweep_max_extensions)
    best = sweep_lib.best_learning_rate(swept)
    # Every seed of every learning rate diverged: the smallest, scored inf, marked (the optimum lies below).
    nothing_trained = best is None
    best = min(swept) if nothing_trained else best
    results[name] = {"best_learning_rate": best, **per_lr[best],
                     "grid": {str(lr): per_lr[lr] for lr in swept}, "configured_grid": list(grid),
                     "best_at_grid_edge": nothing_trained or sweep_lib.at_edge(swept) is not None}
    logging.info("noise study: %s %s best lr %g", workload.name, name, best)
  gap = results["sgd"]["eval_loss_mean"] - results["adam"]["eval_loss_mean"]
  results["gap_eval_loss"] = float(gap)
  # The median over seeds is not dominated by one unstable seed (SGD on BERT can blow up at its best lr).
  results["gap_eval_loss_median"] = float(results["sgd"]["eval_loss_median"] - results["adam"]["eval_loss_median"])
  results["gap_relative"] = float(gap / max(results["adam"]["eval_loss_mean"], 1e-12))
  stds = (results["sgd"]["eval_loss_std"], results["adam"]["eval_loss_std"])
  results["gap_in_seed_std"] = (float(gap / max(math.hypot(*stds), 1e-12)) if None not in stds
                                else None)  # one seed: no spread to measure the gap in
  return results


@workdir_lock.owns_output_folder
def run(out_dir: str, config) -> dict:
  """Runs the study and writes results.csv, summary.md, summary.json and PNGs to `out_dir`.

  The training runs' workdirs (metrics, the trajectory's checkpoints) live in a temporary folder, deleted at
  the end.

  Args:
    out_dir: output folder (created).
    config: configs/full.py, quick.py or tiny.py's `get_config()` (or a StudyConfig); recorded with the
      results, mode included.

  Returns:
    JSON-able key numbers: per model ("bert", "resnet"): "description", "data", "noise" (per measured step:
    train and held-out loss, and per batch size the pooled and per-group tail indices, noise-norm statistics,
    variance growth), "sweep" (per optimizer the best learning rate, mean/std of held-out loss and accuracy
    over seeds, the grid; the SGD - Adam gap) and "wall_s"; "data_description"; "rq1": the numbers behind a
    verdict (see summary.md); "wall_s", "config", "files", "mode".
  """
  config = config if isinstance(config, StudyConfig) else StudyConfig.from_config(config)
  os.makedirs(out_dir, exist_ok=True)
  start = time.perf_counter()
  rows: list[dict] = []
  files: list[str] = []
  results: dict[str, Any] = {}
  # The runs' checkpoints live in a temporary folder, gone once a preemption unwinds: a rerun starts over.
  try:
    with tempfile.TemporaryDirectory(prefix="noise_study_") as workdir:
      for model in config.models:
        workload = workloads.create(model, config, out_dir)
        batch_sizes, train_batch = getattr(config, f"{model}_batch_sizes"), getattr(config, f"{model}_train_batch_size")
        grid = {"sgd": getattr(config, f"{model}_sgd_lrs"), "adam": getattr(config, f"{model}_adam_lrs")}
        model_start = time.perf_counter()
        results[model] = {
            "description": workload.description,
            "data": workload.data,
            "noise": _noise_along_training(workload, config, batch_sizes, train_batch, out_dir,
                                           os.path.join(workdir, f"{model}_trajectory"), rows, files),
            "sweep": _optimizer_comparison(workload, config, grid, train_batch, workdir, rows),
        }
        results[model]["wall_s"] = time.perf_counter() - model_start
  except training_loop.Preempted as notice:
    raise training_loop.Preempted(out_dir, notice.step, None) from notice
  results["data_description"] = [f"{model}: {results[model]['description']}" for model in config.models]
  results["rq1"] = rq1_numbers(results)
  results["wall_s"] = time.perf_counter() - start
  results["config"] = dataclasses.asdict(config)
  results["files"] = files + ["results.csv", "summary.md", "summary.json"]
  results["mode"] = config.mode
  results_lib.write_rows_csv(os.path.join(out_dir, "results.csv"), rows, summary.CSV_COLUMNS)
  results = results_lib.to_jsonable(results)
  results_lib.write_json(os.path.join(out_dir, "summary.json"), results)
  results_lib.write_text(os.path.join(out_dir, "summary.md"), summary.summary_markdown(results))
  return results


def rq1_numbers(results: dict) -> dict:
  """The comparison behind the RQ1 verdict: tail indices at the last measured step, SGD - Adam gaps."""
  numbers: dict[str, Any] = {}
  for model in MODELS:
    if model not in results:
      continue
    noise_result = results[model]["noise"]
    last = noise_result["points"][-1]["batch_sizes"][noise_result["main_batch_size"]]
    first = noise_result["points"][0]["batch_sizes"][noise_result["main_batch_size"]]
    sweep = results[model]["sweep"]
    numbers[model] = {
        "alpha_mohammadi_pooled_init": first["pooled"]["alpha_mohammadi"],
        "alpha_mohammadi_pooled_final": last["pooled"]["alpha_mohammadi"],
        "alpha_hill_pooled_init": first["pooled"]["alpha_hill"],
        "alpha_hill_pooled_final": last["pooled"]["alpha_hill"],
        "alpha_hill_norms_final": last["alpha_hill_norms"],
        "variance_growth_final": last["variance_growth"],
        "heaviest_group_final": min(last["groups"], key=lambda g: last["groups"][g]["alpha_mohammadi"])
                                if last["groups"] else None,
        "sgd_minus_adam_eval_loss": sweep["gap_eval_loss"],
        "sgd_minus_adam_relative": sweep["gap_relative"],
        "sgd_minus_adam_eval_loss_median": sweep["gap_eval_loss_median"],
        "gap_in_seed_std": sweep["gap_in_seed_std"],
        "best_at_grid_edge": [name for name in ("sgd", "adam") if sweep.get(name, {}).get("best_at_grid_edge")],
    }
  return numbers
