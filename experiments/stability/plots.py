"""The stability study's figure: each method's loss curves at the learning rates it ran, beside the context-free loss."""
from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

from experiments.common import figures

FIGURE_FILENAME = "stability_loss_curves.png"
LOGIT_FIGURE_FILENAME = "stability_attention_logits.png"


LINESTYLES = ("-", "--", "-.", ":", (0, (5, 1, 1, 1, 1, 1)))


def plot_figures(summary: Mapping[str, Any], out_dir: str) -> dict[str, str]:
  """Draws the loss-curve figure into `out_dir`; returns {"loss_curves": its file name} (empty: no run yet).

  One panel per method (rows of three), in the method's colour: the training loss (medians of blocks of
  steps) at each learning rate it ran, one line style per learning rate (the same in every panel), its
  held-out evaluations as dots, and the unigram loss (the best a context-free predictor expects on the
  held-out labels) as a wide grey line. The panel's title gives each learning rate's status; one legend, right of
  the panels, gives the line styles.
  """
  methods = [name for name in summary["points"] if any(r["method"] == name for r in summary["runs"].values())]
  if not methods:
    return {}
  from matplotlib.lines import Line2D  # pylint: disable=g-import-not-at-top
  learning_rates = sorted({r["learning_rate"] for r in summary["runs"].values()})
  style = {lr: LINESTYLES[i % len(LINESTYLES)] for i, lr in enumerate(learning_rates)}
  columns = min(3, len(methods))
  rows = -(-len(methods) // columns)
  figure, axes = figures.panel_grid(rows, columns, panel_width=4.0, panel_height=2.8)
  unigram = summary["baselines"]["eval"]["unigram_loss"]
  for panel, name in zip(axes.flat, methods):
    color = figures.OPTIMIZER_COLORS.get(name, "black")
    runs = sorted((r for r in summary["runs"].values() if r["method"] == name), key=lambda r: r["learning_rate"])
    for run in runs:
      steps, losses = run["train_curve"]
      panel.plot(steps, losses, color=color, linestyle=style[run["learning_rate"]], linewidth=1.0)
      evals = [(s, l) for s, l, _ in run["eval_curve"] if l is not None]
      if evals:
        panel.plot(*zip(*evals), "o", color=color, markersize=3)
    panel.axhline(unigram, color="grey", linewidth=3.0, alpha=0.35)
    statuses = ", ".join(f"{run['learning_rate']:g} {run['status']}" for run in runs)
    panel.set_title(f"{name}: {statuses}", fontsize=8)
  for panel in list(axes.flat)[len(methods):]:
    panel.set_visible(False)
  for row in axes:
    row[0].set_ylabel("MLM loss")
  for panel in axes[-1]:
    panel.set_xlabel("step")
  handles = [Line2D([], [], color="black", linestyle=style[lr], linewidth=1.0, label=f"peak lr {lr:g}")
             for lr in learning_rates]
  handles += [Line2D([], [], color="black", marker="o", linestyle="none", markersize=3, label="held-out loss"),
              Line2D([], [], color="grey", linewidth=3.0, alpha=0.35, label="unigram loss (held-out)")]
  figure.legend(handles=handles, loc="outside right upper", fontsize=8, frameon=False)
  figure.suptitle(f"Training loss near the stability margin, {summary['mode']} mode", fontsize=10)
  path = os.path.join(out_dir, FIGURE_FILENAME)
  figures.save_figure(figure, path, dpi=120)
  return {"loss_curves": FIGURE_FILENAME, **_plot_logits(summary, out_dir, methods, style)}


def _plot_logits(summary: Mapping[str, Any], out_dir: str, methods: list[str], style: Mapping[float, Any]
                 ) -> dict[str, str]:
  """The largest attention logit through each run that logged it (log scale), one panel per method in the
  loss figure's line styles, with QK-clip's threshold where the method caps the logits; {} when none logged."""
  logged = [name for name in methods if any(r["method"] == name and r.get("logit_curve")
                                           for r in summary["runs"].values())]
  if not logged:
    return {}
  threshold = summary.get("config", {}).get("overrides", {}).get("qk_clip_threshold")
  columns = min(3, len(logged))
  figure, axes = figures.panel_grid(-(-len(logged) // columns), columns, panel_width=4.0, panel_height=2.8)
  for panel, name in zip(axes.flat, logged):
    color = figures.OPTIMIZER_COLORS.get(name, "black")
    for run in sorted((r for r in summary["runs"].values() if r["method"] == name and r.get("logit_curve")),
                      key=lambda r: r["learning_rate"]):
      panel.plot(*run["logit_curve"], color=color, linestyle=style[run["learning_rate"]], linewidth=1.0,
                 label=f"{run['learning_rate']:g} {run['status']}")
    if name.endswith("_qkclip") and threshold:
      panel.axhline(threshold, color="grey", linewidth=1.0, linestyle=":")
    panel.set_yscale("log")
    panel.set_title(name, fontsize=8)
    panel.legend(fontsize=6, frameon=False)
  for panel in list(axes.flat)[len(logged):]:
    panel.set_visible(False)
  for row in axes:
    row[0].set_ylabel("largest attention logit")
  figure.suptitle(f"Largest pre-softmax attention logit near the stability margin, {summary['mode']} mode",
                  fontsize=10)
  figures.save_figure(figure, os.path.join(out_dir, LOGIT_FIGURE_FILENAME), dpi=120)
  return {"attention_logits": LOGIT_FIGURE_FILENAME}
