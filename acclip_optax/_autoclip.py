"""AutoClip (Seetharaman et al. 2020): clip the global norm at a percentile of its own history.

A gradient that is not finite (NaN or inf, or a global norm that overflows) never enters the
statistics: the step gets a zero update and the state is kept, counting it in `nonfinite_count`.
"""
from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
import optax

from acclip_optax._common import (
    check_in_range, check_real_floating_leaves, check_steps, check_updates_match_params, float_dtype, global_norm_apart,
    scale_tree, skip_if_nonfinite, torch_clip_scale)


class AutoClipState(NamedTuple):
  """State of `autoclip`.

  Attributes:
    count: int32, updates done.
    norms: a ring buffer of the last `history` pre-clip global norms.
    global_norm: the last update's pre-clip global norm.
    clip_threshold: the percentile the last update was clipped at.
    clipped: 1.0 when the last update was clipped, else 0.0.
    nonfinite_count: int32, steps whose gradient was not finite (zero update, state otherwise kept).
  """
  count: jax.Array
  norms: jax.Array
  global_norm: jax.Array
  clip_threshold: jax.Array
  clipped: jax.Array
  nonfinite_count: jax.Array


def autoclip(percentile: float = 10.0, history: int = 1000) -> optax.GradientTransformationExtraArgs:
  r"""AutoClip (Seetharaman et al. 2020): clip the global norm at a percentile of its own history.

  .. math::
    \tau_k = \mathrm{percentile}_p\big(\|g_{k-h+1}\|, \ldots, \|g_k\|\big), \qquad
    g_k \leftarrow \min\Big\{1, \frac{\tau_k}{\|g_k\| + 10^{-6}}\Big\} g_k,

  over the last h = `history` pre-clip norms, the current one included, with NumPy's default (linear)
  percentile interpolation, and the clip of `torch.nn.utils.clip_grad_norm_`, as the authors' code
  (`np.percentile(grad_history, p)`, then `clip_grad_norm_`). The history is a fixed-size ring buffer
  so the update jits; with `history` at least the number of steps it is the original method, which keeps
  every norm.

  A gradient that is not finite (NaN or inf, or a global norm that overflows) never enters the statistics:
  the step's update is zero, the state is kept, and `clip_stats` counts the step in ``nonfinite_steps``.

  Args:
    percentile: p, in [0, 100].
    history: the number of recent norms kept, >= 1.

  Returns:
    An `optax.GradientTransformationExtraArgs` with an `AutoClipState`.

  References:
    Seetharaman, Wichern, Pardo and Le Roux, "AutoClip: Adaptive Gradient Clipping for Source Separation
    Networks", IEEE MLSP 2020, arXiv 2007.14469.

  Example:
    >>> import jax.numpy as jnp, optax
    >>> from acclip_optax import autoclip
    >>> tx = optax.chain(autoclip(10.0, history=100), optax.sgd(0.1))
    >>> updates, state = tx.update(jnp.ones(3), tx.init(jnp.zeros(3)))
  """
  check_in_range("percentile", percentile, 0.0, 100.0, high_inclusive=True)
  history = check_steps("history", history, 1)

  def init_fn(params):
    check_real_floating_leaves("params", params)
    dtype = float_dtype(params)
    zero = lambda: jnp.zeros([], dtype)  # a new buffer per leaf: a donated state may not repeat one
    return AutoClipState(count=jnp.zeros([], jnp.int32), norms=jnp.zeros([history], dtype),
                         global_norm=zero(), clip_threshold=zero(), clipped=zero(),
                         nonfinite_count=jnp.zeros([], jnp.int32))

  def update_fn(updates, state, params=None, **extra_args):
    del extra_args
    check_real_floating_leaves("updates", updates)
    check_updates_match_params(updates, params)
    norm, updates = global_norm_apart(updates)
    norm = norm.astype(state.norms.dtype)
    size = state.norms.shape[0]
    norms = state.norms.at[state.count % size].set(norm)
    valid = jnp.minimum(state.count + 1, size)
    ordered = jnp.sort(jnp.where(jnp.arange(size) < valid, norms, jnp.inf))
    position = (percentile / 100.0) * (valid - 1).astype(norms.dtype)
    low = jnp.floor(position).astype(jnp.int32)
    high = jnp.minimum(low + 1, valid - 1)
    fraction = position - low
    threshold = ordered[low] + fraction * (ordered[high] - ordered[low])
    scale = torch_clip_scale(norm, threshold)
    new_state = AutoClipState(count=optax.safe_increment(state.count), norms=norms, global_norm=norm,
                              clip_threshold=threshold, clipped=(norm > threshold).astype(norm.dtype),
                              nonfinite_count=state.nonfinite_count)
    return skip_if_nonfinite(jnp.isfinite(norm), scale_tree(updates, scale), state, new_state)

  return optax.GradientTransformationExtraArgs(init_fn, update_fn)
