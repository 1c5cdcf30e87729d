"""The noise study's measurement at one parameter point, and its tail-index estimators.

At parameters theta and n minibatches B_1..B_n of size B, `acclip_optax.noise.gradient_noise` gives the
minibatch gradients' noise xi_b = g_b - g (g = (1/n) sum_b g_b); from it `measure` takes

* the noise norms ||xi_b||: their median, max / median, and Hill's tail index with k = max(2, n / 10);
* the running variance estimate s2(m) after m minibatches and its growth s2(n) / s2(n/2), about 1 once the
  estimate has converged (`variance_growth`);
* the noise at m random coordinates: each coordinate's series divided by its median |value|, pooled over all
  coordinates and per parameter group (`standardised_pool`), and the pool's tail index (`tail_indices`:
  Mohammadi's block-sum estimator and Hill's with k = 2% of the sample). alpha = 2 is Gaussian-like, smaller
  is heavier-tailed.
"""
from __future__ import annotations

import dataclasses
from typing import Any, Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from acclip_optax import noise

HILL_FRACTION = 0.02  # Hill's k as a fraction of the pooled sample


def group_labels(params: Any, group_of: Callable[[tuple], str], groups: tuple[str, ...]) -> np.ndarray:
  """The group index of every coordinate of `ravel_pytree(params)` (same leaf order)."""
  flat, _ = jax.tree_util.tree_flatten_with_path(params)
  return np.concatenate([np.full(int(np.size(leaf)), groups.index(group_of(path)), np.int32)
                         for path, leaf in flat])


def standardised_pool(noise_coordinates: np.ndarray) -> np.ndarray:
  """Each column (a coordinate's noise over the minibatches) divided by its median |value|, pooled.

  Columns whose median |value| is 0 carry no scale (e.g. a token absent from most batches) and are dropped.
  """
  noise_coordinates = np.asarray(noise_coordinates, np.float64)
  scale = np.median(np.abs(noise_coordinates), axis=0)
  keep = scale > 0
  return (noise_coordinates[:, keep] / scale[keep]).ravel()


def tail_indices(sample: np.ndarray, seed: int = 0) -> dict[str, float]:
  """Mohammadi and Hill (k = max(2, 2% of N)) estimates of a 1-D sample's tail index, in a random order.

  Returns:
    {"n": finite sample size, "alpha_mohammadi", "alpha_hill"}; NaN estimates below 16 values.
  """
  sample = np.random.default_rng(seed).permutation(np.asarray(sample, np.float64))
  sample = sample[np.isfinite(sample)]
  if sample.size < 16:
    return {"n": int(sample.size), "alpha_mohammadi": float("nan"), "alpha_hill": float("nan")}
  k = max(2, int(HILL_FRACTION * sample.size))
  return {"n": int(sample.size),
          "alpha_mohammadi": float(noise.tail_index_mohammadi(jnp.asarray(sample, jnp.float32))),
          "alpha_hill": float(noise.tail_index_hill(sample, k))}


def variance_growth(variance_trace: np.ndarray) -> float:
  """s2(n) / s2(n/2) of the running variance estimates s2(1..n): about 1 once the estimate has converged."""
  n = len(variance_trace)
  return float(variance_trace[-1] / max(variance_trace[n // 2 - 1], 1e-30))


@dataclasses.dataclass(frozen=True)
class Measurement:
  """One measurement: `numbers` (JSON-able, see `measure`) and the raw series the figures draw."""
  numbers: dict[str, Any]
  norms: np.ndarray  # ||xi_b||, [n]
  variance: np.ndarray  # s2(1..n)
  coordinates: np.ndarray  # xi_b at the sampled coordinates, [n, m]


def measure(loss_fn: Callable[[Any, Any], Any], params: Any, batches: Sequence[Any], *, labels: np.ndarray,
            groups: tuple[str, ...], num_coordinates: int, key: jax.Array, seed: int) -> Measurement:
  """The noise of `loss_fn`'s minibatch gradients at `params` over `batches` (module docstring).

  Args:
    loss_fn: `(params, batch) -> mean loss`; pass the same function object every time (it is compiled once).
    params: where to measure.
    batches: the n minibatches.
    labels: `group_labels` of params; groups: their names.
    num_coordinates: how many coordinates to sample (at most the parameter count).
    key: the coordinates' sampling key; seed: the order in which `tail_indices` reads the pooled sample.

  Returns:
    A Measurement whose numbers are noise_norm_median, noise_norm_max_over_median, alpha_hill_norms,
    variance_final, variance_growth, pooled (`tail_indices` of all coordinates) and groups (per group with
    sampled coordinates: `tail_indices` and its coordinate count).
  """
  measured = noise.gradient_noise(loss_fn, params, batches, num_coordinate_samples=min(num_coordinates, labels.size),
                                  key=key)
  norms = np.asarray(measured.noise_norms, np.float64)
  variance = np.asarray(measured.variance_trace, np.float64)
  coordinates = np.asarray(measured.noise_coordinates, np.float64)
  coordinate_groups = labels[np.asarray(measured.coordinate_indices)]
  numbers = {
      "noise_norm_median": float(np.median(norms)),
      "noise_norm_max_over_median": float(norms.max() / max(np.median(norms), 1e-30)),
      "alpha_hill_norms": float(noise.tail_index_hill(norms, max(2, len(norms) // 10))),
      "variance_final": float(variance[-1]),
      "variance_growth": variance_growth(variance),
      "pooled": tail_indices(standardised_pool(coordinates), seed),
      "groups": {},
  }
  for index, group in enumerate(groups):
    columns = coordinates[:, coordinate_groups == index]
    if columns.shape[1]:
      numbers["groups"][group] = dict(tail_indices(standardised_pool(columns), seed), coordinates=int(columns.shape[1]))
  return Measurement(numbers=numbers, norms=norms, variance=variance, coordinates=coordinates)
