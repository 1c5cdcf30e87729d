"""Plots of gradient-noise measurements (needs matplotlib: ``pip install "acclip-optax[plots]"``).

- `plot_noise_histogram`: the noise-norm histogram beside Gaussian and alpha-stable references of the
  same dimension and scale (the paper's Figure 1 style).
- `plot_hill`: Hill's tail-index estimate against k.
- `plot_variance_trace`: the running noise-variance estimate against the number of batches.

Each function returns a `matplotlib.figure.Figure` and, given `path`, also saves it there. Figures are
made without pyplot, so no global figure state or GUI backend is involved.

References:
  Zhang, Karimireddy, Veit, Kim, Reddi, Kumar and Sra, "Why are Adaptive Methods Good for Attention Models?",
  NeurIPS 2020, arXiv 1912.03194, Figure 1 (gradient-noise norm histograms against a Gaussian's).
"""
from __future__ import annotations

import os

import jax
import numpy as np

try:
  from matplotlib.figure import Figure
except ImportError as error:
  raise ImportError(
      "acclip_optax.noise_plots needs matplotlib, which a base install of acclip-optax does not include: "
      'pip install "acclip-optax[plots]" (or pip install matplotlib)') from error

from acclip_optax import noise

__all__ = ["plot_hill", "plot_noise_histogram", "plot_variance_trace", "reference_noise_norms"]

# Reference vectors are sampled with at most this many coordinates: the shape of the norm's law settles
# long before BERT's 10^8 parameters, and both references are matched to the data's scale anyway.
MAX_REFERENCE_DIMENSION = 4096


def _save(figure: Figure, path: str | os.PathLike[str] | None) -> Figure:
  if path is not None:
    figure.savefig(os.fspath(path), dpi=120, bbox_inches="tight")
  return figure


def reference_noise_norms(noise_norms: np.ndarray, dimension: int, alpha: float, *,
                          seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
  r"""Norms of synthetic Gaussian and symmetric alpha-stable noise vectors matched to `noise_norms`.

  Gaussian: norms of :math:`N(0, \sigma^2 I_d)` vectors, with the per-coordinate variance matched,
  :math:`\sigma^2 = \mathrm{mean}(\|n\|^2) / d`. Stable: norms of d-dimensional vectors of independent
  symmetric alpha-stable coordinates, rescaled so that their median equals the median of `noise_norms`.
  Both have as many samples as `noise_norms`; d is capped at `MAX_REFERENCE_DIMENSION` for sampling
  (the Gaussian reference then keeps the matched scale sigma·sqrt(d) of the full dimension).

  Args:
    noise_norms: 1-D array of measured noise norms.
    dimension: d, the number of coordinates of the noise vectors (the number of parameters).
    alpha: stability index in (0, 2] of the stable reference (e.g. an estimate of the data's).
    seed: seed of the reference samples.

  Returns:
    (gaussian_norms, stable_norms), each shaped like `noise_norms`.

  References:
    Zhang, Karimireddy, Veit, Kim, Reddi, Kumar and Sra, "Why are Adaptive Methods Good for Attention
    Models?", NeurIPS 2020, arXiv 1912.03194, Figure 1 (gradient-noise norm histograms against a Gaussian's).
  """
  noise_norms = np.asarray(noise_norms, np.float64)
  if noise_norms.ndim != 1 or noise_norms.size < 2:
    raise ValueError(f"reference_noise_norms: noise_norms must be 1-D with >= 2 values, got shape "
                     f"{noise_norms.shape}.")
  if dimension < 1:
    raise ValueError(f"reference_noise_norms: dimension must be >= 1, got {dimension}.")
  num_samples = noise_norms.size
  sampled_dimension = min(dimension, MAX_REFERENCE_DIMENSION)
  rng = np.random.default_rng(seed)
  per_coordinate_std = np.sqrt(np.mean(noise_norms ** 2) / dimension)
  gaussian_norms = (per_coordinate_std * np.sqrt(dimension / sampled_dimension)
                    * np.linalg.norm(rng.standard_normal((num_samples, sampled_dimension)), axis=1))
  stable = noise.sample_symmetric_stable(jax.random.key(seed), alpha, (num_samples, sampled_dimension))
  stable_norms = np.linalg.norm(np.asarray(stable, np.float64), axis=1)
  stable_norms *= np.median(noise_norms) / np.median(stable_norms)
  return gaussian_norms, stable_norms


def plot_noise_histogram(noise_norms: np.ndarray, dimension: int, *, alpha: float | None = None,
                         bins: int = 50, title: str | None = None, seed: int = 0,
                         path: str | os.PathLike[str] | None = None) -> Figure:
  """Histogram of the noise norms beside Gaussian and alpha-stable references (three panels).

  Args:
    noise_norms: 1-D array of noise norms ||g_B - mean||, e.g. `GradientNoise.noise_norms`.
    dimension: number of coordinates of the noise vectors.
    alpha: the stable reference's index; default: Hill's estimate on the norms with k = N // 10,
      clipped to [0.5, 2].
    bins: number of histogram bins.
    title: title of the measured panel.
    seed: seed of the reference samples.
    path: if given, the figure is saved there (format from the suffix, e.g. ``.png``).

  Returns:
    The figure.

  References:
    Zhang, Karimireddy, Veit, Kim, Reddi, Kumar and Sra, "Why are Adaptive Methods Good for Attention
    Models?", NeurIPS 2020, arXiv 1912.03194, Figure 1 (gradient-noise norm histograms against a Gaussian's).
  """
  noise_norms = np.asarray(noise_norms, np.float64)
  if alpha is None:
    k = max(1, noise_norms.size // 10)
    alpha = float(np.clip(noise.tail_index_hill(noise_norms, k), 0.5, 2.0))
  gaussian_norms, stable_norms = reference_noise_norms(noise_norms, dimension, alpha, seed=seed)
  figure = Figure(figsize=(12, 3.5))
  axes = figure.subplots(1, 3)
  panels = [(noise_norms, title or "measured noise", "tab:blue"),
            (gaussian_norms, "Gaussian, matched variance", "tab:green"),
            (stable_norms, f"symmetric {alpha:.2f}-stable, matched median", "tab:red")]
  for ax, (values, label, color) in zip(axes, panels):
    ax.hist(values[np.isfinite(values)], bins=bins, color=color, alpha=0.8)
    ax.set_title(label, fontsize=10)
    ax.set_xlabel("noise norm")
  axes[0].set_ylabel("count")
  figure.suptitle(f"noise norms, d = {dimension}, {noise_norms.size} minibatches", fontsize=11)
  return _save(figure, path)


def plot_hill(x: np.ndarray, ks: np.ndarray | None = None, *, title: str | None = None,
              path: str | os.PathLike[str] | None = None) -> Figure:
  """Hill plot: `tail_index_hill(x, k)` against k (a flat stretch suggests a power-law tail).

  Args:
    x: sample of scalars or norms (see `tail_index_hill`).
    ks: the k values; default about 50 log-spaced values in [2, N // 2].
    title: plot title.
    path: if given, the figure is saved there.

  Returns:
    The figure.

  References:
    Hill, "A Simple General Approach to Inference About the Tail of a Distribution", Annals of Statistics
    3(5), 1975.
  """
  num_samples = np.asarray(x).shape[0]
  if ks is None:
    if num_samples < 4:
      raise ValueError(f"plot_hill: need at least 4 samples, got {num_samples}.")
    ks = np.unique(np.geomspace(2, num_samples // 2, 50).astype(int))
  estimates = np.asarray(noise.tail_index_hill(x, np.asarray(ks)))
  figure = Figure(figsize=(6.5, 3.5), layout="constrained")
  ax = figure.subplots()
  ax.plot(ks, estimates, marker=".", label="Hill estimate")
  ax.axhline(2.0, color="gray", linestyle="--", linewidth=1, label="alpha = 2\n(finite variance)")
  ax.set_xscale("log")
  ax.set_xlabel("k (number of largest values)")
  ax.set_ylabel("Hill estimate of alpha")
  ax.set_title(title or f"Hill plot, N = {num_samples}", fontsize=10)
  # Outside the axes, where it cannot hide the estimate at any k.
  ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.02, 1.0), borderaxespad=0.0, frameon=False)
  return _save(figure, path)


def plot_variance_trace(variance_trace: np.ndarray, *, title: str | None = None,
                        path: str | os.PathLike[str] | None = None) -> Figure:
  """The running noise-variance estimate against the number of minibatches (see `GradientNoise`).

  Args:
    variance_trace: 1-D array, `GradientNoise.variance_trace`.
    title: plot title.
    path: if given, the figure is saved there.

  Returns:
    The figure.

  References:
    Zhang, Karimireddy, Veit, Kim, Reddi, Kumar and Sra, "Why are Adaptive Methods Good for Attention
    Models?", NeurIPS 2020, arXiv 1912.03194.
  """
  variance_trace = np.asarray(variance_trace, np.float64)
  if variance_trace.ndim != 1 or variance_trace.size == 0:
    raise ValueError(f"plot_variance_trace: variance_trace must be 1-D and non-empty, got shape "
                     f"{variance_trace.shape}.")
  figure = Figure(figsize=(5, 3.5))
  ax = figure.subplots()
  ax.plot(np.arange(1, variance_trace.size + 1), variance_trace)
  ax.set_xlabel("number of minibatches")
  ax.set_ylabel("running estimate of E||noise||^2")
  ax.set_title(title or "noise variance estimate", fontsize=10)
  return _save(figure, path)
