"""The stability-margin study (RQ6, a question of our own): how far does each method stretch the largest peak
learning rate at which tiny BERT still trains?

The spike-clipping methods are sold on stability (fewer loss spikes and divergences at aggressive settings),
not on a lower loss at a tuned learning rate. Protocol, identical for every method:

1. Every run is a run of the BERT comparison (`experiments.comparison`, the config named by `comparison`):
   the same model, corpus, data order, steps, warm-up and decay, weight decay and per-optimizer fields, one
   seed; only the method and its peak learning rate change. Runs go learning rate by learning rate (all
   methods at the smallest first), each resumable, and the summary is rewritten after every run.
2. Each run is judged from its own metrics: it **diverges** when its final validation loss is missing, not
   finite or at least ln(vocabulary size) (as the comparison's sweep); it **collapses** when in every
   held-out evaluation from `collapse_after` of the run on its accuracy is within `collapse_margin` of the
   majority accuracy (the accuracy of predicting the most frequent held-out token at every masked position,
   `constant_baselines`): the model predicts one token whatever the context; else it **trains**. Why
   accuracy: the recorded full-mode runs at lr >= 0.01 all end at validation accuracy 0.035 (one token, the
   most frequent in training, predicted everywhere) with validation losses of 6.01-6.05, at the unigram loss
   of the validation batches (6.01), so there a loss rule (within 0.05 of the unigram loss) and the accuracy
   rule agree; at quick size the collapsed runs end at exactly the majority accuracy (0.068) while their
   losses scatter 0.02-0.06 above the unigram loss (5.57) and the healthy runs' 0.06-0.14 below it, so the
   loss rule sits on its threshold and the accuracy rule is the sharper one. A learning
   rate taken from the recorded summary (`recorded_summary`, runs not kept) is judged on its final
   validation accuracy against the validation split's majority accuracy.
3. Per method: the **margin** is the largest learning rate that trains. Per run: the loss spikes (a training
   loss above `spike_factor` times the median of the `spike_window` steps before it; consecutive such steps
   are one spike), the fraction of coordinates or steps clipped or of steps skipped, the held-out loss, and
   what the collapse looked like (`describe_run`: did the accuracy first rise above the majority accuracy and
   fall back, when, and what the loss and the gradient norm did) and, for a run that kept its checkpoint,
   what its final model does (`diagnose`: whether its predictions depend on the input, whether its tokens'
   hidden vectors still differ, its attention-logit scale, LayerNorm scales and embeddings).

The rule that turns margins into RQ6's verdict lives in `experiments.stability.verdict`.
"""
from __future__ import annotations

import dataclasses
import json
import math
import os
import time
from collections.abc import Mapping, Sequence
from typing import Any

import ml_collections
import numpy as np

from experiments.bert import input_pipeline
from experiments.common import metrics
from experiments.common import optimizers as optimizers_lib
from experiments.common import results
from experiments.common import workdir_lock
from experiments.comparison import study as comparison_study
from experiments.comparison import summary as comparison_summary
from experiments.comparison.sweep import MAX_EXTENSIONS, is_diverged, next_learning_rate
from experiments.stability import diagnose
from experiments.stability import plots
from experiments.stability import recorded
from experiments.stability import summary as summary_lib
from experiments.stability.verdict import COLLAPSES, DIVERGES, TRAINS, best_learning_rates, margins

BASELINES_FILENAME = "baselines.json"
# Points of each run's training-loss curve kept in the summary (block medians), for the figure and the docs.
CURVE_POINTS = 100


@dataclasses.dataclass(frozen=True)
class StabilitySettings:
  """The study a config describes (configs/quick.py, configs/full.py; see the module docstring).

  Attributes:
    mode: the config's name.
    expected_time: how long the config takes, in words.
    comparison: the comparison config (experiments/comparison/configs/<name>.py) whose runs these are.
    overrides: run config fields set on top of the comparison's (nested dicts merge).
    methods: registry names, in the order their runs go.
    learning_rates: method -> the peak learning rates run for it.
    recorded_summary: a comparison results.json (relative to the repository) whose sweeps give more points
      (final validation loss only); "" for none.
    seed: the one seed of every run.
    checkpoint_runs: every run keeps checkpoints (a preempted run resumes; the final one can be inspected).
    collapse_margin: an accuracy margin; collapse_after: a fraction of the run; spike_factor, spike_window:
      the definitions of the module docstring.
    recorded_study: a summary.json of this study (relative to the repository) whose judged runs are reused
      for the methods and learning rates it has, when its setup is this one's (`recorded.recorded_runs`);
      "" for none.
    max_extensions: learning rates a method may get past the ends of its list (`extension_runs`).
    extend_below_best: a method whose best run (`best_learning_rates`) is at the smallest learning rate it has
      also gets the next one down, so that the margin is counted from a best inside what ran (`extension_runs`).
  """
  mode: str
  expected_time: str
  comparison: str
  overrides: dict[str, Any]
  methods: tuple[str, ...]
  learning_rates: dict[str, tuple[float, ...]]
  recorded_summary: str
  seed: int
  checkpoint_runs: bool
  collapse_margin: float
  collapse_after: float
  spike_factor: float
  spike_window: int
  recorded_study: str = ""
  max_extensions: int = MAX_EXTENSIONS
  extend_below_best: bool = False

  @classmethod
  def from_config(cls, config: Mapping[str, Any]) -> "StabilitySettings":
    """The settings of a config (a ConfigDict, or the dict a summary.json recorded).

    Raises:
      ValueError: an unknown field or method, a method without learning rates, a bad definition.
    """
    values = ml_collections.ConfigDict(dict(config)).to_dict()
    unknown = sorted(set(values) - {field.name for field in dataclasses.fields(cls)})
    if unknown:
      raise ValueError(f"stability study config: unknown field(s) {unknown}")
    values["methods"] = tuple(values["methods"])
    values["learning_rates"] = {name: tuple(float(lr) for lr in lrs) for name, lrs in values["learning_rates"].items()}
    settings = cls(**values)
    bad = [name for name in settings.methods if name not in optimizers_lib.REGISTRY]
    if bad or not settings.methods:
      raise ValueError(f"methods={list(settings.methods)!r}: give one or more of {', '.join(optimizers_lib.REGISTRY)}")
    missing = [name for name in settings.methods if not settings.learning_rates.get(name)]
    if missing:
      raise ValueError(f"learning_rates has none for {missing}")
    if not (0 <= settings.collapse_margin < 1 and 0 <= settings.collapse_after < 1 and settings.spike_factor > 1
            and settings.spike_window >= 1):
      raise ValueError("need collapse_margin >= 0, 0 <= collapse_after < 1, spike_factor > 1, spike_window >= 1; "
                       f"got {settings.collapse_margin}, {settings.collapse_after}, {settings.spike_factor}, "
                       f"{settings.spike_window}")
    return settings

  def run_order(self) -> list[tuple[float, str]]:
    """(learning rate, method) of every run: learning rates ascending, methods in config order."""
    return [(lr, name) for lr in sorted({lr for lrs in self.learning_rates.values() for lr in lrs})
            for name in self.methods if lr in self.learning_rates[name]]


def comparison_settings(settings: StabilitySettings) -> comparison_study.ComparisonSettings:
  """The comparison whose runs the study's are: its config, the study's methods, overrides and checkpoints."""
  return comparison_study.study_comparison(settings.comparison, settings.methods, settings.overrides,
                                          seeds=(settings.seed,), checkpoint_runs=settings.checkpoint_runs)


def prepared_comparison(settings: StabilitySettings, out_dir: str) -> tuple[
    comparison_study.ComparisonSettings, dict[str, Any]]:
  """(the comparison settings every run of a study writing to `out_dir` uses, what the corpus held): the
  shared vocabulary, trained once into `out_dir/vocabulary`, and the study's checkpoint setting."""
  return comparison_study.with_shared_vocabulary(comparison_settings(settings), out_dir)


# ------------------------------------------------------------------------------------------- the baselines
def constant_baselines(compared: comparison_study.ComparisonSettings, workdir: str) -> dict[str, Any]:
  """What a model that ignores the context scores on the exact masked positions the runs are evaluated on.

  Per split ("eval", "validation"): `majority_accuracy`, the accuracy of predicting the most frequent label
  everywhere, and `unigram_loss`, the cross-entropy of the labels under the training tokens' frequencies
  (add-one smoothed), the best loss a context-free predictor can expect. The batches are the driver's own
  (`MlmData.eval_batches`: fixed masks, `max_eval_sequences`, zero-weight padding).
  """
  config = comparison_study.run_config(compared, next(iter(compared.learning_rates)), 1.0, compared.seeds[0])
  data = input_pipeline.create_datasets(config, workdir)
  tokens = data.train_sequences[~np.isin(data.train_sequences, data.special_ids + (data.pad_id,))]
  frequency = (np.bincount(tokens, minlength=data.vocab_size) + 1.0) / (len(tokens) + data.vocab_size)
  baselines = {"train_tokens": int(len(tokens)), "vocab_size": int(data.vocab_size)}
  for split in ("eval", "validation"):
    if split == "validation" and not len(data.validation_sequences):
      continue
    batches = data.eval_batches(config.eval_batch_size, split=split)
    labels = np.concatenate([b["masked_labels"].ravel() for b in batches])
    weights = np.concatenate([b["masked_weights"].ravel() for b in batches]).astype(np.float64)
    counts = np.bincount(labels, weights=weights, minlength=data.vocab_size)
    baselines[split] = {"majority_accuracy": float(counts.max() / weights.sum()),
                        "majority_token": int(counts.argmax()),
                        "unigram_loss": float(-(weights * np.log(frequency[labels])).sum() / weights.sum()),
                        "masked_tokens": float(weights.sum())}
  return baselines


def _cached_baselines(compared, out_dir: str) -> dict[str, Any]:
  """`constant_baselines`, computed once per run config (the corpus takes seconds to tokenize) in out_dir."""
  path = os.path.join(out_dir, BASELINES_FILENAME)
  config = comparison_study.run_config(compared, next(iter(compared.learning_rates)), 1.0, compared.seeds[0])
  key = {k: v for k, v in json.loads(config.to_json_best_effort()).items()
         if k not in ("optimizer", "learning_rate", "save_checkpoints")}
  if os.path.exists(path):
    cached = results.read_json(path, required=("config",))
    if cached["config"] == key:
      return cached
  value = dict(constant_baselines(compared, os.path.join(out_dir, "baselines")), config=key)
  results.write_json(path, value)
  return value


# ------------------------------------------------------------------------------------------- one run
def count_spikes(losses: Sequence[float], factor: float, window: int) -> dict[str, Any]:
  """Spikes of a training-loss series: steps whose loss exceeds `factor` x the median of the `window` losses
  before it (the first `window` steps are not judged); consecutive such steps make one spike.

  Returns {"spikes": the number of spikes, "spike_steps": indices of their first steps, "spiking_steps"}.
  A non-finite loss counts as spiking.
  """
  losses = np.asarray(losses, np.float64)
  spiking = []
  for index in range(window, len(losses)):
    before = losses[index - window:index]
    before = before[np.isfinite(before)]
    if not np.isfinite(losses[index]) or (len(before) and losses[index] > factor * np.median(before)):
      spiking.append(index)
  starts = [index for position, index in enumerate(spiking) if position == 0 or spiking[position - 1] != index - 1]
  return {"spikes": len(starts), "spike_steps": starts, "spiking_steps": len(spiking)}


def _block_medians(steps: np.ndarray, values: np.ndarray, points: int) -> tuple[list[int], list[float]]:
  if not len(steps):
    return [], []
  blocks = np.array_split(np.arange(len(steps)), min(points, len(steps)))
  return ([int(steps[block[-1]]) for block in blocks],
          [float(np.median(values[block])) for block in blocks])


def intervention(records: Sequence[Mapping[str, Any]], steps: int) -> dict[str, Any] | None:
  """What a method did to the updates, from the clip statistics its run logged (`acclip_optax.clip_stats`):
  the mean logged fraction of coordinates clipped (ACClip, SPAM, Stable-SPAM), of steps clipped (ZClip,
  AutoClip: the logged steps' `clipped`) or the fraction of all steps skipped (skip-step); None if none."""
  def logged(key):
    return [float(r[key]) for r in records if key in r and math.isfinite(float(r[key]))]
  skip_counts = logged("skip_count")
  if skip_counts:
    return {"kind": "steps skipped", "fraction": skip_counts[-1] / max(steps, 1), "count": int(skip_counts[-1])}
  for key, kind in (("clip_fraction", "coordinates clipped"), ("clipped", "steps clipped")):
    values = logged(key)
    if values:
      return {"kind": kind, "fraction": float(np.mean(values))}
  return None


def describe_run(records: Sequence[Mapping[str, Any]], majority_accuracy: float, margin: float) -> dict[str, Any]:
  """What a run's own metrics say about a collapse.

  Returns the best held-out accuracy and its step; `learned`: whether it rose above the majority accuracy
  by more than `margin`; `returned_step`: the first evaluation after that best one back within `margin` of
  the majority accuracy (None: none); the lowest training loss (medians of 20-step blocks) and its step;
  the gradient norm's largest value and step, and its median over the first and the last tenth of the
  steps.
  """
  evals = [(r["step"], r["eval_accuracy"]) for r in records if "eval_accuracy" in r]
  train = [(r["step"], r["train_loss"]) for r in records if "train_loss" in r]
  norms = [(r["step"], r["grad_norm"]) for r in records if "grad_norm" in r]
  described: dict[str, Any] = {}
  finite_evals = [(s, a) for s, a in evals if math.isfinite(a)]
  if finite_evals:
    best_step, best = max(finite_evals, key=lambda point: point[1])
    back = [s for s, a in finite_evals if s > best_step and a <= majority_accuracy + margin]
    described.update(best_eval_accuracy=best, best_eval_accuracy_step=best_step,
                     learned=bool(best > majority_accuracy + margin), returned_step=back[0] if back else None)
  if train:
    steps, losses = (np.asarray(column, np.float64) for column in zip(*train))
    block_steps, block_losses = _block_medians(steps, losses, max(1, len(steps) // 20))
    finite = [(s, l) for s, l in zip(block_steps, block_losses) if math.isfinite(l)]
    if finite:
      low_step, low_loss = min(finite, key=lambda point: point[1])
      described.update(lowest_train_loss=low_loss, lowest_train_step=low_step, final_train_loss=block_losses[-1])
  if norms:
    steps, values = (np.asarray(column, np.float64) for column in zip(*norms))
    finite = np.isfinite(values)
    if finite.any():
      peak = int(np.argmax(np.where(finite, values, -np.inf)))
      tenth = max(1, len(values) // 10)
      described.update(max_grad_norm=float(values[peak]), max_grad_norm_step=int(steps[peak]),
                       grad_norm_first_tenth=float(np.nanmedian(values[:tenth])),
                       grad_norm_last_tenth=float(np.nanmedian(values[-tenth:])))
  return described


def judge_run(final: Mapping[str, Any], records: Sequence[Mapping[str, Any]], *, majority_accuracy: float,
              divergence_loss: float, num_steps: int, settings: StabilitySettings) -> dict[str, Any]:
  """A run's status (trains / collapses / diverges), spikes, clipping and the description of its curves."""
  validation_loss = results.finite_or_none(final.get("validation_loss"))
  evals = [(r["step"], r.get("eval_loss"), r["eval_accuracy"]) for r in records if "eval_accuracy" in r]
  late = [accuracy for step, _, accuracy in evals if step >= settings.collapse_after * num_steps]
  if final.get("diverged") or is_diverged(validation_loss, divergence_loss):
    status = DIVERGES
  elif late and all(accuracy <= majority_accuracy + settings.collapse_margin for accuracy in late):
    status = COLLAPSES
  else:
    status = TRAINS
  train = [(r["step"], r["train_loss"]) for r in records if "train_loss" in r]
  steps = np.asarray([s for s, _ in train], np.int64)
  losses = np.asarray([l for _, l in train], np.float64)
  curve_steps, curve_losses = _block_medians(steps, losses, CURVE_POINTS)
  logits = [(r["step"], r["max_attention_logit"]) for r in records
            if math.isfinite(r.get("max_attention_logit", math.nan))]
  logit_curve = [list(x) for x in _block_medians(np.asarray([s for s, _ in logits], np.int64), np.asarray(
      [v for _, v in logits], np.float64), CURVE_POINTS)] if logits else None
  return {
      "status": status,
      "eval_loss": results.finite_or_none(final.get("eval_loss")),
      "eval_accuracy": results.finite_or_none(final.get("eval_accuracy")),
      "validation_loss": validation_loss,
      "steps": int(final.get("steps", num_steps)),
      **count_spikes(losses, settings.spike_factor, settings.spike_window),
      "intervention": intervention(records, int(final.get("steps", num_steps))),
      "description": describe_run(records, majority_accuracy, settings.collapse_margin),
      "eval_curve": [[int(s), results.finite_or_none(l), results.finite_or_none(a)] for s, l, a in evals],
      "train_curve": [curve_steps, curve_losses],
      "logit_curve": logit_curve,  # medians of blocks of the largest attention logit (None: not logged)
  }


def extension_runs(settings: StabilitySettings, points: Mapping[str, Sequence[Mapping[str, Any]]],
                   extended: Mapping[str, int]) -> list[tuple[float, str]]:
  """(learning rate, method) runs past the top of a method's learning rates while its margin sits there;
  below the bottom while none of them trains and the lowest diverged or learned before it collapsed (a
  margin, if any, lies lower), and, with `settings.extend_below_best`, while its best run is the lowest; at
  most `settings.max_extensions` per method (`extended`: how many each has had)."""
  runs = []
  best = best_learning_rates(points)
  for name, found in margins(points).items():
    left = settings.max_extensions - extended.get(name, 0)
    if left <= 0 or not points[name]:
      continue
    learning_rates = sorted({p["learning_rate"] for p in points[name]} | set(settings.learning_rates[name]))
    lowest = min(points[name], key=lambda point: point["learning_rate"])
    more = [next_learning_rate(learning_rates[-1], 1, learning_rates)] if found["at_edge"] else []
    # Down: too high even at the bottom (it diverged, or learned and then collapsed; a run that never learned
    # may have had too small a learning rate as well: no way down from it), or, when asked, a best there.
    if (found["margin"] is None and (lowest["status"] == DIVERGES or lowest.get("learned"))
        or settings.extend_below_best and best[name]["at_low_edge"]):
      more.append(next_learning_rate(learning_rates[0], -1, learning_rates))
    runs += [(lr, name) for lr in more[:left]]
  return runs


# ------------------------------------------------------------------------------------------- the study
def setup_text(settings: StabilitySettings, compared: comparison_study.ComparisonSettings) -> str:
  """The study's setup in words, every number read from the config its runs start from and the study's."""
  config = comparison_study.run_config(compared, settings.methods[0], 1.0, settings.seed)
  model = config.model
  grids = "; ".join(f"{name} {', '.join(f'{lr:g}' for lr in settings.learning_rates[name])}"
                    for name in settings.methods)
  return (f"The {settings.comparison} comparison's BERT ({model.num_layers} layers, hidden {model.hidden_size}, "
          f"{config.vocab_size}-token vocabulary; {config.num_train_steps} steps of {config.batch_size} x "
          f"{config.max_seq_len} tokens, warm-up {config.warmup_steps}, {config.learning_rate_decay} decay, "
          f"weight decay {config.weight_decay:g}) on {input_pipeline.corpus_name(config.corpus)}, one seed "
          f"({settings.seed}). Peak learning rates run: {grids}"
          + (f"; more points (final validation loss and accuracy only) from {settings.recorded_summary}"
             if settings.recorded_summary else "")
          + f". Collapse: in every held-out evaluation from {settings.collapse_after:.0%} of the run on, an accuracy "
          f"within {settings.collapse_margin:g} of the majority accuracy (one token predicted everywhere); "
          "diverged: a final validation loss not "
          f"finite or above ln(vocabulary size); spike: a training loss above {settings.spike_factor:g} x the "
          f"median of the {settings.spike_window} steps before it.")


DIAGNOSIS_FILENAME = "diagnosis.json"


def _cached_diagnosis(out_dir: str, run: Mapping[str, Any], compared, majority_token: int) -> dict[str, Any] | None:
  """`diagnose.diagnose_runs` of one finished run, kept in its workdir (None: it kept no checkpoint)."""
  path = os.path.join(out_dir, run["workdir"], DIAGNOSIS_FILENAME)
  if os.path.exists(path):
    return results.read_json(path)
  found = diagnose.diagnose_runs(out_dir, {"run": run}, lambda name, lr: comparison_study.run_config(
      compared, name, lr, compared.seeds[0]), majority_token).get("run")
  if found is not None:
    results.write_json(path, found)
  return found


def _extend(settings: StabilitySettings, points, extended: dict[str, int], order: list) -> bool:
  """Appends `extension_runs` to `order` (counting them in `extended`); whether there were any."""
  more = extension_runs(settings, points, extended)
  for lr, name in more:
    extended[name] = extended.get(name, 0) + 1
    order.append((lr, name))
  return bool(more)


@workdir_lock.owns_output_folder
def run(out_dir: str, config: ml_collections.ConfigDict, *, finished_only: bool = False) -> dict[str, Any]:
  """Runs the study a config describes into ``out_dir``; returns its summary (also summary.json there).

  Rerunning into the same folder reuses every finished run and resumes a preempted one; summary.json and
  summary.md are rewritten after every run (``"complete": false`` until the last), so a study stopped
  part-way reports what it has. After the config's runs, a method whose margin is the largest learning rate
  it ran gets the next one up, and one that trains at none of them (its lowest diverged, or learned and then
  collapsed) or, with `extend_below_best`, whose best run is its lowest, the next one down (`extension_runs`,
  at most `max_extensions` of the config), until the margin (and the best) lies inside what it ran.

  finished_only: train nothing; summarize the runs that have finished (their `run_result.json`), whatever
    their place in the run order (runs made out of order, for instance by `comparison.study` calls of other
    processes into the same folder, are judged too).
  """
  start = time.perf_counter()
  settings = StabilitySettings.from_config(config)
  os.makedirs(out_dir, exist_ok=True)
  compared, corpus = prepared_comparison(settings, out_dir)
  baselines = _cached_baselines(compared, out_dir)
  first = comparison_study.run_config(compared, settings.methods[0], 1.0, settings.seed)
  divergence_loss = math.log(int(first.vocab_size))
  num_steps = int(first.num_train_steps)
  points = recorded.recorded_points(settings, baselines["validation"]["majority_accuracy"])
  reused = recorded.recorded_runs(settings, baselines)
  runs: dict[str, dict[str, Any]] = {}
  order = settings.run_order()
  extended: dict[str, int] = {}
  summary: dict[str, Any] = {}
  index = 0
  while index < len(order) or (not finished_only and _extend(settings, points, extended, order)):
    lr, name = order[index]
    index += 1
    workdir = comparison_study.run_workdir(out_dir, name, lr, settings.seed)
    if f"{name}/lr{lr:g}" in reused:
      judged = reused[f"{name}/lr{lr:g}"]
    elif finished_only and not os.path.exists(os.path.join(workdir, comparison_study.RUN_RESULT_FILENAME)):
      continue
    else:
      run_result = comparison_study.pretrain(compared, out_dir, name, lr, settings.seed)
      path = os.path.join(out_dir, run_result["workdir"], metrics.METRICS_FILENAME)
      judged = judge_run(run_result["final"], metrics.read_metrics(path) if os.path.exists(path) else [],
                         majority_accuracy=baselines["eval"]["majority_accuracy"], divergence_loss=divergence_loss,
                         num_steps=num_steps, settings=settings)
      judged.update(method=name, learning_rate=lr, workdir=run_result["workdir"], wall_s=run_result["wall_s"])
      if settings.checkpoint_runs:
        judged["diagnosis"] = _cached_diagnosis(out_dir, judged, compared, baselines["eval"]["majority_token"])
    runs[f"{name}/lr{lr:g}"] = judged
    points.setdefault(name, []).append({"learning_rate": lr, "status": judged["status"],
                                        "validation_loss": judged["validation_loss"],
                                        "learned": judged.get("description", {}).get("learned"),
                                        "source": judged.get("source", "run")})
    summary = {
        "mode": settings.mode,
        "complete": len(runs) == len(order) and not extension_runs(settings, points, extended),
        "runs_done": len(runs), "runs_planned": len(order),
        "config": config.to_dict(), "setup": setup_text(settings, compared),
        "data_description": [comparison_summary.corpus_text(corpus)], "baselines": baselines,
        "divergence_loss": divergence_loss, "num_train_steps": num_steps, "runs": runs,
        "points": {n: sorted(p, key=lambda point: point["learning_rate"]) for n, p in points.items()},
        "grid": sorted({p["learning_rate"] for method_points in points.values() for p in method_points}),
        "margins": margins(points), "wall_s": time.perf_counter() - start,
        "run_wall_s": sum(r["wall_s"] for r in runs.values()),
    }
    summary = results.write_summary(out_dir, summary, plots.plot_figures, summary_lib.summary_markdown)
  if not summary:
    raise ValueError(f"{out_dir}: no run of this study has finished (no runs/*/{comparison_study.RUN_RESULT_FILENAME}); "
                     "run it without --finished-only")
  return summary
