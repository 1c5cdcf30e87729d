"""The weight-decay factorial's figure: held-out MLM loss over the rule x decay grid, with the seed spread."""
from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

from experiments.common import figures

FIGURE_FILENAME = "decay_factorial.png"


def plot_figures(summary: Mapping[str, Any], out_dir: str) -> dict[str, str]:
  """Draws the factorial into `out_dir`; returns {"factorial": its file name} (empty: no cell yet).

  One group per decay mode; in it one marker per update rule (the rule's colour in every figure) at the
  mean held-out MLM loss over the seeds at the cell's best learning rate, the bar from the smallest to the
  largest seed; a hollow marker is a cell whose best learning rate sits at an edge of what its sweep ran.
  """
  cells = summary.get("cells", {})
  rules = list(summary["config"]["rules"])
  modes = list(cells)  # in the study's order
  if not modes:
    return {}
  import matplotlib  # pylint: disable=g-import-not-at-top
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top
  figure, axes = plt.subplots(figsize=(1.6 + 1.5 * len(modes), 3.2))
  width = 0.8 / len(rules)
  for index, rule in enumerate(rules):
    color = figures.OPTIMIZER_COLORS.get(rule, "black")
    for position, mode in enumerate(modes):
      cell = cells[mode].get(rule)
      stats = (cell or {}).get("eval_loss") or {}
      if stats.get("mean") is None:
        continue
      x = position - 0.4 + width * (index + 0.5)
      axes.vlines(x, stats["min"], stats["max"], color=color, linewidth=1.5)
      axes.plot(x, stats["mean"], "o", color=color, markerfacecolor="white" if cell.get("best_at_edge") else color,
                label=rule if position == next(p for p, m in enumerate(modes) if rule in cells[m]) else None)
  axes.set_xticks(range(len(modes)), [f"decay: {mode}" for mode in modes])
  axes.set_ylabel("held-out MLM loss (mean, seed range)")
  axes.set_title(f"Update rule x weight decay ({summary['mode']})", fontsize=9)
  axes.legend(loc="upper left", bbox_to_anchor=(1.0, 1.0), fontsize=8, title="rule (hollow: best lr at an edge)",
              title_fontsize=7)
  path = os.path.join(out_dir, FIGURE_FILENAME)
  figures.save_figure(figure, path, dpi=120)
  plt.close(figure)
  return {"factorial": FIGURE_FILENAME}
