"""SPAM (Huang et al., ICLR 2025): Adam with spike-aware coordinate clipping and momentum resets.

A gradient that is not finite (NaN or inf, or a global norm that overflows) never enters the
statistics: the step gets a zero update and the state is kept, counting it in `nonfinite_count`.
"""
from __future__ import annotations

import math
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax

from acclip_optax._common import (
    all_finite, check_in_range, check_real_floating_leaves, check_same_tree, check_steps, count_true, count_unless,
    float_dtype, fraction, largest_magnitudes_apart, unzip, upcast)


class SpamState(NamedTuple):
  """State of `scale_by_spam`.

  Attributes:
    count: int32, updates done.
    mu, nu: Adam's moments, zeroed every `reset_interval` steps.
    clip_fraction: the fraction of coordinates the last update's spike clip changed.
    nonfinite_count: int32, steps whose gradient was not finite (zero update, state otherwise kept).
  """
  count: jax.Array
  mu: optax.Updates
  nu: optax.Updates
  clip_fraction: jax.Array
  nonfinite_count: jax.Array


def _spam_warmup_scale(step: jax.Array, reset_interval: int, warmup_steps: int) -> jax.Array:
  """1 - d(c): the learning-rate factor after a momentum reset, c steps since it (reference: CosineDecay).

  d(c) = 0.99 (1 + cos(pi (c + 1) / (W + 1))) / 2 for c < W and 0 after; before the first reset, 1.
  """
  since_reset = step % reset_interval
  has_reset = step >= reset_interval
  death = 0.99 * (1.0 + jnp.cos(jnp.pi * (since_reset + 1.0) / (warmup_steps + 1.0))) / 2.0
  return jnp.where(has_reset & (since_reset < warmup_steps), 1.0 - death, 1.0)


def scale_by_spam(b1: float = 0.9, b2: float = 0.999, eps: float = 1e-6, theta: float = 5000.0,
                  reset_interval: int = 500, warmup_steps: int = 50,
                  grad_accu_steps: int = 20) -> optax.GradientTransformationExtraArgs:
  r"""SPAM's direction (Huang et al., ICLR 2025): Adam with spike clipping and momentum resets.

  At step k = 1, 2, ... (r = `reset_interval`, W = `warmup_steps`, A = `grad_accu_steps`):

  .. math::
    m, v \leftarrow 0 \text{ when } k \bmod r = 0; \quad
    g_i \leftarrow \mathrm{sign}(g_i) \sqrt{\theta v_i} \text{ where } g_i^2 > \theta v_i
    \text{ (only when } k \ge A \text{ and } k \bmod r \ge A),

    m = b_1 m + (1 - b_1) g, \quad v = b_2 v + (1 - b_2) g^2, \quad
    u = s_k \frac{\sqrt{1 - b_2^k}}{1 - b_1^k} \frac{m}{\sqrt v + \epsilon},

  with the bias corrections at the global k (not reset) and :math:`s_k` the reference's cosine warm-up
  after each reset (`_spam_warmup_scale`). As `pytorch_optimizer.SPAM` 4.1.0 at density 1 (no sparse
  masks); the clip compares with v before this step's update.

  A gradient that is not finite (NaN or inf, or a global norm that overflows) never enters the statistics:
  the step's update is zero, the state is kept, and `clip_stats` counts the step in ``nonfinite_steps``.

  Args:
    b1, b2: Adam's decays, in [0, 1).
    eps: added to sqrt(v), >= 0.
    theta: the spike threshold on g^2 / v, >= 0 (0: no clipping).
    reset_interval: steps between momentum resets, >= 1.
    warmup_steps: steps of the cosine warm-up after a reset, >= 0.
    grad_accu_steps: steps after a reset (and at the start) before clipping begins, >= 0.

  Returns:
    An `optax.GradientTransformationExtraArgs` with a `SpamState`; its update is a direction (scale it by
    the negative learning rate, as `spam` does).

  References:
    Huang et al., "SPAM: Spike-Aware Adam with Momentum Reset for Stable LLM Training", ICLR 2025, arXiv
    2501.06842.

  Example:
    >>> import jax.numpy as jnp, optax
    >>> from acclip_optax import scale_by_spam
    >>> tx = optax.chain(scale_by_spam(reset_interval=100), optax.scale_by_learning_rate(1e-3))
    >>> updates, state = tx.update(jnp.ones(3), tx.init(jnp.zeros(3)))
  """
  for name, value in (("b1", b1), ("b2", b2)):
    check_in_range(name, value, 0.0, 1.0)
  check_in_range("eps", eps, 0.0, math.inf)
  check_in_range("theta", theta, 0.0, math.inf)
  reset_interval = check_steps("reset_interval", reset_interval, 1)
  warmup_steps = check_steps("warmup_steps", warmup_steps, 0)
  grad_accu_steps = check_steps("grad_accu_steps", grad_accu_steps, 0)

  def init_fn(params):
    check_real_floating_leaves("params", params)
    return SpamState(count=jnp.zeros([], jnp.int32), mu=optax.tree.zeros_like(params),
                     nu=optax.tree.zeros_like(params), clip_fraction=jnp.zeros([], jnp.float32),
                     nonfinite_count=jnp.zeros([], jnp.int32))

  def update_fn(updates, state, params=None, **extra_args):
    del params, extra_args
    check_real_floating_leaves("updates", updates)
    check_same_tree("updates", updates, "the optimizer state (made by init)", state.mu)
    step = state.count + 1
    reset = step % reset_interval == 0
    clip = (theta != 0) & (step >= grad_accu_steps) & (step % reset_interval >= grad_accu_steps)
    dtype = float_dtype(updates)
    k = step.astype(dtype)
    step_size = jnp.sqrt(1 - jnp.asarray(b2, dtype) ** k) / (1 - jnp.asarray(b1, dtype) ** k)
    step_size = step_size * _spam_warmup_scale(step, reset_interval, warmup_steps).astype(dtype)
    # A non-finite gradient leaves the moments as they were and gives a zero step, by arithmetic with scalar
    # weights rather than a select between the old and the new moments (which costs XLA:CPU its in-place
    # update). The finiteness test, a reduction, runs apart from the element-wise update (fused into it,
    # XLA:CPU runs the update on one thread).
    largest, updates = largest_magnitudes_apart(updates)
    finite = all_finite(largest)
    leaves = jax.tree.leaves(updates)
    taken = finite.astype(dtype)  # 1: the step is taken; 0: it is skipped
    kept = (~reset).astype(dtype) * taken + (1 - taken)  # what multiplies the old moments before the EMA

    def leaf_step(g, mu, nu):
      g32 = jnp.where(finite, upcast(g), 0)
      mu32, nu32 = kept * mu.astype(g32.dtype), kept * nu.astype(g32.dtype)
      # g^2 > theta v  <=>  |g| > sqrt(theta v): the clip is a clamp to +-sqrt(theta v) (+-inf: no clip),
      # which XLA fuses with the moment updates better than a select on a sign.
      bound = jnp.where(clip, jnp.sqrt(theta * nu32), jnp.inf)
      spike = jnp.abs(g32) > bound
      g32 = jnp.clip(g32, -bound, bound)
      # Skipped: m = 1 * mu + 0 (the weights b1 -> 1, 1 - b1 -> 0), and the same for v.
      m = (taken * b1 + (1 - taken)) * mu32 + taken * (1 - b1) * g32
      v = (taken * b2 + (1 - taken)) * nu32 + taken * (1 - b2) * jnp.square(g32)
      direction = (taken * step_size * m / (jnp.sqrt(v) + eps)).astype(g.dtype)
      return direction, m.astype(mu.dtype), v.astype(nu.dtype), spike

    directions, mu, nu, spikes = unzip(updates, jax.tree.map(leaf_step, updates, state.mu, state.nu), 4)
    # The clipped-coordinate count, a reduction too, after the update and apart from it.
    directions, mu, nu = jax.lax.optimization_barrier((directions, mu, nu))
    counts = [count_true(spike) for spike in jax.tree.leaves(spikes)]
    clip_fraction = fraction(counts, [g.size for g in leaves])
    state = SpamState(count=jnp.where(finite, optax.safe_increment(state.count), state.count), mu=mu, nu=nu,
                      clip_fraction=jnp.where(finite, clip_fraction, state.clip_fraction),
                      nonfinite_count=count_unless(finite, state.nonfinite_count))
    return directions, state

  return optax.GradientTransformationExtraArgs(init_fn, update_fn)


def _decay_after_step(learning_rate: optax.ScalarOrSchedule, weight_decay: float,
                      mask: Any) -> optax.GradientTransformationExtraArgs:
  """u <- u - lr_k * wd * (x + u): decoupled decay applied to the stepped weights, as SPAM's reference."""

  def init_fn(params):
    del params
    return optax.ScaleByScheduleState(count=jnp.zeros([], jnp.int32))

  def update_fn(updates, state, params=None, **extra_args):
    del extra_args
    if params is None:
      raise ValueError("spam with weight_decay > 0 needs the params in update (as optax.adamw does)")
    lr = learning_rate(state.count) if callable(learning_rate) else learning_rate
    updates = jax.tree.map(lambda u, x: (u - lr * weight_decay * (x + u)).astype(u.dtype), updates, params)
    return updates, optax.ScaleByScheduleState(count=optax.safe_increment(state.count))

  transform = optax.GradientTransformationExtraArgs(init_fn, update_fn)
  return optax.masked(transform, mask) if mask is not None else transform


def spam(learning_rate: optax.ScalarOrSchedule, b1: float = 0.9, b2: float = 0.999, eps: float = 1e-6,
         theta: float = 5000.0, reset_interval: int = 500, warmup_steps: int = 50, weight_decay: float = 0.0,
         mask: Any = None, *, grad_accu_steps: int = 20) -> optax.GradientTransformationExtraArgs:
  r"""SPAM (Huang et al., ICLR 2025) with decoupled weight decay, as `pytorch_optimizer.SPAM` at density 1.

  .. math::
    x \leftarrow (x - \eta_k u_k)(1 - \eta_k \lambda)

  with :math:`u_k` from `scale_by_spam` (spike clipping, momentum resets, warm-up after each reset) and
  :math:`\lambda` = `weight_decay` applied after the step to the leaves `mask` selects.

  A gradient that is not finite (NaN or inf, or a global norm that overflows) never enters the statistics:
  the step's update is zero, the state is kept, and `clip_stats` counts the step in ``nonfinite_steps``.

  Args:
    learning_rate: :math:`\eta`, a float or a schedule.
    b1, b2, eps, theta, reset_interval, warmup_steps, grad_accu_steps: see `scale_by_spam`.
    weight_decay: :math:`\lambda`, >= 0.
    mask: the leaves to decay (a pytree of booleans or a function of the params), None: all.

  Returns:
    ``chain(scale_by_spam, scale_by_learning_rate[, decay after the step])``.

  References:
    Huang et al., "SPAM: Spike-Aware Adam with Momentum Reset for Stable LLM Training", ICLR 2025, arXiv
    2501.06842.

  Example:
    >>> import jax.numpy as jnp
    >>> from acclip_optax import spam
    >>> tx = spam(1e-3)
    >>> updates, state = tx.update(jnp.ones(3), tx.init(jnp.zeros(3)))
  """
  check_in_range("weight_decay", weight_decay, 0.0, math.inf)
  parts = [scale_by_spam(b1, b2, eps, theta, reset_interval, warmup_steps, grad_accu_steps),
           optax.scale_by_learning_rate(learning_rate)]
  if not (isinstance(weight_decay, (int, float)) and weight_decay == 0):  # a traced one may be nonzero
    parts.append(_decay_after_step(learning_rate, weight_decay, mask))
  return optax.chain(*parts)
