"""The noise study's figures of one measurement (`acclip_optax.noise_plots`), saved as PNGs in the output folder.

* `<model>_step<k>_b<B>_histogram.png`: the noise norms beside Gaussian and alpha-stable references of the
  same dimension and scale (the paper's Figure 1), the stable one at the pooled coordinates' Mohammadi index;
* `<model>_step<k>_b<B>_hill.png`: Hill's estimate over the whole k range of the pooled coordinates;
* `<model>_step<k>_b<B>_variance.png`: the running variance estimate after 1, 2, ... minibatches.
"""
from __future__ import annotations

import math
import os

import numpy as np

from acclip_optax import noise_plots

from experiments.common import figures as figures_lib
from experiments.noise import measure


def measurement_figures(measurement: measure.Measurement, *, model: str, step: int, batch_size: int,
                        num_params: int, out_dir: str, histogram: bool, traces: bool) -> list[str]:
  """Writes the histogram (when `histogram`) and the Hill and variance plots (when `traces`) of a measurement.

  Returns:
    The file names written, relative to `out_dir`.
  """
  tag = f"{model}_step{step}_b{batch_size}"
  figures = []
  if histogram:
    # The stable reference uses the coordinates' tail index (Hill on a few dozen norms is meaningless).
    alpha = measurement.numbers["pooled"]["alpha_mohammadi"]
    figures.append((f"{tag}_histogram.png", noise_plots.plot_noise_histogram(
        measurement.norms, num_params, alpha=float(np.clip(alpha, 0.5, 2.0)) if math.isfinite(alpha) else None,
        title=f"{model}, step {step}, batch {batch_size}")))
  if traces:
    pooled = measure.standardised_pool(measurement.coordinates)
    figures.append((f"{tag}_hill.png", noise_plots.plot_hill(
        pooled, title=f"{model}, step {step}: pooled coordinates (N = {pooled.size})")))
    figures.append((f"{tag}_variance.png", noise_plots.plot_variance_trace(
        measurement.variance, title=f"{model}, step {step}, batch {batch_size}")))
  for name, figure in figures:
    figures_lib.save_figure(figure, os.path.join(out_dir, name), dpi=110)
  return [name for name, _ in figures]
