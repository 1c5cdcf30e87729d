"""Heavy-tailed gradient-noise tools: a symmetric alpha-stable sampler, tail-index estimators and a
bounded-memory measurement of minibatch gradient noise.

These are the measurements behind the paper's first research question (is the gradient noise of a model
heavy-tailed?) and the noise model of its theory (a bounded alpha-moment, alpha in (1, 2]).

- `sample_symmetric_stable`: Chambers–Mallows–Stuck sampling, jit- and vmap-friendly (alpha may be traced).
- `tail_index_mohammadi`: block-sum estimator (Mohammadi et al. 2015, as used by Simsekli et al. 2019).
- `tail_index_hill`: Hill estimator from the k largest magnitudes.
- `gradient_noise`: the full (mean) gradient and the per-minibatch noise ``g_B - mean`` in two streaming
  passes over the batches.

References:
  Simsekli, Sagun and Gurbuzbalaban, "A Tail-Index Analysis of Stochastic Gradient Noise in Deep Neural
  Networks", ICML 2019, arXiv 1901.06053.
  Mohammadi, Mohammadpour and Ogata, "On estimating the tail index and the spectral measure of multivariate
  alpha-stable distributions", Metrika 78, 2015.
  Hill, "A Simple General Approach to Inference About the Tail of a Distribution", Annals of Statistics 3(5),
  1975.
  Chambers, Mallows and Stuck, "A Method for Simulating Stable Random Variables", Journal of the American
  Statistical Association 71(354), 1976.
"""
from __future__ import annotations

import functools
import math
from collections.abc import Callable, Iterable, Iterator
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax.flatten_util import ravel_pytree

__all__ = [
  "GradientNoise",
  "gradient_noise",
  "sample_symmetric_stable",
  "tail_index_hill",
  "tail_index_mohammadi",
]


def _concrete_float(value: Any) -> float | None:
  """`value` as a Python float when it is concrete, None when it is traced (inside jit/vmap/grad)."""
  try:
    return float(value)
  except (jax.errors.ConcretizationTypeError, jax.errors.TracerArrayConversionError,
          jax.errors.TracerBoolConversionError):
    return None


def sample_symmetric_stable(key: jax.Array, alpha: float | jax.Array, shape: tuple[int, ...] = (),
                            scale: float | jax.Array = 1.0, dtype: Any = jnp.float32) -> jax.Array:
  r"""Samples a symmetric alpha-stable law by the Chambers–Mallows–Stuck method.

  With :math:`V \sim U(-\pi/2, \pi/2)` and :math:`W \sim \mathrm{Exp}(1)` independent,

  .. math::
    X = \text{scale} \cdot \frac{\sin(\alpha V)}{\cos(V)^{1/\alpha}}
        \left(\frac{\cos((1 - \alpha) V)}{W}\right)^{(1 - \alpha)/\alpha},

  which is :math:`\tan V` (Cauchy) at :math:`\alpha = 1` and :math:`N(0, 2\,\text{scale}^2)` at
  :math:`\alpha = 2` (variance 2, not 1). This is scipy's ``levy_stable(alpha, beta=0, scale=scale)``
  (S0 and S1 agree when beta = 0). :math:`E|X|^p < \infty` only for :math:`p < \alpha` (all p at
  alpha = 2), so stable noise of index alpha satisfies the paper's bounded-moment assumption for every
  moment below alpha.

  The arithmetic runs in float32 (float64 when `dtype` is float64), then casts to `dtype`; for small
  alpha the largest samples may overflow to ``inf`` in low precision, as the law itself allows.

  Args:
    key: a PRNG key.
    alpha: stability index in (0, 2]; may be a traced array (jit, vmap over alpha). A concrete value
      outside (0, 2] raises ``ValueError``.
    shape: shape of the sample.
    scale: scale parameter (positive); may be traced.
    dtype: floating dtype of the result.

  Returns:
    An array of `shape` and `dtype`.

  References:
    Chambers, Mallows and Stuck, "A Method for Simulating Stable Random Variables", Journal of the American
    Statistical Association 71(354), 1976.

  Example:
    >>> import jax
    >>> x = sample_symmetric_stable(jax.random.key(0), 1.5, (1000,))
    >>> x.shape
    (1000,)
  """
  alpha_value = _concrete_float(alpha)
  if alpha_value is not None and not 0.0 < alpha_value <= 2.0:
    raise ValueError(f"sample_symmetric_stable: alpha must be in (0, 2], got alpha={alpha_value}.")
  scale_value = _concrete_float(scale)
  if scale_value is not None and not scale_value > 0.0:
    raise ValueError(f"sample_symmetric_stable: scale must be positive, got scale={scale_value}.")
  if not jnp.issubdtype(dtype, jnp.floating):
    raise ValueError(f"sample_symmetric_stable: dtype must be floating, got dtype={dtype}.")

  compute_dtype = jnp.float64 if jnp.dtype(dtype) == jnp.float64 else jnp.float32
  tiny = jnp.finfo(compute_dtype).tiny
  # One draw for both V and W: each random-bits call costs compile time inside scanned simulations.
  uniforms = jax.random.uniform(key, (2,) + tuple(shape), compute_dtype, minval=tiny, maxval=1.0)
  return (jnp.asarray(scale, compute_dtype) * _chambers_mallows_stuck(uniforms, alpha)).astype(dtype)


def _chambers_mallows_stuck(uniforms: jax.Array, alpha: float | jax.Array) -> jax.Array:
  """The CMS transform of two uniforms in (0, 1) (stacked on axis 0) into a standard symmetric sample."""
  # V must stay strictly inside (-pi/2, pi/2): the rounded pi/2 lies above pi/2, and a u of 0 (a real
  # event, probability ~1e-7 per draw in float32) would give cos(V) < 0 and a NaN power. The largest
  # float below the rounded pi/2 has cos > 0, and so has (1 - alpha) V for every alpha in (0, 2].
  half_pi = jnp.asarray(math.pi / 2, uniforms.dtype)
  max_angle = jnp.nextafter(half_pi, jnp.zeros_like(half_pi))
  angle = jnp.clip((2.0 * uniforms[0] - 1.0) * half_pi, -max_angle, max_angle)
  cos_angle = jnp.cos(angle)
  exponential = jnp.maximum(-jnp.log(uniforms[1]), jnp.finfo(uniforms.dtype).tiny)
  alpha = jnp.asarray(alpha, uniforms.dtype)
  general = (jnp.sin(alpha * angle) / cos_angle ** (1.0 / alpha)
             * (jnp.cos((1.0 - alpha) * angle) / exponential) ** ((1.0 - alpha) / alpha))
  # The general formula tends to tan V as alpha -> 1; the explicit branch keeps alpha = 1 exact.
  return jnp.where(alpha == 1.0, jnp.sin(angle) / cos_angle, general)


def _magnitudes(x: jax.Array, name: str) -> jax.Array:
  """|x| for a 1-D sample of scalars, row norms for a 2-D sample of vectors (N, d)."""
  x = jnp.asarray(x)
  if x.ndim == 1:
    return jnp.abs(x)
  if x.ndim == 2:
    return jnp.linalg.norm(x, axis=1)
  raise ValueError(f"{name}: x must be 1-D (scalars or norms) or 2-D (N vectors of dimension d), "
                   f"got shape {x.shape}.")


def tail_index_mohammadi(x: jax.Array, block_size: int | None = None, *,
                         sign_key: jax.Array | None = None) -> jax.Array:
  r"""Estimates the tail index alpha from block sums (Mohammadi et al. 2015; Simsekli et al. 2019).

  With N = K1·K2 samples :math:`X_i` and the sums :math:`Y_j` of K1 consecutive samples,

  .. math::
    \frac{1}{\hat\alpha} = \frac{1}{\log K_1}\left(\frac{1}{K_2}\sum_j \log|Y_j|
                           - \frac{1}{N}\sum_i \log|X_i|\right).

  For a 2-D input (N, d) the samples are vectors, the sums are vector sums and ``|.|`` is the Euclidean
  norm (Simsekli et al.'s use on gradient noise).

  Caveats: the estimator assumes a symmetric stable law. A finite-variance law can still give
  :math:`\hat\alpha < 2` (Student-t with 3 degrees of freedom gives about 1.8), so alpha_hat < 2 alone
  does not prove infinite variance; for a law only in a stable domain of attraction (Pareto tails) the
  estimate carries a bias of order 1/log K1. A sample of nonnegative norms has block sums that grow like
  K1 (its mean), pulling the estimate to 1: pass `sign_key` to multiply the sample by independent random
  signs first, which keeps the tail index and makes the law symmetric.

  Args:
    x: 1-D sample of scalars (or norms, with `sign_key`) or 2-D sample of vectors, shape (N, d).
    block_size: K1, the number of samples per block; default ``floor(sqrt(N))``. Trailing samples that do
      not fill a block are dropped.
    sign_key: optional PRNG key; if given, each sample is multiplied by an independent random sign.

  Returns:
    A scalar array, alpha_hat (not clipped to (0, 2]).

  References:
    Mohammadi, Mohammadpour and Ogata, "On estimating the tail index and the spectral measure of multivariate
    alpha-stable distributions", Metrika 78, 2015.
    Simsekli, Sagun and Gurbuzbalaban, "A Tail-Index Analysis of Stochastic Gradient Noise in Deep Neural
    Networks", ICML 2019, arXiv 1901.06053.

  Example:
    >>> import jax
    >>> x = sample_symmetric_stable(jax.random.key(0), 1.5, (40_000,))
    >>> alpha_hat = float(tail_index_mohammadi(x))  # 1.57 for this key: an estimate, not 1.5 exactly
    >>> 1.4 < alpha_hat < 1.7
    True
  """
  x = jnp.asarray(x)
  if x.ndim not in (1, 2):
    raise ValueError(f"tail_index_mohammadi: x must be 1-D or 2-D, got shape {x.shape}.")
  num_samples = x.shape[0]
  if block_size is None:
    block_size = math.isqrt(num_samples)
  if not 2 <= block_size <= num_samples // 2:
    raise ValueError(
        f"tail_index_mohammadi: need at least 2 blocks of at least 2 samples; got N={num_samples} "
        f"samples and block_size={block_size} (N must be >= 4; block_size in [2, N // 2]).")
  num_blocks = num_samples // block_size
  x = x[: num_blocks * block_size].astype(jnp.promote_types(x.dtype, jnp.float32))
  if sign_key is not None:
    signs = jax.random.rademacher(sign_key, (x.shape[0],), x.dtype)
    x = x * (signs if x.ndim == 1 else signs[:, None])
  block_sums = x.reshape((num_blocks, block_size) + x.shape[1:]).sum(axis=1)
  tiny = jnp.finfo(x.dtype).tiny
  log_blocks = jnp.mean(jnp.log(_magnitudes(block_sums, "tail_index_mohammadi") + tiny))
  log_samples = jnp.mean(jnp.log(_magnitudes(x, "tail_index_mohammadi") + tiny))
  return math.log(block_size) / (log_blocks - log_samples)


def tail_index_hill(x: jax.Array, k: int | Iterable[int] | np.ndarray) -> jax.Array:
  r"""Hill's estimator of the tail index from the k largest magnitudes.

  With the magnitudes sorted in decreasing order, :math:`x_{(1)} \ge x_{(2)} \ge \dots`,

  .. math::
    \hat\alpha(k) = \left[\frac{1}{k}\sum_{i=1}^{k} \log\frac{x_{(i)}}{x_{(k+1)}}\right]^{-1}.

  Caveats: exact in the limit for power-law (Pareto) tails; for a stable law it is biased near alpha = 2
  (the Gaussian limit has no power-law tail, and for alpha close to 2 the power law only shows far out),
  and it depends on k: small k is noisy, large k reaches into the body of the law. Look at a Hill plot
  (alpha_hat against k, see `acclip_optax.noise_plots.plot_hill`) before trusting one value.

  Args:
    x: 1-D sample of scalars or nonnegative norms (magnitudes are used), or 2-D (N, d) vectors (row norms).
    k: number of order statistics, an int in [1, N - 1], or a 1-D sequence of such ints (a Hill plot).

  Returns:
    alpha_hat(k): a scalar array for an int `k`, else an array with one value per entry of `k`.

  References:
    Hill, "A Simple General Approach to Inference About the Tail of a Distribution", Annals of Statistics
    3(5), 1975.

  Example:
    >>> import numpy as np
    >>> pareto = np.random.default_rng(0).pareto(1.5, 100_000) + 1.0
    >>> round(float(tail_index_hill(pareto, 2_000)), 1)
    1.5
  """
  magnitudes = _magnitudes(x, "tail_index_hill")
  num_samples = magnitudes.shape[0]
  k_array = np.asarray(k)
  if k_array.ndim > 1 or k_array.size == 0 or not np.issubdtype(k_array.dtype, np.integer):
    raise ValueError(f"tail_index_hill: k must be an int or a 1-D sequence of ints, got k={k!r}.")
  if k_array.min() < 1 or k_array.max() > num_samples - 1:
    raise ValueError(f"tail_index_hill: k must be in [1, N - 1] = [1, {num_samples - 1}] for N="
                     f"{num_samples} samples, got k={k!r}.")
  descending = -jnp.sort(-magnitudes.astype(jnp.promote_types(magnitudes.dtype, jnp.float32)))
  log_descending = jnp.log(descending)
  # mean_{i<=k} log x_(i) - log x_(k+1), for every k at once.
  top_means = jnp.cumsum(log_descending)[k_array - 1] / k_array
  return 1.0 / (top_means - log_descending[k_array])


class GradientNoise(NamedTuple):
  """What `gradient_noise` measured.

  Attributes:
    mean_gradient: the full gradient, the mean of the minibatch gradients (a pytree like params).
    noise_norms: (num_batches,) the norm ||g_B - mean_gradient|| of each minibatch's noise.
    variance_trace: (num_batches,) the running estimate of E||g_B - E g_B||^2 (the trace of the noise
      covariance) after 1, 2, ... batches, from the running mean (Welford): it levels off for
      finite-variance noise and keeps growing for heavy-tailed noise.
    coordinate_indices: (m,) indices into the flattened parameter vector (`jax.flatten_util.ravel_pytree`
      order) of the sampled coordinates; m = num_coordinate_samples (0 if none were asked for).
    noise_coordinates: (num_batches, m) the noise g_B - mean_gradient at those coordinates.

  References:
    Simsekli, Sagun and Gurbuzbalaban, "A Tail-Index Analysis of Stochastic Gradient Noise in Deep Neural
    Networks", ICML 2019, arXiv 1901.06053.
    Zhang, Karimireddy, Veit, Kim, Reddi, Kumar and Sra, "Why are Adaptive Methods Good for Attention
    Models?", NeurIPS 2020, arXiv 1912.03194.
  """
  mean_gradient: Any
  noise_norms: jax.Array
  variance_trace: jax.Array
  coordinate_indices: jax.Array
  noise_coordinates: jax.Array


class _WelfordState(NamedTuple):
  count: jax.Array
  mean: Any
  sum_squared_deviations: jax.Array


def _welford_update(state: _WelfordState, gradient: Any) -> _WelfordState:
  """One streaming step of the mean and of sum ||g_b - mean||^2 (Welford, on pytrees)."""
  count = state.count + 1
  delta = jax.tree.map(lambda g, m: g - m, gradient, state.mean)
  mean = jax.tree.map(lambda m, d: m + d / count.astype(d.dtype), state.mean, delta)
  correction = sum(jnp.sum(d * (g - m)) for d, g, m in zip(
      jax.tree.leaves(delta), jax.tree.leaves(gradient), jax.tree.leaves(mean)))
  return _WelfordState(count, mean, state.sum_squared_deviations + correction)


@jax.jit
def _accumulate(state: _WelfordState, gradient: Any) -> tuple[_WelfordState, jax.Array]:
  """Welford step and the running variance estimate (sum of squared deviations / count)."""
  state = _welford_update(state, gradient)
  return state, state.sum_squared_deviations / state.count.astype(state.sum_squared_deviations.dtype)


@jax.jit
def _measure(gradient: Any, mean_gradient: Any, coordinate_indices: jax.Array) -> tuple[jax.Array, jax.Array]:
  """||g_B - mean|| and the noise at the sampled coordinates."""
  flat_noise, _ = ravel_pytree(jax.tree.map(lambda g, m: g - m, gradient, mean_gradient))
  return jnp.linalg.norm(flat_noise), flat_noise[coordinate_indices]


@functools.lru_cache(maxsize=32)
def _jitted_grad(loss_fn: Callable[[Any, Any], jax.Array]) -> Callable[[Any, Any], Any]:
  # Params and batch are arguments, not closed-over constants: measuring the same loss at several
  # points of training (or batch shapes seen before) reuses one compilation per batch shape.
  return jax.jit(jax.grad(loss_fn))


def _batch_iterator(batches: Iterable[Any] | Callable[[], Iterable[Any]]) -> Iterator[Any]:
  """A fresh iterator over `batches`; each pass of `gradient_noise` calls this once."""
  iterable = batches() if callable(batches) else batches
  return iter(iterable)


def gradient_noise(loss_fn: Callable[[Any, Any], jax.Array], params: Any,
                   batches: Iterable[Any] | Callable[[], Iterable[Any]], *,
                   num_coordinate_samples: int = 0, key: jax.Array | None = None) -> GradientNoise:
  r"""Measures minibatch gradient noise at fixed params, in two passes with bounded memory.

  Pass 1 streams the minibatch gradients :math:`g_b = \nabla_\theta \ell(\theta, B_b)` through Welford's
  update, giving the full gradient :math:`\bar g = \frac{1}{n}\sum_b g_b` and, after each batch b, the
  running variance estimate

  .. math::
    \hat\sigma^2_b = \frac{1}{b}\sum_{c \le b} \|g_c - \bar g_b\|^2 \quad (\bar g_b \text{ the mean of the first b}).

  Pass 2 recomputes each :math:`g_b` and records :math:`\|g_b - \bar g\|` and, optionally, the noise at
  m coordinates drawn once, uniformly without replacement, from the flattened parameters. Memory: a few
  copies of params plus O(num_batches · (1 + m)) numbers; no gradient is kept after its step. The
  batches must come out in the same order on both passes.

  Args:
    loss_fn: ``loss_fn(params, batch) -> scalar`` loss.
    params: the parameters (any pytree of float arrays) at which the noise is measured.
    batches: a re-iterable collection of batches (a list, a tuple, a re-iterable dataset), or a
      zero-argument callable returning a fresh iterable of them. A one-shot iterator (a generator) is
      refused, since the two passes need two iterations.
    num_coordinate_samples: m, how many noise coordinates to record per batch (0 for none).
    key: PRNG key choosing the coordinates; required when `num_coordinate_samples` > 0.

  Returns:
    A `GradientNoise`.

  References:
    Simsekli, Sagun and Gurbuzbalaban, "A Tail-Index Analysis of Stochastic Gradient Noise in Deep Neural
    Networks", ICML 2019, arXiv 1901.06053.
    Zhang, Karimireddy, Veit, Kim, Reddi, Kumar and Sra, "Why are Adaptive Methods Good for Attention
    Models?", NeurIPS 2020, arXiv 1912.03194.

  Example:
    >>> import jax.numpy as jnp
    >>> loss = lambda w, b: jnp.mean((b[0] @ w - b[1]) ** 2)
    >>> data = [(jnp.ones((4, 2)) * i, jnp.ones(4)) for i in range(3)]
    >>> gradient_noise(loss, jnp.zeros(2), data).noise_norms.shape
    (3,)
  """
  if not callable(batches) and iter(batches) is batches:
    raise ValueError("gradient_noise: batches is a one-shot iterator, but two passes are needed; pass a "
                     "list or a zero-argument callable that returns a fresh iterator.")
  if num_coordinate_samples < 0:
    raise ValueError(f"gradient_noise: num_coordinate_samples must be >= 0, got {num_coordinate_samples}.")
  if num_coordinate_samples > 0 and key is None:
    raise ValueError("gradient_noise: a PRNG key is required when num_coordinate_samples > 0.")

  grad_fn = _jitted_grad(loss_fn)
  flat_params, _ = ravel_pytree(params)
  num_params = flat_params.shape[0]
  if num_coordinate_samples > num_params:
    raise ValueError(f"gradient_noise: num_coordinate_samples={num_coordinate_samples} exceeds the "
                     f"number of parameters, {num_params}.")

  zeros = jax.tree.map(jnp.zeros_like, params)
  state = _WelfordState(jnp.zeros((), jnp.int32), zeros, jnp.zeros((), flat_params.dtype))
  variance_trace = []
  for batch in _batch_iterator(batches):
    state, variance = _accumulate(state, grad_fn(params, batch))
    variance_trace.append(variance)
  if not variance_trace:
    raise ValueError("gradient_noise: batches yielded no batch.")
  mean_gradient = state.mean

  if num_coordinate_samples > 0:
    coordinate_indices = jax.random.choice(key, num_params, (num_coordinate_samples,), replace=False)
  else:
    coordinate_indices = jnp.zeros((0,), jnp.int32)

  noise_norms, noise_coordinates = [], []
  for batch in _batch_iterator(batches):
    norm, coordinates = _measure(grad_fn(params, batch), mean_gradient, coordinate_indices)
    noise_norms.append(norm)
    noise_coordinates.append(coordinates)
  if len(noise_norms) != len(variance_trace):
    raise ValueError(f"gradient_noise: the two passes over batches gave {len(variance_trace)} and "
                     f"{len(noise_norms)} batches; batches must yield the same batches each time.")
  return GradientNoise(mean_gradient=mean_gradient, noise_norms=jnp.stack(noise_norms),
                       variance_trace=jnp.stack(variance_trace), coordinate_indices=coordinate_indices,
                       noise_coordinates=jnp.stack(noise_coordinates))
