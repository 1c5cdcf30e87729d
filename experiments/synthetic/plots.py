"""Figures of the synthetic study (matplotlib figures without pyplot's global state)."""
from __future__ import annotations

import numpy as np
from matplotlib.figure import Figure

from experiments.synthetic import problems

COLORS = dict(zip(problems.METHODS, ("tab:gray", "tab:brown", "tab:blue", "tab:orange", "tab:red",
                                     "tab:pink", "tab:green", "tab:purple", "tab:olive", "tab:cyan", "black")))


def _finite_or_nan(value):
  return np.nan if value is None or not np.isfinite(value) else value


def plot_final_suboptimality(strongly_convex: dict) -> Figure:
  """Median (marker) and 90th percentile (bar top) of the final f - f* against alpha, tuned settings."""
  figure = Figure(figsize=(6 * len(strongly_convex), 4))
  axes = np.atleast_1d(figure.subplots(1, len(strongly_convex)))
  for ax, (problem_name, by_alpha) in zip(axes, strongly_convex.items()):
    alphas = np.array([float(a) for a in by_alpha])
    for i, method in enumerate(next(iter(by_alpha.values()))):
      offset = (i - len(problems.METHODS) / 2) * 0.008
      medians = np.array([_finite_or_nan(by_alpha[a][method]["tuned"]["median"]) for a in by_alpha])
      p90s = np.array([_finite_or_nan(by_alpha[a][method]["tuned"]["p90"]) for a in by_alpha])
      ax.errorbar(alphas + offset, medians, yerr=[np.zeros_like(medians), np.maximum(p90s - medians, 0)],
                  fmt="o-", color=COLORS[method], label=method, capsize=2, markersize=4)
    ax.set_yscale("log")
    ax.set_xlabel("alpha (noise tail index)")
    ax.set_ylabel("final f - f* (median, bar to p90)")
    ax.set_title(f"{problem_name}, tuned", fontsize=10)
  axes[0].legend(fontsize=7)
  return figure


def plot_rates(curves: dict, rates: dict, alphas) -> Figure:
  """GClip (theory schedules): median f - f* against k, with the theory's slope through the last point."""
  figure = Figure(figsize=(6, 4))
  ax = figure.subplots()
  colors = [f"C{i}" for i in range(len(alphas))]
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
  ax.legend(fontsize=7)
  return figure


def plot_dimension(dimension: dict, dims) -> Figure:
  """Median per-coordinate f - f* against d, one panel per alpha; solid: theory, dashed: tuned."""
  figure = Figure(figsize=(5 * len(dimension), 4))
  axes = np.atleast_1d(figure.subplots(1, len(dimension)))
  for ax, (alpha, methods) in zip(axes, dimension.items()):
    for method, settings in methods.items():
      for setting, style in (("theory", "-"), ("tuned", "--")):
        if setting not in settings:
          continue
        medians = [_finite_or_nan(settings[setting]["median_by_dimension"][str(d)]) for d in dims]
        ax.plot(dims, medians, style, marker="o", color=COLORS[method], label=f"{method} {setting}")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("dimension d")
    ax.set_ylabel("median (f - f*) / d")
    ax.set_title(f"alpha = {alpha}", fontsize=10)
  axes[0].legend(fontsize=7)
  return figure


def plot_nonconvex(nonconvex: dict) -> Figure:
  """Median (marker) and p90 (bar top) of min_k ||grad f(x_k)|| on Rosenbrock, per method and alpha."""
  figure = Figure(figsize=(6, 4))
  ax = figure.subplots()
  alphas = np.array([float(a) for a in nonconvex])
  for i, method in enumerate(next(iter(nonconvex.values()))):
    offset = (i - len(problems.METHODS) / 2) * 0.01
    medians = np.array([_finite_or_nan(nonconvex[a][method]["median"]) for a in nonconvex])
    p90s = np.array([_finite_or_nan(nonconvex[a][method]["p90"]) for a in nonconvex])
    ax.errorbar(alphas + offset, medians, yerr=[np.zeros_like(medians), np.maximum(p90s - medians, 0)],
                fmt="o-", color=COLORS[method], label=method, capsize=2, markersize=4)
  ax.set_yscale("log")
  ax.set_xlabel("alpha")
  ax.set_ylabel("min_k ||grad f(x_k)|| (median, bar to p90)")
  ax.set_title("Rosenbrock, tuned constant steps", fontsize=10)
  ax.legend(fontsize=7)
  return figure
