"""The figures' shared conventions: one colour per optimizer, everywhere; one row of panels per family, with
no more series than a reader can tell apart; legends outside the plotted area."""
import math

import pytest
from matplotlib import colors as mpl_colors
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from experiments.common import figures, optimizers
from experiments.comparison import plots as comparison_plots
from experiments.synthetic import plots as synthetic_plots
from experiments.synthetic import problems

# Beyond this many series a panel's colours and legend stop being readable at a glance.
MAX_SERIES_PER_PANEL = 6


def test_every_registry_optimizer_has_its_own_colour_and_one_family():
  assert set(optimizers.REGISTRY) <= set(figures.OPTIMIZER_COLORS)
  rgba = [mpl_colors.to_rgba(color) for color in figures.OPTIMIZER_COLORS.values()]
  assert len(set(rgba)) == len(rgba)  # "tab:blue" and "#1f77b4" would count as one
  members = [name for family in figures.FAMILIES.values() for name in family]
  assert sorted(members) == sorted(figures.OPTIMIZER_COLORS)  # each name in exactly one family
  assert all(len(family) <= MAX_SERIES_PER_PANEL for family in figures.FAMILIES.values())
  assert {"stable_spam", "skip_step_on_spikes"} <= set(figures.OPTIMIZER_COLORS)


def test_split_by_family_orders_as_the_families_and_maps_study_labels():
  assert figures.split_by_family(["spam", "gclip", "adam", "sgd"]) == [
      ("the paper's rules", ["sgd", "gclip"]), ("Adam-scale", ["adam"]), ("later methods", ["spam"])]
  assert figures.split_by_family(["gclip", "sgd_momentum", "sgd"], lambda label: problems.METHODS[label][0]) == [
      ("the paper's rules", ["sgd_momentum", "sgd", "gclip"])]
  with pytest.raises(KeyError, match="lion"):
    figures.split_by_family(["lion"])


def _drawn_colours(figure):
  """label -> hex colour of every labelled series of the figure (lines and error bars)."""
  drawn = {}
  for axes in figure.axes:
    for handle, label in zip(*axes.get_legend_handles_labels()):
      line = handle.lines[0] if hasattr(handle, "lines") else handle
      drawn[label] = mpl_colors.to_hex(line.get_color())
  return drawn


def _check_layout(figure):
  """No panel has more than MAX_SERIES_PER_PANEL series, and every legend lies right of its panel."""
  renderer = FigureCanvasAgg(figure).get_renderer()
  figure.draw(renderer)
  for axes in figure.axes:
    assert len(axes.get_legend_handles_labels()[1]) <= MAX_SERIES_PER_PANEL
    if axes.get_legend() is not None:
      assert axes.get_legend().get_window_extent(renderer).x0 >= axes.get_window_extent(renderer).x1


def test_comparison_sweep_draws_each_optimizer_in_its_colour(tmp_path, monkeypatch):
  saved = []
  monkeypatch.setattr(Figure, "savefig",
                      lambda figure, path, *args, **kwargs: (saved.append(figure), open(path, "wb").close()))
  names = list(figures.OPTIMIZER_COLORS)
  sweep = {name: {"sweep": [{"learning_rate": 1e-3, "validation_loss": 5.0 + i / 10},
                            {"learning_rate": 1e-2, "validation_loss": math.inf}]}
           for i, name in enumerate(names)}
  comparison_plots.plot_sweep(sweep, str(tmp_path / "learning_rate_sweep.png"))
  (figure,) = saved
  assert _drawn_colours(figure) == {name: mpl_colors.to_hex(figures.OPTIMIZER_COLORS[name]) for name in names}
  assert len(figure.axes) == len(figures.FAMILIES)
  _check_layout(figure)


def test_synthetic_figures_colour_a_method_by_its_optimizer():
  nonconvex = {alpha: {method: {"median": 0.1, "p90": 0.2} for method in problems.METHODS}
               for alpha in ("1.5", "2")}
  figure = synthetic_plots.plot_nonconvex(nonconvex)
  expected = {method: mpl_colors.to_hex(figures.OPTIMIZER_COLORS[registry_name])
              for method, (registry_name, _) in problems.METHODS.items()}
  assert _drawn_colours(figure) == expected
  assert expected["sgd_momentum"] == expected["sgd"]  # one optimizer, one colour; the marker tells them apart
  _check_layout(figure)
