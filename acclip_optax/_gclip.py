"""Global-norm clipping (GClip, Zhang et al. 2020): `clip_by_scheduled_global_norm`, whose bound may be a
schedule, and the optimizer `gclip`."""
from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax

from acclip_optax._common import (
    check_floating_leaves, check_positive, check_updates_match_params, clipped_sgd, global_norm_apart, value_at)


class ClipByScheduledGlobalNormState(NamedTuple):
  """State of `clip_by_scheduled_global_norm`: the step `count` (for schedules) and the last pre-clip `global_norm`."""
  count: jax.Array
  global_norm: jax.Array


def clip_by_scheduled_global_norm(max_norm: float | jax.Array | Callable[[jax.Array], jax.Array]
                                  ) -> optax.GradientTransformationExtraArgs:
  r"""Global-norm clipping (GClip): :math:`g \leftarrow \min\{1, \tau / \|g\|\}\, g`.

  Unlike `optax.clip_by_global_norm`, the bound may be a schedule of the step count (the theory's
  :math:`\tau_k = G (k+1)^{1/\alpha}`) and the state keeps the pre-clip norm for logging. A zero
  gradient stays zero (no 0/0) and an infinite bound is the identity.

  A gradient with a NaN or inf enters the state as in optax's own rules; wrap the optimizer in
  `optax.apply_if_finite` to skip such steps (the spike-clipping methods skip them themselves).

  Args:
    max_norm: :math:`\tau > 0`, a float or a schedule ``count -> float``.

  Returns:
    An `optax.GradientTransformationExtraArgs` whose state is a `ClipByScheduledGlobalNormState`; its
    ``global_norm`` is :math:`\|g\|_2` of the last update's input (computed in at least float32).

  References:
    Zhang, Karimireddy, Veit, Kim, Reddi, Kumar and Sra, "Why are Adaptive Methods Good for Attention
    Models?", NeurIPS 2020, arXiv 1912.03194 (GClip under heavy-tailed noise).

  Example:
    >>> import jax.numpy as jnp
    >>> from acclip_optax import clip_by_scheduled_global_norm
    >>> tx = clip_by_scheduled_global_norm(1.0)
    >>> updates, state = tx.update(jnp.array([3.0, 4.0]), tx.init(jnp.zeros(2)))
    >>> updates, state.global_norm
    (Array([0.6, 0.8], dtype=float32), Array(5., dtype=float32))
  """
  if not callable(max_norm):
    check_positive("max_norm", max_norm)

  def init_fn(params):
    del params
    return ClipByScheduledGlobalNormState(count=jnp.zeros([], jnp.int32), global_norm=jnp.zeros([], jnp.float32))

  def update_fn(updates, state, params=None, **extra_args):
    del extra_args
    check_floating_leaves("updates", updates)
    check_updates_match_params(updates, params)
    tau = value_at(max_norm, state.count)
    norm, updates = global_norm_apart(updates)  # in at least float32: bf16 sums lose leading digits
    # where, not tau / max(norm, tau): 0/0 at a zero norm and inf/inf at an infinite bound.
    scale = jnp.where(norm > tau, tau / norm, 1.0)
    clipped = jax.tree.map(lambda g: (g * scale).astype(g.dtype), updates)
    state = ClipByScheduledGlobalNormState(count=optax.safe_increment(state.count),
                                           global_norm=norm.astype(jnp.float32))
    return clipped, state

  return optax.GradientTransformationExtraArgs(init_fn, update_fn)


def gclip(learning_rate: optax.ScalarOrSchedule, max_norm: float | jax.Array | Callable[[Any], Any],
          momentum: float | None = None, nesterov: bool = False) -> optax.GradientTransformationExtraArgs:
  r"""SGD with global-norm clipping (GClip): :math:`x_{k+1} = x_k - \eta_k \min\{1, \tau_k/\|g_k\|\} g_k`.

  A gradient with a NaN or inf enters the state as in optax's own rules; wrap the optimizer in
  `optax.apply_if_finite` to skip such steps.

  Args:
    learning_rate: :math:`\eta`, a float or a schedule (e.g. `strongly_convex_lr_schedule`).
    max_norm: :math:`\tau`, a float or a schedule (e.g. `clip_threshold_schedule`).
    momentum: optional momentum decay applied to the clipped gradients (`optax.trace`).
    nesterov: Nesterov momentum instead of heavy ball.

  Returns:
    ``chain(clip_by_scheduled_global_norm, [trace], scale_by_learning_rate)``.

  References:
    Zhang, Karimireddy, Veit, Kim, Reddi, Kumar and Sra, "Why are Adaptive Methods Good for Attention
    Models?", NeurIPS 2020, arXiv 1912.03194 (GClip under heavy-tailed noise).

  Example:
    >>> import jax.numpy as jnp
    >>> from acclip_optax import gclip
    >>> opt = gclip(0.1, max_norm=1.0, momentum=0.9)
    >>> state = opt.init(jnp.zeros(3))
  """
  return clipped_sgd(clip_by_scheduled_global_norm(max_norm), learning_rate, momentum, nesterov)
