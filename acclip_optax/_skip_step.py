"""Skip-step (OLMo-core, levanter): skip the step when the gradient norm or the loss spikes.
"""
from __future__ import annotations

import math
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax

from acclip_optax._common import (
    check_in_range, check_real_floating_leaves, check_same_tree, check_steps, check_updates_match_params, float_dtype,
    global_norm_apart)


class SkipStepState(NamedTuple):
  """State of `skip_step_on_spikes`.

  Attributes:
    count: int32, updates seen (skipped or not).
    inner_state: the wrapped transformation's state (unchanged by a skipped step).
    grad_norms, losses: ring buffers of the last `window` recorded global norms and losses.
    num_recorded: int32, steps recorded in them (a step with a non-finite norm or loss is not recorded).
    skip_count: int32, steps skipped so far.
    skipped: 1.0 when the last step was skipped, else 0.0.
  """
  count: jax.Array
  inner_state: optax.OptState
  grad_norms: jax.Array
  losses: jax.Array
  num_recorded: jax.Array
  skip_count: jax.Array
  skipped: jax.Array


def _is_outlier(value: jax.Array, history: jax.Array, num_valid: jax.Array, sigma: Any) -> jax.Array:
  """value - mean > sigma * std over the first `num_valid` entries of `history` (std with ddof = 1).

  A non-finite value is an outlier (the comparison with it is false, as in OLMo-core's test).
  """
  valid = jnp.arange(history.shape[0]) < num_valid
  count = jnp.maximum(num_valid, 2).astype(history.dtype)
  mean = jnp.sum(jnp.where(valid, history, 0)) / jnp.maximum(num_valid, 1).astype(history.dtype)
  std = jnp.sqrt(jnp.sum(jnp.where(valid, jnp.square(history - mean), 0)) / (count - 1))
  return ~(value - mean <= sigma * std)


def skip_step_on_spikes(inner: optax.GradientTransformation, window: int = 128,
                        sigma: float = 6.0) -> optax.GradientTransformationExtraArgs:
  r"""Skip the step (zero update, inner state unchanged) when the gradient norm or the loss spikes.

  With :math:`n_k = \|g_k\|`, the loss :math:`\ell_k` (when ``update(..., loss=...)`` is given it) and
  :math:`\bar x, s_x` the mean and standard deviation (ddof = 1) of the last w = `window` recorded values:

  .. math::
    \text{skip}_k = \big(n_k - \bar n > \sigma s_n\big) \lor \big(\ell_k - \bar\ell > \sigma s_\ell\big),
    \qquad (u_k, S_k) = \begin{cases} (0, S_{k-1}) & \text{skip}_k \\ \mathrm{inner}(g_k, S_{k-1}) &
    \text{else} \end{cases}

  tested once the window holds max(2, w // 2 - 1) earlier steps (before that only a non-finite step is
  skipped). Every step's finite norm and loss enter the window, skipped or not. As OLMo-core's
  `SkipStepOptimizer` (rolling interval 128, sigma factor 6; a value that is not finite fails the test and
  is skipped) and levanter's `SkipStepConfig`, with three differences: a non-finite norm or loss is not
  recorded (so one NaN does not make every later mean NaN); it is skipped from the first step on, before
  the test starts too (OLMo-core passes it there, and it would poison the inner state); and at least 2
  earlier values are needed (OLMo-core's test starts at 1 when w < 6, where the ddof = 1 deviation of one
  value is NaN and every step is skipped).

  Pass the loss at every step or at none: without it, only the norm is tested. Other extra arguments go
  to `inner`.

  Args:
    inner: the transformation to wrap (any `optax.GradientTransformation`).
    window: w, the number of recent steps the statistics cover, >= 2.
    sigma: the number of standard deviations above the mean that counts as a spike, >= 0.

  Returns:
    An `optax.GradientTransformationExtraArgs` with a `SkipStepState`; `clip_stats` reports its
    ``skip_count`` and ``skipped``.

  References:
    OLMo-core `olmo_core.optim.SkipStepOptimizer`; levanter `SkipStepConfig`. The OLMo 2 report (Team OLMo
    et al., "2 OLMo 2 Furious", arXiv 2501.00656, 2025) describes skipping steps on loss and norm spikes.

  Example:
    >>> import jax.numpy as jnp, optax
    >>> from acclip_optax import skip_step_on_spikes
    >>> tx = skip_step_on_spikes(optax.adamw(1e-3), window=16)
    >>> state = tx.init(jnp.zeros(3))
    >>> updates, state = tx.update(jnp.ones(3), state, jnp.zeros(3), loss=jnp.asarray(2.0))
  """
  window = check_steps("window", window, 2)
  check_in_range("sigma", sigma, 0.0, math.inf)
  inner = optax.with_extra_args_support(inner)

  def init_fn(params):
    check_real_floating_leaves("params", params)
    dtype = float_dtype(params)
    zero_count = lambda: jnp.zeros([], jnp.int32)  # a new buffer per leaf: a donated state may not repeat one
    return SkipStepState(count=zero_count(), inner_state=inner.init(params), grad_norms=jnp.zeros([window], dtype),
                         losses=jnp.zeros([window], dtype), num_recorded=zero_count(), skip_count=zero_count(),
                         skipped=jnp.zeros([], dtype))

  def update_fn(updates, state, params=None, *, loss=None, **extra_args):
    check_real_floating_leaves("updates", updates)
    check_updates_match_params(updates, params)  # before the inner transformation, which may say it less clearly
    dtype = state.grad_norms.dtype
    size = state.grad_norms.shape[0]
    norm, updates = global_norm_apart(updates)
    norm = norm.astype(dtype)
    loss = None if loss is None else jnp.asarray(loss).astype(dtype)
    num_valid = jnp.minimum(state.num_recorded, size)
    testing = num_valid >= max(2, size // 2 - 1)
    spike = _is_outlier(norm, state.grad_norms, num_valid, sigma)
    finite = jnp.isfinite(norm)
    if loss is not None:
      spike = spike | _is_outlier(loss, state.losses, num_valid, sigma)
      finite = finite & jnp.isfinite(loss)
    skip = (testing & spike) | ~finite
    try:
      inner_updates, inner_state = inner.update(updates, state.inner_state, params, **extra_args)
    except (ValueError, TypeError) as error:
      # Without params nothing above compared the updates with the state: JAX's words for another tree or
      # shape come without our name. JAX's own errors (a traced value used as a bool, ...) pass unchanged.
      if params is not None or type(error).__module__.startswith("jax"):
        raise
      raise ValueError(f"skip_step_on_spikes: the wrapped transformation's update failed ({error}); if the "
                       "updates' tree or shapes differ from the params given to init, pass updates shaped like "
                       "them") from error
    # A transformation's updates are shaped like the updates it is given: anything else was broadcast against
    # a state of other shapes.
    check_same_tree("the wrapped transformation's updates", inner_updates, "the updates given to it", updates)
    updates = jax.tree.map(lambda u: jnp.where(skip, jnp.zeros_like(u), u), inner_updates)
    inner_state = optax.tree.where(skip, state.inner_state, inner_state)
    slot = state.num_recorded % size
    record = lambda buffer, value: jnp.where(finite, buffer.at[slot].set(value), buffer)
    state = SkipStepState(
        count=optax.safe_increment(state.count), inner_state=inner_state,
        grad_norms=record(state.grad_norms, norm),
        losses=state.losses if loss is None else record(state.losses, loss),
        num_recorded=jnp.where(finite, optax.safe_increment(state.num_recorded), state.num_recorded),
        skip_count=jnp.where(skip, optax.safe_increment(state.skip_count), state.skip_count),
        skipped=skip.astype(dtype))
    return updates, state

  return optax.GradientTransformationExtraArgs(init_fn, update_fn)
