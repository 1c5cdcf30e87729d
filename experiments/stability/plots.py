"""The stability study's figure: each method's loss curves at the learning rates it ran, beside the context-free loss."""
from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

from experiments.common import figures

FIGURE_FILENAME = "stability_loss_curves.png"


def plot_figures(summary: Mapping[str, Any], out_dir: str) -> dict[str, str]:
  """Draws the loss-curve figure into `out_dir`; returns {"loss_curves": its file name} (empty: no run yet).

  One panel per method (rows of three): the training loss (medians of blocks of steps) of each learning
  rate it ran, darker for larger rates, its held-out evaluations as dots, and the unigram loss (the best a
  context-free predictor expects on the held-out labels) dashed.
  """
  methods = [name for name in summary["points"] if any(r["method"] == name for r in summary["runs"].values())]
  if not methods:
    return {}
  columns = min(3, len(methods))
  rows = -(-len(methods) // columns)
  figure, axes = figures.panel_grid(rows, columns, panel_width=4.0, panel_height=2.8)
  unigram = summary["baselines"]["eval"]["unigram_loss"]
  for panel, name in zip(axes.flat, methods):
    runs = sorted((r for r in summary["runs"].values() if r["method"] == name), key=lambda r: r["learning_rate"])
    for index, run in enumerate(runs):
      shade = 0.35 + 0.65 * (index + 1) / len(runs)
      steps, losses = run["train_curve"]
      line, = panel.plot(steps, losses, color=figures.OPTIMIZER_COLORS.get(name, "black"), alpha=shade,
                         linewidth=1.0, label=f"lr {run['learning_rate']:g} ({run['status']})")
      evals = [(s, l) for s, l, _ in run["eval_curve"] if l is not None]
      if evals:
        panel.plot(*zip(*evals), "o", color=line.get_color(), alpha=shade, markersize=3)
    panel.axhline(unigram, color="grey", linestyle="--", linewidth=0.8, label="unigram loss")
    panel.set_title(name, fontsize=9)
    panel.set_xlabel("step")
    panel.legend(fontsize=6)
  for panel in list(axes.flat)[len(methods):]:
    panel.set_visible(False)
  axes[0, 0].set_ylabel("MLM loss")
  figure.suptitle(f"Training loss (lines) and held-out loss (dots) near the stability margin, {summary['mode']} mode",
                  fontsize=10)
  path = os.path.join(out_dir, FIGURE_FILENAME)
  figure.savefig(path, dpi=120, bbox_inches="tight")
  return {"loss_curves": FIGURE_FILENAME}
