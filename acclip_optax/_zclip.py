"""ZClip (Kumar et al. 2025): clip the global norm when its z-score against its EMA is an outlier.

A gradient that is not finite (NaN or inf, or a global norm that overflows) never enters the
statistics: the step gets a zero update and the state is kept, counting it in `nonfinite_count`.
"""
from __future__ import annotations

import math
from typing import NamedTuple

import jax
import jax.numpy as jnp
import optax

from acclip_optax import _deprecation
from acclip_optax._common import (
    check_in_range, check_real_floating_leaves, check_steps, check_updates_match_params, float_dtype, global_norm_apart,
    scale_tree, skip_if_nonfinite, TORCH_CLIP_EPS, torch_clip_scale)


class ZClipState(NamedTuple):
  """State of `zclip`.

  Attributes:
    count: int32, updates done.
    warmup_norms: the first `warmup_steps` global norms (the EMA starts from their mean and variance).
    mean, var: the EMAs of the (clipped) global norm and of its squared deviation.
    global_norm: the last update's pre-clip global norm.
    clip_threshold: the norm the last update was clipped to (inf when it was not clipped).
    clipped: 1.0 when the last update was clipped, else 0.0.
    nonfinite_count: int32, steps whose gradient was not finite (zero update, state otherwise kept).
  """
  count: jax.Array
  warmup_norms: jax.Array
  mean: jax.Array
  var: jax.Array
  global_norm: jax.Array
  clip_threshold: jax.Array
  clipped: jax.Array
  nonfinite_count: jax.Array


@_deprecation.renamed_arguments(alpha="norm_decay")
def zclip(norm_decay: float = 0.97, z_threshold: float = 2.5, warmup_steps: int = 25, max_norm: float | None = None,
          eps: float = 1e-6) -> optax.GradientTransformationExtraArgs:
  r"""ZClip (Kumar et al. 2025, arXiv 2504.02507): clip the global norm when its z-score is an outlier.

  With :math:`n_k = \|g_k\|` and, after a warm-up that collects the first :math:`W` = `warmup_steps` norms
  and sets :math:`\mu` and :math:`\sigma^2` to their mean and (population) variance:

  .. math::
    z_k = \frac{n_k - \mu}{\sigma + \epsilon}, \quad
    c_k = \begin{cases} \mu + \frac{z_{thr}\,\sigma}{z_k / z_{thr}} & z_k > z_{thr} \\ n_k & \text{else}
    \end{cases}, \quad
    g_k \leftarrow \begin{cases} \frac{\tau_k}{n_k + 10^{-6}}\, g_k & n_k > \tau_k = \min(c_k, M) \\
    g_k & \text{else} \end{cases},

    \mu \leftarrow \alpha \mu + (1 - \alpha) c_k, \quad \sigma^2 \leftarrow \alpha \sigma^2 + (1 - \alpha)
    (c_k - \mu)^2 \ (\text{with the new } \mu),

  M = `max_norm` (no cap when None). During warm-up only the cap M applies. This is the default mode
  (``mode="zscore"``, ``clip_option="adaptive_scaling"``, ``clip_factor=1``) of the reference package
  `zclip` 1.0.0, whose `ZClip.max_grad_norm` defaults to 1.0 where ours is None.

  A gradient that is not finite (NaN or inf, or a global norm that overflows) never enters the statistics:
  the step's update is zero, the state is kept, and `clip_stats` counts the step in ``nonfinite_steps``.

  Args:
    norm_decay: :math:`\alpha`, the EMA decay of the norm's mean and variance, in [0, 1) (``alpha`` before
      version 0.3).
    z_threshold: z-score above which an update is clipped, > 0.
    warmup_steps: norms collected before the EMA starts, >= 1.
    max_norm: an absolute cap on the global norm, > 0, or None.
    eps: added to sigma in the z-score, >= 0.

  Returns:
    An `optax.GradientTransformationExtraArgs` with a `ZClipState`.

  References:
    Kumar et al., "ZClip: Adaptive Spike Mitigation for LLM Pre-Training", arXiv 2504.02507, 2025.

  Example:
    >>> import jax.numpy as jnp, optax
    >>> from acclip_optax import zclip
    >>> tx = optax.chain(zclip(warmup_steps=2), optax.sgd(0.1))
    >>> updates, state = tx.update(jnp.ones(3), tx.init(jnp.zeros(3)))
  """
  check_in_range("norm_decay", norm_decay, 0.0, 1.0)
  check_in_range("z_threshold", z_threshold, 0.0, math.inf, low_inclusive=False)
  warmup_steps = check_steps("warmup_steps", warmup_steps, 1)
  if max_norm is not None:
    check_in_range("max_norm", max_norm, 0.0, math.inf, low_inclusive=False)
  check_in_range("eps", eps, 0.0, math.inf)
  cap = math.inf if max_norm is None else max_norm

  def init_fn(params):
    check_real_floating_leaves("params", params)
    dtype = float_dtype(params)
    zero = lambda: jnp.zeros([], dtype)  # a new buffer per leaf: a donated state may not repeat one
    return ZClipState(count=jnp.zeros([], jnp.int32), warmup_norms=jnp.zeros([warmup_steps], dtype),
                      mean=zero(), var=zero(), global_norm=zero(), clip_threshold=jnp.full([], jnp.inf, dtype),
                      clipped=zero(), nonfinite_count=jnp.zeros([], jnp.int32))

  def update_fn(updates, state, params=None, **extra_args):
    del extra_args
    check_real_floating_leaves("updates", updates)
    check_updates_match_params(updates, params)
    norm, updates = global_norm_apart(updates)
    norm = norm.astype(state.mean.dtype)
    num_warmup = state.warmup_norms.shape[0]
    in_warmup = state.count < num_warmup
    # Warm-up: record the norm; the step that fills the buffer starts the EMA from it.
    warmup_norms = jnp.where(in_warmup, state.warmup_norms.at[jnp.minimum(state.count, num_warmup - 1)].set(norm),
                             state.warmup_norms)
    starts = state.count == num_warmup - 1
    start_mean = jnp.mean(warmup_norms)
    start_var = jnp.mean(jnp.square(warmup_norms - start_mean))
    # After warm-up: the z-score test against the EMA.
    std = jnp.sqrt(state.var)
    z = (norm - state.mean) / (std + eps)
    outlier = jnp.logical_and(~in_warmup, z > z_threshold)
    adaptive = state.mean + z_threshold * std / jnp.where(outlier, z / z_threshold, 1.0)
    clip_value = jnp.where(outlier, adaptive, norm)  # c_k, what the EMA sees
    threshold = jnp.minimum(jnp.where(in_warmup, jnp.inf, clip_value), cap)
    clipped = norm > threshold
    scale = jnp.where(clipped, threshold / (norm + TORCH_CLIP_EPS), 1.0)
    if max_norm is not None:  # torch's clip_grad_norm_ during warm-up: min(1, M / (n + 1e-6)), always
      scale = jnp.where(in_warmup, torch_clip_scale(norm, cap), scale)
      clipped = jnp.where(in_warmup, norm + TORCH_CLIP_EPS > cap, clipped)
    new_mean = norm_decay * state.mean + (1 - norm_decay) * clip_value
    new_var = norm_decay * state.var + (1 - norm_decay) * jnp.square(clip_value - new_mean)
    mean = jnp.where(in_warmup, jnp.where(starts, start_mean, state.mean), new_mean)
    var = jnp.where(in_warmup, jnp.where(starts, start_var, state.var), new_var)
    new_state = ZClipState(
        count=optax.safe_increment(state.count), warmup_norms=warmup_norms, mean=mean, var=var,
        global_norm=norm, clip_threshold=jnp.where(clipped, threshold, jnp.inf).astype(norm.dtype),
        clipped=clipped.astype(norm.dtype), nonfinite_count=state.nonfinite_count)
    return skip_if_nonfinite(jnp.isfinite(norm), scale_tree(updates, scale), state, new_state)

  return optax.GradientTransformationExtraArgs(init_fn, update_fn)
