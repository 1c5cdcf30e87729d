"""AdaGC (Wang et al. 2025): per-tensor clipping at an EMA of each tensor's clipped norm.

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
    check_in_range, check_real_floating_leaves, check_same_tree, check_steps, check_updates_match_params, float_dtype,
    fraction, global_norm_apart, skip_if_nonfinite, unzip, upcast_dtype)


class AdaGCState(NamedTuple):
  """State of `adagc`.

  Attributes:
    count: int32, updates done.
    gamma: per leaf, the EMA of the leaf's clipped norm (a float scalar per tensor).
    global_norm: the last update's pre-clip global norm.
    clip_fraction: the fraction of tensors the last update clipped.
    nonfinite_count: int32, steps whose gradient was not finite (zero update, state otherwise kept).
  """
  count: jax.Array
  gamma: optax.Updates
  global_norm: jax.Array
  clip_fraction: jax.Array
  nonfinite_count: jax.Array


@_deprecation.renamed_arguments(beta="norm_decay")
def adagc(lambda_abs: float = 1.0, lambda_rel: float = 1.05, norm_decay: float = 0.98, warmup_steps: int = 100,
          eps: float = 1e-8) -> optax.GradientTransformationExtraArgs:
  r"""AdaGC (Wang et al. 2025, arXiv 2502.11034): per-tensor clipping at an EMA of each tensor's norm.

  For each tensor (leaf) i of the gradient at step k = 1, 2, ...:

  .. math::
    \text{warm-up } (k < W):\quad \hat g_i = \min\Big\{\frac{\lambda_{abs}}{\|g\| + \epsilon}, 1\Big\} g_i,
    \quad \gamma_i \leftarrow \min(\gamma_i, \|\hat g_i\|) \ (\gamma_i = \|\hat g_i\| \text{ at } k = 1),

    \text{then:}\quad \hat g_i = \min\Big\{\frac{\lambda_{rel} \max(\gamma_i, \epsilon)}{\max(\|g_i\|,
    \epsilon)}, 1\Big\} g_i, \quad \gamma_i \leftarrow \beta \gamma_i + (1 - \beta) \|\hat g_i\|,

  W = `warmup_steps`, :math:`\|g\|` the global norm. As `pytorch_optimizer.AdaGC` (4.1.0):
  ``optax.chain(adagc(...), optax.adamw(lr, b1, b2, eps=1e-8, weight_decay=wd))`` gives its trajectory.

  A gradient that is not finite (NaN or inf, or a global norm that overflows) never enters the statistics:
  the step's update is zero, the state is kept, and `clip_stats` counts the step in ``nonfinite_steps``.

  Args:
    lambda_abs: the global-norm bound of the warm-up, > 0.
    lambda_rel: the bound relative to a tensor's EMA norm after warm-up, > 0.
    norm_decay: :math:`\beta`, the EMA decay of the tensors' norms, in [0, 1) (``beta`` before version 0.3).
    warmup_steps: steps of global-norm clipping before the per-tensor rule, >= 0.
    eps: the floor of the norms in the ratios and the global norm's offset, >= 0.

  Returns:
    An `optax.GradientTransformationExtraArgs` with an `AdaGCState`.

  References:
    Wang et al., "AdaGC: Improving Training Stability for Large Language Model Pretraining", arXiv
    2502.11034, 2025.

  Example:
    >>> import jax.numpy as jnp, optax
    >>> from acclip_optax import adagc
    >>> tx = optax.chain(adagc(warmup_steps=10), optax.adamw(1e-3))
    >>> updates, state = tx.update({"w": jnp.ones(3)}, tx.init({"w": jnp.zeros(3)}), {"w": jnp.zeros(3)})
  """
  check_in_range("lambda_abs", lambda_abs, 0.0, math.inf, low_inclusive=False)
  check_in_range("lambda_rel", lambda_rel, 0.0, math.inf, low_inclusive=False)
  check_in_range("norm_decay", norm_decay, 0.0, 1.0)
  warmup_steps = check_steps("warmup_steps", warmup_steps, 0)
  check_in_range("eps", eps, 0.0, math.inf)

  def init_fn(params):
    check_real_floating_leaves("params", params)
    dtype = float_dtype(params)
    return AdaGCState(count=jnp.zeros([], jnp.int32),
                      gamma=jax.tree.map(lambda p: jnp.zeros([], upcast_dtype(p.dtype)),
                                         params),
                      global_norm=jnp.zeros([], dtype), clip_fraction=jnp.zeros([], jnp.float32),
                      nonfinite_count=jnp.zeros([], jnp.int32))

  def update_fn(updates, state, params=None, **extra_args):
    del extra_args
    check_real_floating_leaves("updates", updates)
    check_same_tree("updates", jax.tree.map(lambda g: jnp.zeros([]), updates), "the optimizer state (made by init)",
                    state.gamma)
    check_updates_match_params(updates, params)  # gamma is a scalar per tensor: the params hold the shapes
    step = state.count + 1
    norm, updates = global_norm_apart(updates)
    norm = norm.astype(state.global_norm.dtype)
    in_warmup = step < warmup_steps
    first = state.count == 0
    warmup_scale = jnp.minimum(lambda_abs / (norm + eps), 1.0)

    def clip_leaf(g, gamma):
      g32 = g.astype(gamma.dtype)
      leaf_norm = jnp.sqrt(jnp.sum(jnp.square(g32)))
      ratio = lambda_rel * jnp.maximum(gamma, eps) / jnp.maximum(leaf_norm, eps)
      relative_scale = jnp.where(leaf_norm > 0, jnp.minimum(ratio, 1.0), 1.0)  # 0/0 at eps = 0: leave 0 as 0
      # The reference starts the EMA only after a warm-up step has set gamma (k = 1 when W = 0).
      scale = jnp.where(in_warmup | first, warmup_scale.astype(gamma.dtype), relative_scale)
      clipped_norm = scale * leaf_norm
      warmup_gamma = jnp.where(first, clipped_norm, jnp.minimum(gamma, clipped_norm))
      new_gamma = jnp.where(in_warmup | first, warmup_gamma, gamma + (1 - norm_decay) * (clipped_norm - gamma))
      return (g32 * scale).astype(g.dtype), new_gamma, scale < 1.0

    clipped, gamma, flags = unzip(updates, jax.tree.map(clip_leaf, updates, state.gamma), 3)
    flags = jax.tree.leaves(flags)  # one per tensor: the fraction of tensors clipped
    new_state = AdaGCState(count=optax.safe_increment(state.count), gamma=gamma, global_norm=norm,
                           clip_fraction=fraction(flags, [1] * len(flags)), nonfinite_count=state.nonfinite_count)
    return skip_if_nonfinite(jnp.isfinite(norm), clipped, state, new_state)

  return optax.GradientTransformationExtraArgs(init_fn, update_fn)
