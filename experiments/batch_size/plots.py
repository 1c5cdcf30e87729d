"""The batch-size study's figure: final training-set loss against batch size per optimizer, and the noise."""
from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

from experiments.common import figures

FIGURE_FILENAME = "batch_size.png"


def plot_figures(summary: Mapping[str, Any], out_dir: str) -> dict[str, str]:
  """Draws the figure into `out_dir`; returns {"batch_size": its file name} (empty: no cell yet).

  Left: each optimizer's final training-set loss (mean over the seeds, bar from the smallest to the largest
  seed; hollow: best learning rate at an edge of its sweep) against the batch size, log scale, the last point
  the full batch. Second: the median noise norm ||g_B - g|| at initialisation against the batch size. Third,
  only when the study has a control: the control's losses, drawn as the first panel's (log scale).
  """
  cells = summary.get("cells", {})
  if not cells:
    return {}
  import matplotlib  # pylint: disable=g-import-not-at-top
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top
  control = (summary.get("control") or {}).get("cells")
  figure, axes = plt.subplots(1, 3 if control else 2, figsize=(15.0 if control else 10.0, 3.4), layout="constrained")
  loss_axes, noise_axes = axes[0], axes[1]
  _draw_losses(loss_axes, cells, summary["config"]["optimizers"])
  loss_axes.set_xlabel("batch size (sequences; the last: the full batch)")
  loss_axes.set_ylabel("final training-set MLM loss")
  if control:
    _draw_losses(axes[2], control, summary["config"]["control"]["optimizers"])
    axes[2].set_xlabel("batch size (images; the last: the full batch)")
    axes[2].set_ylabel("final training-set loss")
    axes[2].set_yscale("log")
    axes[2].set_title("the control: ResNet-18, Fashion-MNIST", fontsize=8)
  measured = summary.get("noise", {}).get("by_batch_size", {})
  sizes = [int(b) for b in measured if measured[b].get("noise_norm_median")]
  if sizes:
    noise_axes.plot(sizes, [measured[str(b)]["noise_norm_median"] for b in sizes], "o-", color="black")
    noise_axes.set_xscale("log", base=2)
    noise_axes.set_yscale("log")
  noise_axes.set_xlabel("batch size (the full batch: zero noise, not drawn)")
  noise_axes.set_ylabel("median ||g_B - g|| at initialisation")
  figure.suptitle(f"The Adam-SGD gap against the batch ({summary['mode']})", fontsize=9)
  path = os.path.join(out_dir, FIGURE_FILENAME)
  figures.save_figure(figure, path, dpi=120)
  plt.close(figure)
  return {"batch_size": FIGURE_FILENAME}


def _draw_losses(axes, cells: Mapping[str, Any], names) -> None:
  """Each optimizer's final training-set loss against the batch size (the docstring of `plot_figures`)."""
  for name in names:
    color = figures.OPTIMIZER_COLORS.get(name, "black")
    points = [(int(b), cell[name]) for b, cell in cells.items() if name in cell and cell[name].get("train_set_loss")]
    points = [(b, cell) for b, cell in points if cell["train_set_loss"].get("mean") is not None]
    if not points:
      continue
    axes.plot([b for b, _ in points], [cell["train_set_loss"]["mean"] for _, cell in points], "-", color=color,
              label=name)
    for b, cell in points:
      stats = cell["train_set_loss"]
      axes.vlines(b, stats["min"], stats["max"], color=color)
      axes.plot(b, stats["mean"], "o", color=color, markerfacecolor="white" if cell.get("best_at_edge") else color)
  axes.set_xscale("log", base=2)
  axes.legend(fontsize=8)
