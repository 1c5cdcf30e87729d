"""Stable-SPAM (Huang et al. 2025), SPAM's successor: a clipping threshold that follows the gradients'
running maxima, and the update scaled by running gradient-norm statistics.

A gradient that is not finite (NaN or inf, or a global norm that overflows) never enters the
statistics: the step gets a zero update and the state is kept, counting it in `nonfinite_count`.
"""
from __future__ import annotations

import math
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax

from acclip_optax import _deprecation
from acclip_optax._common import (
    all_finite, check_in_range, check_real_floating_leaves, check_same_tree, check_steps, count_true, count_unless,
    float_dtype, fraction, largest_magnitudes_apart, unzip, upcast, upcast_dtype)


class StableSpamState(NamedTuple):
  """State of `scale_by_stable_spam`.

  Attributes:
    count: int32, updates done.
    mu, nu: Adam's moments, zeroed every `reset_interval` steps.
    max_ema: per leaf, the EMA of the leaf's largest ``|g_i|`` (AdaClip's threshold before bias correction).
    norm_ema, norm_sq_ema: per leaf, the EMAs of the clipped leaf's norm and squared norm (AdaGN).
    clip_fraction: the fraction of coordinates the last update's AdaClip scaled down.
    nonfinite_count: int32, steps whose gradient was not finite (zero update, state otherwise kept).
  """
  count: jax.Array
  mu: optax.Updates
  nu: optax.Updates
  max_ema: optax.Updates
  norm_ema: optax.Updates
  norm_sq_ema: optax.Updates
  clip_fraction: jax.Array
  nonfinite_count: jax.Array


def _stable_spam_momentum_scale(step: jax.Array, decay_steps: Any, floor: Any) -> jax.Array:
  """s_k: the cosine decay of b1 and norm_decay (gamma1) (reference: `CosineDecay(1.0, t_max, eta_min)`).

  s_k = f + (1 - f) c(k + 1) / c(1) for k < T and f after, c(j) = 1 + cos(pi j / (T + 1)), T =
  `decay_steps`: torch's recursive `CosineAnnealingLR`, which the reference first steps at epoch 2 from
  the value of epoch 1, telescopes to this (not to the closed form c(k + 1) / 2, as SPAM's warm-up does).
  """
  period = decay_steps + 1.0
  cosine = floor + (1.0 - floor) * (1.0 + jnp.cos(jnp.pi * (step + 1.0) / period)) / (1.0 + jnp.cos(jnp.pi / period))
  return jnp.where(step >= decay_steps, floor, cosine)


class _StepScalars(NamedTuple):
  """The scalars of one Stable-SPAM step that every tensor's update reads."""
  finite: Any
  reset: Any
  beta1: Any
  norm_decay: Any
  b2: Any
  norm_sq_decay: Any
  max_decay: Any
  eps: Any
  adam_correction1: Any
  adam_correction2: Any
  max_correction: Any
  norm_correction1: Any
  norm_correction2: Any


def _stable_spam_leaf(k: _StepScalars, g: jax.Array, largest: jax.Array, mu: jax.Array, nu: jax.Array,
                      max_ema: jax.Array, norm_ema: jax.Array, norm_sq_ema: jax.Array) -> tuple[jax.Array, ...]:
  """One tensor's Stable-SPAM step: AdaClip, AdaGN, then Adam (see `scale_by_stable_spam`).

  Returns (direction, mu, nu, max_ema, norm_ema, norm_sq_ema, the number of coordinates AdaClip scaled).
  """
  g32 = upcast(g)
  max_ema = jnp.where(k.finite, max_ema + (1 - k.max_decay) * (largest.astype(max_ema.dtype) - max_ema), max_ema)
  threshold = (max_ema / k.max_correction).astype(g32.dtype)
  spike = jnp.abs(g32) > threshold
  clipped = jnp.where(spike, g32 / largest * threshold, g32)
  norm = jnp.sqrt(jnp.sum(jnp.square(clipped))).astype(norm_ema.dtype)
  active = (norm > 0) & k.finite
  norm_ema = jnp.where(active, norm_ema + (1 - k.norm_decay) * (norm - norm_ema), norm_ema)
  norm_sq_ema = jnp.where(active, norm_sq_ema + (1 - k.norm_sq_decay) * (jnp.square(norm) - norm_sq_ema), norm_sq_ema)
  norm_scale = (norm_ema / k.norm_correction1) / (jnp.sqrt(norm_sq_ema / k.norm_correction2) + k.eps)
  normalized = clipped * (norm_scale / jnp.where(active, norm, 1.0)).astype(g32.dtype)
  mu32 = jnp.where(k.reset, 0, mu.astype(g32.dtype))
  nu32 = jnp.where(k.reset, 0, nu.astype(g32.dtype))
  m = jnp.where(active, mu32 + (1 - k.beta1) * (normalized - mu32), mu32)
  v = jnp.where(active, k.b2 * nu32 + (1 - k.b2) * jnp.square(normalized), nu32)
  direction = (m / k.adam_correction1) / (jnp.sqrt(v) / k.adam_correction2 + k.eps)
  return (jnp.where(active, direction, 0).astype(g.dtype), m.astype(mu.dtype), v.astype(nu.dtype), max_ema,
          norm_ema, norm_sq_ema, count_true(spike))


@_deprecation.renamed_arguments(gamma1="norm_decay", gamma2="norm_sq_decay")
def scale_by_stable_spam(b1: float = 0.9, b2: float = 0.999, norm_decay: float | None = 0.7, norm_sq_decay: float = 0.9,
                         max_decay: float = 0.999, reset_interval: int = 1000, eps: float = 1e-8,
                         momentum_decay_steps: int | None = None,
                         momentum_decay_floor: float = 0.5) -> optax.GradientTransformationExtraArgs:
  r"""Stable-SPAM's direction (Huang et al. 2025): Adam after adaptive spike clipping and norm scaling.

  At step t = 1, 2, ..., for each tensor (leaf) g with :math:`g_{max} = \max_i |g_i|` (r =
  `reset_interval`, :math:`\theta` = `max_decay`, :math:`s_t` = 1 unless `momentum_decay_steps` is set):

  .. math::
    M \leftarrow \theta M + (1 - \theta) g_{max}, \quad \hat M = \frac{M}{1 - \theta^t}, \quad
    \tilde g_i = \begin{cases} \frac{g_i}{g_{max}} \hat M & |g_i| > \hat M \\ g_i & \text{else}
    \end{cases} \quad \text{(AdaClip)},

    n = \|\tilde g\|, \quad \mu \leftarrow \gamma_1 s_t \mu + (1 - \gamma_1 s_t) n, \quad
    \nu \leftarrow \gamma_2 \nu + (1 - \gamma_2) n^2, \quad
    \hat g = \frac{\tilde g}{n} \cdot \frac{\mu / (1 - (\gamma_1 s_t)^t)}{\sqrt{\nu / (1 - \gamma_2^t)}
    + \epsilon} \quad \text{(AdaGN)},

    m, v \leftarrow 0 \text{ when } t \bmod r = 0, \quad m = \beta_1 s_t m + (1 - \beta_1 s_t) \hat g, \quad
    v = \beta_2 v + (1 - \beta_2) \hat g^2, \quad
    u = \frac{m / (1 - (\beta_1 s_t)^k)}{\sqrt{v / (1 - \beta_2^k)} + \epsilon},

  where k counts the steps since the last reset, the reset step being k = 1 (k = t before the first). A
  tensor whose clipped gradient is zero (n = 0) keeps its m, v, mu and nu and gets u = 0. With
  `momentum_decay_steps` T, :math:`s_t = f + (1 - f)\,c(t + 1) / c(1)` for t < T and f =
  `momentum_decay_floor` after, :math:`c(j) = 1 + \cos(\pi j / (T + 1))` (what the reference's
  `CosineDecay` computes: torch's recursive `CosineAnnealingLR` started at its second epoch).

  This is `pytorch_optimizer.StableSPAM` 4.1.0 (its default, non-foreach path) step for step, with its
  defaults. Where it differs from the paper's Algorithm 1 we follow it: Adam's bias corrections restart
  at each momentum reset while the AdaClip and AdaGN corrections use the global t; the optional cosine
  decay of :math:`\beta_1` and :math:`\gamma_1` (its `t_max`, `eta_min`); and the skip of an all-zero
  tensor. Names: the reference's `theta` (an EMA decay) is `max_decay` here, because `theta` is SPAM's
  spike threshold in this module; its `update_proj_gap` is `reset_interval`, as in `scale_by_spam`; its
  `gamma1` and `gamma2` (:math:`\gamma_1, \gamma_2`) are `norm_decay` and `norm_sq_decay`, the names of
  the library's other EMA decays of norms; its `gamma1=-1` (use :math:`\beta_1`) is ``norm_decay=None``;
  `t_max` and `eta_min` are `momentum_decay_steps` and `momentum_decay_floor`.

  A gradient that is not finite (NaN or inf, or a global norm that overflows) never enters the statistics:
  the step's update is zero, the state is kept, and `clip_stats` counts the step in ``nonfinite_steps``.

  Args:
    b1, b2: Adam's decays, in [0, 1).
    norm_decay: :math:`\gamma_1`, the decay of the EMA of the tensor norm, in [0, 1); None: `b1` (``gamma1``
      before version 0.3).
    norm_sq_decay: :math:`\gamma_2`, the decay of the EMA of the squared tensor norm, in [0, 1) (``gamma2``
      before version 0.3).
    max_decay: the decay of the EMA of ``max |g_i|``, in [0, 1).
    reset_interval: steps between momentum resets, >= 1.
    eps: added to the square roots, >= 0.
    momentum_decay_steps: T of the cosine decay of b1 and norm_decay, >= 1, or None (no decay).
    momentum_decay_floor: f, the decay's final multiplier, in [0, 1].

  Returns:
    An `optax.GradientTransformationExtraArgs` with a `StableSpamState`; its update is a direction (scale
    it by the negative learning rate, as `stable_spam` does).

  References:
    Huang et al., "Stable-SPAM: How to Train in 4-Bit More Stably than 16-Bit Adam", arXiv 2502.17055, 2025.

  Example:
    >>> import jax.numpy as jnp, optax
    >>> from acclip_optax import scale_by_stable_spam
    >>> tx = optax.chain(scale_by_stable_spam(), optax.scale_by_learning_rate(1e-3))
    >>> updates, state = tx.update(jnp.ones(3), tx.init(jnp.zeros(3)))
  """
  for name, value in (("b1", b1), ("b2", b2), ("norm_sq_decay", norm_sq_decay), ("max_decay", max_decay)):
    check_in_range(name, value, 0.0, 1.0)
  if norm_decay is not None:
    check_in_range("norm_decay", norm_decay, 0.0, 1.0)
  norm_decay = b1 if norm_decay is None else norm_decay
  reset_interval = check_steps("reset_interval", reset_interval, 1)
  check_in_range("eps", eps, 0.0, math.inf)
  if momentum_decay_steps is not None:
    momentum_decay_steps = check_steps("momentum_decay_steps", momentum_decay_steps, 1)
  check_in_range("momentum_decay_floor", momentum_decay_floor, 0.0, 1.0, high_inclusive=True)

  def init_fn(params):
    check_real_floating_leaves("params", params)
    scalar = lambda p: jnp.zeros([], upcast_dtype(p.dtype))
    return StableSpamState(
        count=jnp.zeros([], jnp.int32), mu=jax.tree.map(lambda p: jnp.zeros_like(p, dtype=p.dtype), params),
        nu=jax.tree.map(lambda p: jnp.zeros_like(p, dtype=p.dtype), params), max_ema=jax.tree.map(scalar, params),
        norm_ema=jax.tree.map(scalar, params), norm_sq_ema=jax.tree.map(scalar, params),
        clip_fraction=jnp.zeros([], jnp.float32), nonfinite_count=jnp.zeros([], jnp.int32))

  def update_fn(updates, state, params=None, **extra_args):
    del params, extra_args
    check_real_floating_leaves("updates", updates)
    check_same_tree("updates", updates, "the optimizer state (made by init)", state.mu)
    dtype = float_dtype(updates)
    step = state.count + 1
    t = step.astype(dtype)
    momentum_scale = (jnp.ones([], dtype) if momentum_decay_steps is None else
                      _stable_spam_momentum_scale(t, momentum_decay_steps, momentum_decay_floor).astype(dtype))
    beta1, gamma = b1 * momentum_scale, norm_decay * momentum_scale
    reset = step % reset_interval == 0
    since_reset = jnp.where(step >= reset_interval, step % reset_interval + 1, step).astype(dtype)
    adam_correction1 = 1 - beta1 ** since_reset
    adam_correction2 = jnp.sqrt(1 - jnp.asarray(b2, dtype) ** since_reset)
    max_correction = 1 - jnp.asarray(max_decay, dtype) ** t
    norm_correction1 = 1 - gamma ** t
    norm_correction2 = 1 - jnp.asarray(norm_sq_decay, dtype) ** t
    # max |g| per leaf first: a NaN or inf anywhere in g makes it NaN or inf, which is the finiteness test. A
    # skipped step then runs as a step that no tensor is active in (the moments and EMAs kept, no reset, a
    # zero direction), with no select between the old and the new moments.
    largest, updates = largest_magnitudes_apart(updates)
    finite = all_finite(largest)
    scalars = _StepScalars(finite=finite, reset=reset & finite, beta1=beta1, norm_decay=gamma, b2=b2,
                           norm_sq_decay=norm_sq_decay, max_decay=max_decay, eps=eps, adam_correction1=adam_correction1,
                           adam_correction2=adam_correction2, max_correction=max_correction,
                           norm_correction1=norm_correction1, norm_correction2=norm_correction2)
    outputs = jax.tree.map(lambda *leaf: _stable_spam_leaf(scalars, *leaf), updates, largest, state.mu, state.nu,
                           state.max_ema, state.norm_ema, state.norm_sq_ema)
    direction, mu, nu, max_ema, norm_ema, norm_sq_ema, spike_counts = unzip(updates, outputs, 7)
    clip_fraction = fraction(jax.tree.leaves(spike_counts), [g.size for g in jax.tree.leaves(updates)])
    state = StableSpamState(count=jnp.where(finite, optax.safe_increment(state.count), state.count),
                            mu=mu, nu=nu, max_ema=max_ema, norm_ema=norm_ema, norm_sq_ema=norm_sq_ema,
                            clip_fraction=jnp.where(finite, clip_fraction, state.clip_fraction),
                            nonfinite_count=count_unless(finite, state.nonfinite_count))
    return direction, state

  return optax.GradientTransformationExtraArgs(init_fn, update_fn)


@_deprecation.renamed_arguments(gamma1="norm_decay", gamma2="norm_sq_decay")
def stable_spam(learning_rate: optax.ScalarOrSchedule, b1: float = 0.9, b2: float = 0.999,
                norm_decay: float | None = 0.7, norm_sq_decay: float = 0.9, max_decay: float = 0.999,
                reset_interval: int = 1000, eps: float = 1e-8, weight_decay: float = 0.0, mask: Any = None, *,
                momentum_decay_steps: int | None = None,
                momentum_decay_floor: float = 0.5) -> optax.GradientTransformationExtraArgs:
  r"""Stable-SPAM (Huang et al. 2025) with decoupled weight decay, as `pytorch_optimizer.StableSPAM`.

  .. math::
    x \leftarrow x - \eta_k (u_k + \lambda x)

  with :math:`u_k` from `scale_by_stable_spam` and :math:`\lambda` = `weight_decay` on the leaves `mask`
  selects: the reference's decay :math:`x \leftarrow (1 - \eta_k \lambda) x` before its step.

  A gradient that is not finite (NaN or inf, or a global norm that overflows) never enters the statistics:
  the step's update is zero, the state is kept, and `clip_stats` counts the step in ``nonfinite_steps``.

  Args:
    learning_rate: :math:`\eta`, a float or a schedule.
    b1, b2, norm_decay, norm_sq_decay, max_decay, reset_interval, eps, momentum_decay_steps, momentum_decay_floor:
      see `scale_by_stable_spam`.
    weight_decay: :math:`\lambda`, >= 0.
    mask: the leaves to decay (a pytree of booleans or a function of the params), None: all.

  Returns:
    ``chain(scale_by_stable_spam, [add_decayed_weights,] scale_by_learning_rate)``.

  References:
    Huang et al., "Stable-SPAM: How to Train in 4-Bit More Stably than 16-Bit Adam", arXiv 2502.17055, 2025.

  Example:
    >>> import jax.numpy as jnp
    >>> from acclip_optax import stable_spam
    >>> tx = stable_spam(1e-3)
    >>> updates, state = tx.update(jnp.ones(3), tx.init(jnp.zeros(3)))
  """
  check_in_range("weight_decay", weight_decay, 0.0, math.inf)
  parts = [scale_by_stable_spam(b1, b2, norm_decay, norm_sq_decay, max_decay, reset_interval, eps, momentum_decay_steps,
                                momentum_decay_floor)]
  if not (isinstance(weight_decay, (int, float)) and weight_decay == 0):  # a traced one may be nonzero
    parts.append(optax.add_decayed_weights(weight_decay, mask))
  parts.append(optax.scale_by_learning_rate(learning_rate))
  return optax.chain(*parts)
