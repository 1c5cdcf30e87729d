"""What every study's figures share: one colour per optimizer, the families a figure is split by, and a legend
outside the plotted area.

An optimizer looks the same in every figure of every study: its colour is `OPTIMIZER_COLORS[name]`, keyed by
the names of `experiments.common.optimizers.REGISTRY`. A figure of many optimizers draws one row of panels
per family (`FAMILIES`: the paper's rules, the Adam-scale methods, the clipping methods that came after the
paper), so that no panel holds more series than a reader can tell apart, and each row's legend sits to the
right of its last panel (save with ``bbox_inches="tight"`` to keep it in the file).
"""
from __future__ import annotations

import os
import types
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

import numpy as np

from experiments.common import results

# Within a family the colours differ in hue; across families a colour is never reused.
OPTIMIZER_COLORS: Mapping[str, str] = types.MappingProxyType({
    # the paper's rules
    "sgd": "#7f7f7f",  # grey
    "gclip": "#1f77b4",  # blue
    "cclip": "#ff7f0e",  # orange
    "acclip": "#d62728",  # red
    # Adam-scale
    "adam": "#2ca02c",  # green
    "adamw": "#9467bd",  # purple
    "lamb": "#8c564b",  # brown
    "acclip_ports": "#e377c2",  # pink
    # the later methods
    "zclip": "#17becf",  # cyan
    "adagc": "#bcbd22",  # olive
    "autoclip": "#000000",  # black
    "spam": "#393b79",  # navy
    "stable_spam": "#a55194",  # plum
    "skip_step_on_spikes": "#637939",  # moss
    # what the large trainers ship (Muon, QK-clip)
    "muon": "#ff9896",  # salmon
    "adamw_qkclip": "#8c6d31",  # ochre
    "muon_qkclip": "#6b6ecf",  # periwinkle
})

FAMILIES: Mapping[str, tuple[str, ...]] = types.MappingProxyType({
    "the paper's rules": ("sgd", "gclip", "cclip", "acclip"),
    "Adam-scale": ("adam", "adamw", "lamb", "acclip_ports"),
    "later methods": ("zclip", "adagc", "autoclip", "spam", "stable_spam", "skip_step_on_spikes"),
    "Muon and QK-clip": ("muon", "adamw_qkclip", "muon_qkclip"),
})


def family_of(name: str) -> str:
  """The `FAMILIES` key that holds the registry name `name` (KeyError if none does)."""
  for family, members in FAMILIES.items():
    if name in members:
      return family
  raise KeyError(f"{name!r} is in none of the figure families: {dict(FAMILIES)}")


def split_by_family(labels: Iterable[str], registry_name: Callable[[str], str] = lambda label: label
                    ) -> list[tuple[str, list[str]]]:
  """(family, labels) for each family that holds one of `labels`: families and the labels in each in `FAMILIES`
  order (the labels of one registry name in the given order), so that a legend reads the same in every figure.

  Args:
    labels: the series of a figure, registry names or a study's own labels.
    registry_name: the registry name of a label (a study that runs one optimizer under two settings, such
      as the synthetic study's `sgd_momentum`, maps both labels to the one name).
  """
  by_family = {family: [] for family in FAMILIES}
  for label in labels:
    by_family[family_of(registry_name(label))].append(label)
  return [(family, sorted(members, key=lambda label: FAMILIES[family].index(registry_name(label))))
          for family, members in by_family.items() if members]


def panel_grid(num_rows: int, num_columns: int, *, panel_width: float = 4.5, panel_height: float = 2.6,
               sharey: bool | str = True):
  """(figure, 2-D array of axes): `num_rows` x `num_columns` panels sharing the x axis (the y axis as
  `sharey` says), in a constrained layout with room on the right for `legend_outside`."""
  from matplotlib.figure import Figure  # pylint: disable=g-import-not-at-top
  figure = Figure(figsize=(panel_width * num_columns + 1.5, panel_height * num_rows + 0.6), layout="constrained")
  return figure, figure.subplots(num_rows, num_columns, squeeze=False, sharex=True, sharey=sharey)


def legend_outside(axes_row: Sequence, title: str | None = None) -> None:
  """One legend for a row of panels, right of its last panel: every labelled artist of the row, once."""
  handles = {}
  for axes in axes_row:
    for handle, label in zip(*axes.get_legend_handles_labels()):
      handles.setdefault(label, handle)
  if handles:
    axes_row[-1].legend(list(handles.values()), list(handles), loc="upper left", bbox_to_anchor=(1.02, 1.0),
                        borderaxespad=0.0, fontsize=8, title=title, title_fontsize=8, frameon=False)


def moving_average(steps: np.ndarray, values: np.ndarray, window: int) -> tuple[np.ndarray, np.ndarray]:
  """The `window`-point moving average of a curve, at the step that ends each window (unchanged if
  `window` <= 1 or the curve is shorter)."""
  if window <= 1 or len(values) < window:
    return steps, values
  return steps[window - 1:], np.convolve(values, np.ones(window) / window, mode="valid")


def save_figure(figure: Any, path: str, dpi: int = 120) -> None:
  """`figure` as the image file ``path`` (its format from the extension), atomically and naming ``path`` on
  failure (`results.write_file`)."""
  image_format = os.path.splitext(path)[1].lstrip(".") or "png"
  results.write_file(path, lambda temporary: figure.savefig(temporary, format=image_format, dpi=dpi,
                                                             bbox_inches="tight"))
