"""Optimizers assembled from the transformations: ACClip, the ports' ACClip, and clipped SGD (CClip, GClip)."""
from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import optax

from acclip_optax._validation import check_floating_leaves, check_in_range, check_same_tree
from acclip_optax.transform import (
    Threshold, clip_by_coordinate, clip_by_scheduled_global_norm, scale_by_acclip, scale_by_acclip_ports)

__all__ = ["acclip", "acclip_ports", "cclip", "gclip"]

Mask = Any | Callable[[optax.Params], Any] | None


def acclip(
    learning_rate: optax.ScalarOrSchedule,
    b1: float | jax.Array = 0.9,
    b2: float | jax.Array = 0.99,
    alpha: float | jax.Array = 1.0,
    eps: float | jax.Array = 1e-5,
    weight_decay: float | jax.Array = 0.0,
    mask: Mask = None,
    *,
    bias_correction: bool = False,
    mu_dtype: Any = None,
) -> optax.GradientTransformationExtraArgs:
  r"""ACClip (Zhang et al. 2020, Algorithm 1) with decoupled weight decay.

  .. math::
    x_k = x_{k-1} - \eta_k \left(\hat g_k + \lambda x_{k-1}\right), \qquad
    \hat g_k = \min\left\{\frac{\tau_k}{|m_k| + \epsilon}, 1\right\} m_k,

  with :math:`m_k`, :math:`\tau_k` as in `scale_by_acclip`. The update has the gradient's scale (like
  SGD), so learning rates are SGD-like, not Adam-like.

  Args:
    learning_rate: :math:`\eta`, a float or an optax schedule.
    b1, b2, alpha, eps, bias_correction, mu_dtype: see `scale_by_acclip`.
    weight_decay: :math:`\lambda`, decoupled (AdamW-style) weight decay.
    mask: a pytree of booleans (or a function of the params returning one) selecting the decayed leaves.

  Returns:
    The optimizer ``chain(scale_by_acclip, add_decayed_weights, scale_by_learning_rate)``.

  References:
    Zhang, Karimireddy, Veit, Kim, Reddi, Kumar and Sra, "Why are Adaptive Methods Good for Attention
    Models?", NeurIPS 2020, arXiv 1912.03194, Algorithm 1.

  Example:
    >>> import jax, jax.numpy as jnp, optax
    >>> from acclip_optax import acclip
    >>> params = jnp.array([1.0, -2.0])
    >>> opt = acclip(learning_rate=0.1)
    >>> state = opt.init(params)
    >>> updates, state = opt.update(jax.grad(lambda x: jnp.sum(x ** 2))(params), state, params)
    >>> params = optax.apply_updates(params, updates)
  """
  check_in_range("weight_decay", weight_decay, 0.0, float("inf"))
  return optax.chain(
      scale_by_acclip(b1, b2, alpha, eps, bias_correction=bias_correction, mu_dtype=mu_dtype),
      optax.add_decayed_weights(weight_decay, mask),
      optax.scale_by_learning_rate(learning_rate))


def acclip_ports(
    learning_rate: optax.ScalarOrSchedule,
    b1: float | jax.Array = 0.9,
    b2: float | jax.Array = 0.99,
    alpha: float | jax.Array = 1.0,
    eps: float | jax.Array = 1e-5,
    weight_decay: float | jax.Array = 0.0,
    mask: Mask = None,
    *,
    bias_correction: bool = True,
    mu_dtype: Any = None,
) -> optax.GradientTransformationExtraArgs:
  r"""The public PyTorch ports' ACClip (Adam-normalised clipped momentum), NOT the paper's rule.

  .. math::
    x_k = x_{k-1} - \eta_k \left(u_k + \lambda x_{k-1}\right)

  with :math:`u_k` as in `scale_by_acclip_ports`. MLPerf's Samsung BERT optimizer decays after the step,
  :math:`x \leftarrow (x - \eta u)(1 - \eta\lambda)`, which differs from this by :math:`\eta^2 \lambda u`;
  its global-norm pre-clip is ``optax.chain(optax.clip_by_global_norm(1.0), acclip_ports(...))``.
  Learning rates are Adam-like (the update's magnitude is about 1).

  Args:
    learning_rate: :math:`\eta`, a float or an optax schedule.
    b1, b2, alpha, eps, bias_correction, mu_dtype: see `scale_by_acclip_ports`.
    weight_decay: :math:`\lambda`, decoupled weight decay.
    mask: a pytree of booleans (or a function of the params returning one) selecting the decayed leaves.

  Returns:
    The optimizer ``chain(scale_by_acclip_ports, add_decayed_weights, scale_by_learning_rate)``.

  References:
    Zhang, Karimireddy, Veit, Kim, Reddi, Kumar and Sra, "Why are Adaptive Methods Good for Attention
    Models?", NeurIPS 2020, arXiv 1912.03194. The rule implemented here is that of the public PyTorch ports:
    rivercold/ACClip-Pytorch (``mod=1``) and the MLPerf Training v2.0 Samsung BERT submission
    (``optim/acclip.py``).

  Example:
    >>> import jax.numpy as jnp
    >>> from acclip_optax import acclip_ports
    >>> opt = acclip_ports(learning_rate=1e-4, weight_decay=1e-5)
    >>> state = opt.init(jnp.zeros(3))
  """
  check_in_range("weight_decay", weight_decay, 0.0, float("inf"))
  return optax.chain(
      scale_by_acclip_ports(b1, b2, alpha, eps, bias_correction=bias_correction, mu_dtype=mu_dtype),
      optax.add_decayed_weights(weight_decay, mask),
      optax.scale_by_learning_rate(learning_rate))


def _clipped_sgd(clip: optax.GradientTransformation, learning_rate: optax.ScalarOrSchedule,
                 momentum: float | None, nesterov: bool) -> optax.GradientTransformationExtraArgs:
  """clip, then optional heavy-ball/Nesterov momentum (`optax.trace`), then the learning rate."""
  if momentum is not None:
    check_in_range("momentum", momentum, 0.0, 1.0)
  return optax.chain(
      clip,
      _checked_trace(momentum, nesterov) if momentum is not None else optax.identity(),
      optax.scale_by_learning_rate(learning_rate))


def _checked_trace(momentum: float | jax.Array, nesterov: bool) -> optax.GradientTransformation:
  """`optax.trace` that refuses integer params and updates not shaped like its momentum (optax would
  broadcast them)."""
  trace = optax.trace(decay=momentum, nesterov=nesterov)

  def init_fn(params):
    check_floating_leaves("params", params)
    return trace.init(params)

  def update_fn(updates, state, params=None):
    check_same_tree("updates", updates, "the optimizer state (made by init)", state.trace)
    return trace.update(updates, state, params)

  return optax.GradientTransformation(init_fn, update_fn)


def cclip(learning_rate: optax.ScalarOrSchedule, threshold: Threshold, momentum: float | None = None,
          nesterov: bool = False) -> optax.GradientTransformationExtraArgs:
  r"""SGD with coordinate-wise clipping (CClip): :math:`x_{k+1} = x_k - \eta_k\, \mathrm{clip}(\tau_k, g_k)`.

  Args:
    learning_rate: :math:`\eta`, a float or a schedule (e.g. `strongly_convex_lr_schedule`).
    threshold: :math:`\tau`, see `clip_by_coordinate` (float, per-leaf/per-coordinate pytree, schedule).
    momentum: optional momentum decay applied to the clipped gradients (`optax.trace`).
    nesterov: Nesterov momentum instead of heavy ball.

  Returns:
    ``chain(clip_by_coordinate, [trace], scale_by_learning_rate)``.

  References:
    Zhang, Karimireddy, Veit, Kim, Reddi, Kumar and Sra, "Why are Adaptive Methods Good for Attention
    Models?", NeurIPS 2020, arXiv 1912.03194 (CClip: coordinate-wise clipping).

  Example:
    >>> import jax.numpy as jnp
    >>> from acclip_optax import cclip, clip_threshold_schedule
    >>> opt = cclip(0.01, clip_threshold_schedule(1.0, alpha=1.5))
    >>> state = opt.init(jnp.zeros(3))
  """
  return _clipped_sgd(clip_by_coordinate(threshold), learning_rate, momentum, nesterov)


def gclip(learning_rate: optax.ScalarOrSchedule, max_norm: float | jax.Array | Callable[[Any], Any],
          momentum: float | None = None, nesterov: bool = False) -> optax.GradientTransformationExtraArgs:
  r"""SGD with global-norm clipping (GClip): :math:`x_{k+1} = x_k - \eta_k \min\{1, \tau_k/\|g_k\|\} g_k`.

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
  return _clipped_sgd(clip_by_scheduled_global_norm(max_norm), learning_rate, momentum, nesterov)
