"""ACClip as the public PyTorch ports implement it (clipped momentum, then Adam's normalisation): NOT the
paper's rule, kept to reproduce the ports' results. `scale_by_acclip_ports` and the optimizer `acclip_ports`.
"""
from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax

from acclip_optax._acclip import (
    ACClipThresholdRule, Mask, _acclip_moments, _bias_correction_factor, _cast_like, _check_update_matches,
    _checked_setup, _clip_momentum, _initial_fields, _moment_dtype, _real_zeros_like, _threshold_rule)
from acclip_optax._common import check_in_range, upcast


class ScaleByACClipPortsState(NamedTuple):
  """State of `scale_by_acclip_ports`: `ScaleByACClipState` plus `nu_sq`, the EMA of g^2.
  """
  count: jax.Array
  mu: optax.Updates
  nu: optax.Updates
  nu_sq: optax.Updates
  threshold_rule: ACClipThresholdRule


def _abs_squared(g: jax.Array) -> jax.Array:
  """|g|^2, real: g^2 for real g, re^2 + im^2 for complex g."""
  if jnp.issubdtype(g.dtype, jnp.complexfloating):
    return jnp.square(g.real) + jnp.square(g.imag)
  return jnp.square(g)


def scale_by_acclip_ports(
    b1: float | jax.Array = 0.9,
    b2: float | jax.Array = 0.99,
    alpha: float | jax.Array = 1.0,
    eps: float | jax.Array = 1e-5,
    *,
    bias_correction: bool = True,
    mu_dtype: Any = None,
) -> optax.GradientTransformationExtraArgs:
  r"""ACClip as the public PyTorch ports implement it: clipped momentum, then Adam's normalisation.

  This is NOT the paper's rule (see `scale_by_acclip`). It is the rule of rivercold/ACClip-Pytorch with
  ``mod=1`` and of the MLPerf Training v2.0 Samsung BERT optimizer (``optim/acclip.py``):

  .. math::
    m_k = b_1 m_{k-1} + (1-b_1) g_k, \quad t_k = b_2 t_{k-1} + (1-b_2) |g_k|^\alpha, \quad
    v_k = b_2 v_{k-1} + (1-b_2) g_k^2,

    u_k = \frac{1}{c_1} \cdot
      \frac{\min\{t_k^{1/\alpha} / (|m_k| + \epsilon), 1\}\, m_k}{\sqrt{b_2 v_k / c_2} + \epsilon},

  with :math:`c_1 = 1 - b_1^k`, :math:`c_2 = 1 - b_2^k` when ``bias_correction`` (MLPerf) and
  :math:`c_1 = c_2 = 1` otherwise (rivercold). Choices, taken from the two sources:

  * the clip uses the uncorrected m and t in both ports; MLPerf corrects only the step (by :math:`c_1`)
    and v (by :math:`c_2`);
  * the square root holds :math:`b_2 v` (both ports multiply v by b2 once more), eps sits outside it;
  * defaults follow MLPerf: alpha = 1, b1 = 0.9, b2 = 0.99, eps = 1e-5 (rivercold's default alpha was 2);
  * weight decay and the MLPerf global-norm pre-clip (1.0) are not part of this transformation: chain
    `optax.clip_by_global_norm` before it and `optax.add_decayed_weights` after it (as `acclip_ports` does).

  The update has Adam's scale (about lr per step), not the gradient's scale of the paper's rule.

  A gradient with a NaN or inf enters the state as in optax's own rules; wrap the optimizer in
  `optax.apply_if_finite` to skip such steps (the spike-clipping methods skip them themselves).

  Args:
    b1: decay of the momentum, in [0, 1).
    b2: decay of the EMAs of :math:`|g|^\alpha` and :math:`g^2`, in [0, 1).
    alpha: the moment order of the clipping threshold, > 0.
    eps: added to :math:`|m|` in the clip ratio and to the square root, >= 0.
    bias_correction: MLPerf's bias correction (True) or rivercold's none (False).
    mu_dtype: dtype of the momentum; default the params' dtype.

  Returns:
    An `optax.GradientTransformationExtraArgs` whose state is a `ScaleByACClipPortsState` (three
    params-sized buffers).

  References:
    Zhang, Karimireddy, Veit, Kim, Reddi, Kumar and Sra, "Why are Adaptive Methods Good for Attention
    Models?", NeurIPS 2020, arXiv 1912.03194. The rule implemented here is that of the public PyTorch ports:
    rivercold/ACClip-Pytorch (``mod=1``) and the MLPerf Training v2.0 Samsung BERT submission
    (``optim/acclip.py``).

  Example:
    >>> import jax.numpy as jnp, optax
    >>> from acclip_optax import scale_by_acclip_ports
    >>> tx = optax.chain(scale_by_acclip_ports(), optax.scale(-1e-3))
    >>> updates, state = tx.update(jnp.array([0.5, 100.0]), tx.init(jnp.zeros(2)))
  """
  mu_dtype, moment_of, root_of = _checked_setup(b1, b2, alpha, eps, mu_dtype)

  def init_fn(params):
    return ScaleByACClipPortsState(**_initial_fields(params, mu_dtype, alpha, eps), nu_sq=_real_zeros_like(params))

  def update_fn(updates, state, params=None, **extra_args):
    del params, extra_args
    _check_update_matches(updates, state.mu)
    count = optax.safe_increment(state.count)
    if bias_correction:
      dtype = _moment_dtype(jax.tree.leaves(updates))
      step_scale = 1.0 / _bias_correction_factor(b1, count, dtype)
      sq_scale = b2 / _bias_correction_factor(b2, count, dtype)
    else:
      step_scale, sq_scale = 1.0, b2
    mu, nu = _acclip_moments(updates, state.mu, state.nu, b1, b2, moment_of)
    nu_sq = jax.tree.map(lambda g, v: b2 * upcast(v) + (1 - b2) * _abs_squared(upcast(g)), updates, state.nu_sq)

    def direction(g, m, t, v):
      denominator = jnp.sqrt(sq_scale * v) + eps
      # v = 0 means every gradient so far was 0, so m = 0 too: the step is 0, not 0/0 (eps = 0).
      clipped = step_scale * _clip_momentum(m, root_of(t), eps)
      return (clipped / jnp.where(denominator > 0, denominator, 1)).astype(g.dtype)

    state = ScaleByACClipPortsState(
        count=count, mu=_cast_like(mu, state.mu), nu=_cast_like(nu, state.nu), nu_sq=_cast_like(nu_sq, state.nu_sq),
        threshold_rule=_threshold_rule(alpha, eps, 1.0, 1.0))
    return jax.tree.map(direction, updates, mu, nu, nu_sq), state

  return optax.GradientTransformationExtraArgs(init_fn, update_fn)


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

  A gradient with a NaN or inf enters the state as in optax's own rules; wrap the optimizer in
  `optax.apply_if_finite` to skip such steps.

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
