"""The comparison's figures: the learning-rate sweep, loss curves, clip fractions and loss by token frequency.

Each draws one row of panels per optimizer family, in the optimizers' fixed colours (`figures`)."""
from __future__ import annotations

import math
import os
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from experiments.common import figures, metrics
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
  """Final validation loss against the peak learning rate, one line per optimizer and one row of panels per
  family (`figures.FAMILIES`); x marks divergence."""
  def trained(result, loss):
    return not is_diverged(loss, result.get("divergence_loss", math.inf))

  finite_losses = [p["validation_loss"] for o in optimizers.values() for p in o["sweep"]
                   if trained(o, p["validation_loss"])]
  ceiling = max(finite_losses) if finite_losses else 1.0
  families = figures.split_by_family(optimizers)
  figure, axes = figures.panel_grid(len(families), 1, panel_width=6.0)
  axes = axes[:, 0]
  for panel, (family, names) in zip(axes, families):
    for index, name in enumerate(names):
      result = optimizers[name]
      color = figures.OPTIMIZER_COLORS[name]
      points = [(p["learning_rate"], p["validation_loss"]) for p in result["sweep"]]
      finite = [(lr, loss) for lr, loss in points if trained(result, loss)]
      if finite:  # each marker smaller than the one before, so that equal losses show as rings
        panel.plot(*zip(*finite), "o-", color=color, markersize=8 - index, label=name)
      diverged = [lr for lr, loss in points if not trained(result, loss)]
      if diverged:
        panel.plot(diverged, [ceiling] * len(diverged), "x", color=color, markersize=10,
                   label=None if finite else name)
    panel.set_xscale("log")
    panel.set_ylabel("final validation\nMLM loss (seed 0)")
    panel.grid(alpha=0.3)
    figures.legend_outside([panel], title=family)
  axes[-1].set_xlabel("peak learning rate")
  figure.suptitle("Learning-rate sweep (x: diverged, drawn at the largest other loss)", fontsize=10)
  figures.save_figure(figure, path, dpi=120)
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
  """Clip fraction over training at the best learning rate (first seed), one row of panels per family;
  False if no run logged one."""
  series = {}
  for name, result in optimizers.items():
    if result["seeds"]:
      steps, values = clip_series(records(out_dir, {"workdir": result["workdirs"][result["seeds"][0]]}), name,
                                  result["clip_threshold"])
      if len(values):
        series[name] = figures.moving_average(steps, values, smoothing)
  if not series:
    return False
  families = figures.split_by_family(series)
  figure, axes = figures.panel_grid(len(families), 1, panel_width=6.0)
  axes = axes[:, 0]
  for panel, (family, names) in zip(axes, families):
    for name in names:
      unit = "steps" if name in STEP_CLIPPERS else "tensors" if name == "adagc" else "coordinates"
      panel.plot(*series[name], color=figures.OPTIMIZER_COLORS[name], label=f"{name} ({unit} clipped)")
    panel.set_ylim(-0.02, 1.02)
    panel.set_ylabel("clip fraction")
    panel.grid(alpha=0.3)
    figures.legend_outside([panel], title=family)
  axes[-1].set_xlabel("step")
  figure.suptitle(f"Clipping over training (best learning rate, seed 0; moving average over {smoothing} "
                  "logged steps)", fontsize=10)
  figures.save_figure(figure, path, dpi=120)
  return True


def plot_figures(out_dir: str, optimizers: Mapping[str, Mapping[str, Any]],
                  num_train_steps: int) -> dict[str, str]:
  """The comparison's PNGs (paths relative to ``out_dir``)."""
  first_runs = {name: os.path.join(out_dir, result["workdirs"][result["seeds"][0]], metrics.METRICS_FILENAME)
                for name, result in optimizers.items() if result["seeds"]}
  drawn = {"learning_rate_sweep": os.path.basename(
      plot_sweep(optimizers, os.path.join(out_dir, "learning_rate_sweep.png")))}
  if first_runs:
    smoothing = max(1, num_train_steps // 40)
    metrics.plot_loss_curves(first_runs, os.path.join(out_dir, "loss_curves.png"),
                             metric_names=(TRAIN_LOSS_CURVE, EVAL_LOSS_CURVE), smoothing=smoothing,
                             title=f"MLM loss at the best learning rate (seed 0; moving average over {smoothing} "
                                   "logged steps)",
                             rows=figures.split_by_family(first_runs), colors=figures.OPTIMIZER_COLORS)
    drawn["loss_curves"] = "loss_curves.png"
  if plot_frequency_buckets(optimizers, os.path.join(out_dir, "loss_by_token_frequency.png")):
    drawn["loss_by_token_frequency"] = "loss_by_token_frequency.png"
  if plot_clip_fractions(out_dir, optimizers, os.path.join(out_dir, "clip_fraction.png"),
                          smoothing=max(1, num_train_steps // 100)):
    drawn["clip_fraction"] = "clip_fraction.png"
  return drawn


def plot_frequency_buckets(optimizers: Mapping[str, Mapping[str, Any]], path: str, baseline: str = "adam") -> bool:
  """Held-out MLM loss by training-set token frequency, each optimizer minus `baseline` (mean over seeds,
  bars: the optimizer's seed std), one row of panels per family; False when the baseline or every other
  optimizer lacks bucket losses."""
  def means(result):
    stats = result.get("eval_loss_by_frequency") or []
    return np.array([np.nan if s.get("mean") is None else float(s["mean"]) for s in stats])

  base = means(optimizers.get(baseline, {}))
  names = [name for name, result in optimizers.items() if name != baseline and len(means(result)) == len(base)]
  if not len(base) or not names:
    return False
  families = figures.split_by_family(names)
  figure, axes = figures.panel_grid(len(families), 1, panel_width=6.0)
  axes = axes[:, 0]
  for panel, (family, members) in zip(axes, families):
    width = 0.8 / len(members)
    for index, name in enumerate(members):
      result = optimizers[name]
      stds = np.array([s.get("std") or 0.0 for s in result["eval_loss_by_frequency"]], dtype=float)
      x = np.arange(len(base)) + (index - (len(members) - 1) / 2) * width
      panel.bar(x, means(result) - base, width, yerr=stds, color=figures.OPTIMIZER_COLORS[name], label=name,
                capsize=2, ecolor="0.45")
    panel.axhline(0.0, color="black", linewidth=0.8)
    panel.set_ylabel(f"loss minus {baseline}'s")
    panel.grid(alpha=0.3, axis="y")
    figures.legend_outside([panel], title=family)
  axes[-1].set_xticks(np.arange(len(base)))
  axes[-1].set_xticklabels([f"bucket {b}" + (" (frequent)" if b == 0 else " (rare)" if b == len(base) - 1 else "")
                            for b in range(len(base))])
  figure.suptitle(f"Held-out MLM loss minus {baseline}'s by training-set token frequency (mean over seeds; "
                  "< 0: the optimizer gains)", fontsize=10)
  figures.save_figure(figure, path, dpi=120)
  return True
