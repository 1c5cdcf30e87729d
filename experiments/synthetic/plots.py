"""Figures of the synthetic study (matplotlib figures without pyplot's global state).

A figure of several methods draws one row of panels per optimizer family, each method in its optimizer's
colour (`experiments.common.figures`); a second setting of one optimizer (`sgd_momentum`) has square markers
and a dashed line.
"""
from __future__ import annotations

import matplotlib
import numpy as np
from matplotlib.figure import Figure

from experiments.common import figures
from experiments.synthetic import problems


def _registry_name(method: str) -> str:
  return problems.METHODS[method][0]


def _style(method: str) -> dict:
  """The method's colour (its optimizer's) and marker (square for a second setting of the optimizer)."""
  return {"color": figures.OPTIMIZER_COLORS[_registry_name(method)],
          "marker": "o" if method == _registry_name(method) else "s"}


def _linestyle(method: str) -> str:
  return "-" if method == _registry_name(method) else "--"


def _family_grid(methods, num_columns: int, panel_width: float = 4.5):
  """(figure, [(family, methods, row of axes)]) with a row of `num_columns` panels per family of `methods`;
  the panels of a column share their y axis, every panel the x axis."""
  families = figures.split_by_family(methods, _registry_name)
  figure, axes = figures.panel_grid(len(families), num_columns, panel_width=panel_width, sharey="col")
  return figure, [(family, members, row) for (family, members), row in zip(families, axes)]


def _finite_or_nan(value):
  return np.nan if value is None or not np.isfinite(value) else value


def plot_final_suboptimality(strongly_convex: dict) -> Figure:
  """Median (marker) and 90th percentile (bar top) of the final f - f* against alpha, tuned settings."""
  methods = list(next(iter(next(iter(strongly_convex.values())).values())))
  figure, rows = _family_grid(methods, len(strongly_convex))
  for family, members, row in rows:
    for ax, (problem_name, by_alpha) in zip(row, strongly_convex.items()):
      alphas = np.array([float(a) for a in by_alpha])
      for i, method in enumerate(members):
        offset = (i - (len(members) - 1) / 2) * 0.01  # side by side, so that the bars do not hide each other
        medians = np.array([_finite_or_nan(by_alpha[a][method]["tuned"]["median"]) for a in by_alpha])
        p90s = np.array([_finite_or_nan(by_alpha[a][method]["tuned"]["p90"]) for a in by_alpha])
        ax.errorbar(alphas + offset, medians, yerr=[np.zeros_like(medians), np.maximum(p90s - medians, 0)],
                    linestyle=_linestyle(method), label=method, capsize=2, markersize=4, **_style(method))
      ax.set_yscale("log")
      ax.set_title(f"{problem_name}, tuned", fontsize=9)
      ax.grid(alpha=0.3)
    row[0].set_ylabel("final f - f*\n(median, bar to p90)")
    figures.legend_outside(row, title=family)
  for ax in rows[-1][2]:
    ax.set_xlabel("alpha (noise tail index)")
  return figure


def plot_rates(curves: dict, rates: dict, alphas) -> Figure:
  """GClip (theory schedules): median f - f* against k, with the theory's slope through the last point."""
  figure = Figure(figsize=(6.5, 4), layout="constrained")
  ax = figure.subplots()
  # alpha is ordered: a sequential colour map, light to dark as the tail gets lighter.
  colors = [matplotlib.colormaps["viridis"](x) for x in np.linspace(0.0, 0.85, len(alphas))]
  for color, alpha in zip(colors, alphas):
    if (rates["problem"], alpha, "gclip", "theory") not in curves:
      continue
    steps, medians = curves[(rates["problem"], alpha, "gclip", "theory")]
    ax.plot(steps, medians, color=color, label=f"alpha={alpha:g}")
    theory = rates["by_alpha"][f"{alpha:g}"]["theory_slope"]
    if np.isfinite(medians[-1]) and medians[-1] > 0:
      ax.plot(steps, medians[-1] * (steps / steps[-1]) ** theory, color=color, linestyle="--", linewidth=1)
  ax.set_xscale("log")
  ax.set_yscale("log")
  ax.set_xlabel("step k")
  ax.set_ylabel("median f(x_k) - f*")
  ax.set_title(f"GClip, theory schedules, {rates['problem']} (dashed: k^(-2(a-1)/a))", fontsize=9)
  ax.grid(alpha=0.3)
  figures.legend_outside([ax])
  return figure


def plot_dimension(dimension: dict, dims) -> Figure:
  """Median per-coordinate f - f* against d, one panel per alpha; solid: theory, dashed: tuned."""
  methods = list(dict.fromkeys(method for by_method in dimension.values() for method in by_method))
  figure, rows = _family_grid(methods, len(dimension))
  for family, members, row in rows:
    for ax, (alpha, by_method) in zip(row, dimension.items()):
      for method in members:
        for setting, linestyle in (("theory", "-"), ("tuned", "--")):
          if setting not in by_method.get(method, {}):
            continue
          medians = [_finite_or_nan(by_method[method][setting]["median_by_dimension"][str(d)]) for d in dims]
          ax.plot(dims, medians, linestyle=linestyle, label=f"{method} {setting}", **_style(method))
      ax.set_xscale("log")
      ax.set_yscale("log")
      ax.set_title(f"alpha = {alpha}", fontsize=9)
      ax.grid(alpha=0.3)
    row[0].set_ylabel("median (f - f*) / d")
    figures.legend_outside(row, title=family)
  for ax in rows[-1][2]:
    ax.set_xlabel("dimension d")
  figure.suptitle("Dimension dependence (solid: the theory's schedules, dashed: tuned)", fontsize=10)
  return figure


def plot_nonconvex(nonconvex: dict) -> Figure:
  """Median (marker) and p90 (bar top) of min_k ||grad f(x_k)|| on Rosenbrock, per method and alpha."""
  alphas = np.array([float(a) for a in nonconvex])
  figure, rows = _family_grid(list(next(iter(nonconvex.values()))), 1, panel_width=5.5)
  for family, members, (ax,) in rows:
    for i, method in enumerate(members):
      offset = (i - (len(members) - 1) / 2) * 0.01
      medians = np.array([_finite_or_nan(nonconvex[a][method]["median"]) for a in nonconvex])
      p90s = np.array([_finite_or_nan(nonconvex[a][method]["p90"]) for a in nonconvex])
      ax.errorbar(alphas + offset, medians, yerr=[np.zeros_like(medians), np.maximum(p90s - medians, 0)],
                  linestyle=_linestyle(method), label=method, capsize=2, markersize=4, **_style(method))
    ax.set_yscale("log")
    ax.set_ylabel("min_k ||grad f(x_k)||\n(median, bar to p90)")
    ax.grid(alpha=0.3)
    figures.legend_outside([ax], title=family)
  rows[0][2][0].set_title("Rosenbrock, tuned constant steps", fontsize=9)
  rows[-1][2][0].set_xlabel("alpha")
  return figure
