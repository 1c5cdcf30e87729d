"""The comparison's figures: the learning-rate sweep, loss curves and clip fractions (matplotlib, Agg)."""
from __future__ import annotations

import math
import os
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from experiments.common import metrics
from experiments.comparison.sweep import is_diverged

# The optimizers that clip whole steps (their clip fraction is the fraction of steps clipped).
STEP_CLIPPERS = ("gclip", "zclip", "autoclip")
# Keys of metrics.jsonl: the curves drawn, and acclip_optax.clip_stats's.
TRAIN_LOSS_CURVE, EVAL_LOSS_CURVE = "train_loss", "eval_loss"
CLIP_FRACTION, GLOBAL_NORM, CLIPPED = "clip_fraction", "global_norm", "clipped"


def records(out_dir: str, run: Mapping[str, Any]) -> list[dict[str, Any]]:
  path = os.path.join(out_dir, run["workdir"], metrics.METRICS_FILENAME)
  return metrics.read_metrics(path) if os.path.exists(path) else []


def plot_sweep(optimizers: Mapping[str, Mapping[str, Any]], path: str) -> str:
  """Final validation loss against the peak learning rate, one line per optimizer; x marks divergence."""
  import matplotlib  # pylint: disable=g-import-not-at-top
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top
  figure, axes = plt.subplots(figsize=(7, 4.5))

  def trained(result, loss):
    return not is_diverged(loss, result.get("divergence_loss", math.inf))

  finite_losses = [p["validation_loss"] for o in optimizers.values() for p in o["sweep"]
                   if trained(o, p["validation_loss"])]
  ceiling = max(finite_losses) if finite_losses else 1.0
  for index, (name, result) in enumerate(optimizers.items()):
    color = f"C{index % 10}"
    points = [(p["learning_rate"], p["validation_loss"]) for p in result["sweep"]]
    finite = [(lr, loss) for lr, loss in points if trained(result, loss)]
    if finite:
      axes.plot(*zip(*finite), "o-", color=color, label=name)
    diverged = [lr for lr, loss in points if not trained(result, loss)]
    if diverged:
      axes.plot(diverged, [ceiling] * len(diverged), "x", color=color, markersize=10)
  axes.set_xscale("log")
  axes.set_xlabel("peak learning rate")
  axes.set_ylabel("final validation MLM loss (seed 0)")
  axes.set_title("Learning-rate sweep (x: diverged, drawn at the largest other loss)")
  axes.grid(alpha=0.3)
  axes.legend(fontsize=8)
  figure.tight_layout()
  figure.savefig(path, dpi=120)
  plt.close(figure)
  return path


def clip_series(records: Sequence[Mapping[str, Any]], optimizer: str,
                clip_threshold: float) -> tuple[np.ndarray, np.ndarray]:
  """(steps, clip fraction) of one run from its metrics records (`acclip_optax.clip_stats` at logging steps).

  ACClip (both rules), CClip, SPAM and AdaGC log the fraction of coordinates (AdaGC: tensors) clipped at a
  step; ZClip and AutoClip log whether the step was clipped (1.0 or 0.0); GClip logs the pre-clip global
  norm and clips the whole step when it exceeds the threshold. Averaged over steps, the last three give the
  fraction of steps clipped. Other optimizers: empty arrays.
  """
  if optimizer == "gclip":
    steps, norms = metrics.metric_series(records, GLOBAL_NORM)
    return steps, (norms > clip_threshold).astype(np.float64)
  steps, fractions = metrics.metric_series(records, CLIP_FRACTION)
  return (steps, fractions) if len(fractions) else metrics.metric_series(records, CLIPPED)


def plot_clip_fractions(out_dir: str, optimizers: Mapping[str, Mapping[str, Any]], path: str,
                         smoothing: int) -> bool:
  """Clip fraction over training at the best learning rate (first seed); False if no run logged one."""
  import matplotlib  # pylint: disable=g-import-not-at-top
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top
  figure, axes = plt.subplots(figsize=(7, 4.5))
  drawn = False
  for index, (name, result) in enumerate(optimizers.items()):
    if not result["seeds"]:
      continue
    steps, values = clip_series(records(out_dir, {"workdir": result["workdirs"][result["seeds"][0]]}), name,
                                result["clip_threshold"])
    if not len(values):
      continue
    if smoothing > 1 and len(values) >= smoothing:
      values = np.convolve(values, np.ones(smoothing) / smoothing, mode="valid")
      steps = steps[smoothing - 1:]
    label = f"{name} ({'steps' if name in STEP_CLIPPERS else 'tensors' if name == 'adagc' else 'coordinates'} clipped)"
    axes.plot(steps, values, color=f"C{index % 10}", label=label)
    drawn = True
  axes.set_xlabel("step")
  axes.set_ylabel(f"clip fraction (moving average over {smoothing} logged steps)")
  axes.set_ylim(-0.02, 1.02)
  axes.set_title("Clipping over training (best learning rate, seed 0)")
  axes.grid(alpha=0.3)
  if drawn:
    axes.legend(fontsize=8)
    figure.tight_layout()
    figure.savefig(path, dpi=120)
  plt.close(figure)
  return drawn


def plot_figures(out_dir: str, optimizers: Mapping[str, Mapping[str, Any]],
                  num_train_steps: int) -> dict[str, str]:
  """The comparison's PNGs (paths relative to ``out_dir``)."""
  first_runs = {name: os.path.join(out_dir, result["workdirs"][result["seeds"][0]], metrics.METRICS_FILENAME)
                for name, result in optimizers.items() if result["seeds"]}
  figures = {"learning_rate_sweep": os.path.basename(
      plot_sweep(optimizers, os.path.join(out_dir, "learning_rate_sweep.png")))}
  if first_runs:
    smoothing = max(1, num_train_steps // 40)
    metrics.plot_loss_curves(first_runs, os.path.join(out_dir, "loss_curves.png"),
                             metric_names=(TRAIN_LOSS_CURVE, EVAL_LOSS_CURVE), smoothing=smoothing,
                             title="MLM loss at the best learning rate (seed 0; solid train, dashed eval)")
    figures["loss_curves"] = "loss_curves.png"
  if plot_frequency_buckets(optimizers, os.path.join(out_dir, "loss_by_token_frequency.png")):
    figures["loss_by_token_frequency"] = "loss_by_token_frequency.png"
  if plot_clip_fractions(out_dir, optimizers, os.path.join(out_dir, "clip_fraction.png"),
                          smoothing=max(1, num_train_steps // 100)):
    figures["clip_fraction"] = "clip_fraction.png"
  return figures


def plot_frequency_buckets(optimizers: Mapping[str, Mapping[str, Any]], path: str, baseline: str = "adam") -> bool:
  """Held-out MLM loss by training-set token frequency, each optimizer minus `baseline` (mean over seeds,
  bars: the optimizer's seed std); False when no optimizer has bucket losses or the baseline is missing."""
  import matplotlib  # pylint: disable=g-import-not-at-top
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top

  def means(result):
    stats = result.get("eval_loss_by_frequency") or []
    return np.array([np.nan if s.get("mean") is None else float(s["mean"]) for s in stats])

  base = means(optimizers.get(baseline, {}))
  if not len(base):
    return False
  figure, axes = plt.subplots(figsize=(7, 4.5))
  names = [name for name, result in optimizers.items() if name != baseline and len(means(result)) == len(base)]
  width = 0.8 / max(len(names), 1)
  for index, name in enumerate(names):
    result = optimizers[name]
    stds = np.array([s.get("std") or 0.0 for s in result["eval_loss_by_frequency"]], dtype=float)
    x = np.arange(len(base)) + (index - (len(names) - 1) / 2) * width
    axes.bar(x, means(result) - base, width, yerr=stds, color=f"C{index % 10}", label=name, capsize=2)
  axes.axhline(0.0, color="black", linewidth=0.8)
  axes.set_xticks(np.arange(len(base)))
  axes.set_xticklabels([f"bucket {b}" + (" (frequent)" if b == 0 else " (rare)" if b == len(base) - 1 else "")
                        for b in range(len(base))])
  axes.set_ylabel(f"held-out MLM loss minus {baseline}'s (mean over seeds)")
  axes.set_title("Where each optimizer gains (< 0) or loses, by training-set token frequency")
  axes.grid(alpha=0.3, axis="y")
  axes.legend(fontsize=7, ncol=2)
  figure.tight_layout()
  figure.savefig(path, dpi=120)
  plt.close(figure)
  return True
