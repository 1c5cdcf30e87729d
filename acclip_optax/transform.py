"""Gradient transformations of Zhang et al. (2020): ACClip, its PyTorch ports' variant, CClip and GClip.

Each is an `optax.GradientTransformationExtraArgs` with a NamedTuple state of arrays only, so it composes
with `optax.chain`, `optax.inject_hyperparams`, `optax.masked`, `optax.MultiSteps` and
`optax.apply_if_finite`, and checkpoints like any optax state.
"""
from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax

from acclip_optax._common import global_norm_apart
from acclip_optax._validation import (
    check_floating_dtype, check_floating_leaves, check_in_range, check_positive, check_same_tree,
    concrete_value)

__all__ = [
  "ACClipThresholdRule",
  "ClipByCoordinateState",
  "ClipByScheduledGlobalNormState",
  "ScaleByACClipPortsState",
  "ScaleByACClipState",
  "acclip_clip_fraction",
  "clip_by_coordinate",
  "clip_by_scheduled_global_norm",
  "scale_by_acclip",
  "scale_by_acclip_ports",
]

Threshold = float | jax.Array | optax.Params | Callable[[jax.Array], jax.Array]

# Above this, |g|^alpha by repeated multiplication loses to exp-log.
_MAX_MULTIPLIED_POWER = 4


class ACClipThresholdRule(NamedTuple):
  """Float32 scalars of the last update's clip test, so `clip_stats` can recompute it from mu and nu.

  A coordinate was clipped when ``(nu * nu_scale) ** (1 / alpha) < |mu * mu_scale| + eps``. Keeping these
  four scalars instead of a clip count keeps the update a single fused element-wise pass: a reduction
  inside the update costs XLA its fusion (measured in docs/benchmarks.md).

  References:
    Zhang, Karimireddy, Veit, Kim, Reddi, Kumar and Sra, "Why are Adaptive Methods Good for Attention
    Models?", NeurIPS 2020, arXiv 1912.03194, Algorithm 1.
  """
  alpha: jax.Array
  eps: jax.Array
  mu_scale: jax.Array
  nu_scale: jax.Array


class ScaleByACClipState(NamedTuple):
  """State of `scale_by_acclip`.

  Attributes:
    count: int32 scalar, the number of updates done so far.
    mu: the momentum m_k (in `mu_dtype` when given).
    nu: the EMA of ``|g| ** alpha``, i.e. ``tau_k ** alpha``.
    threshold_rule: the last clip test's scalars (read by `clip_stats`).

  References:
    Zhang, Karimireddy, Veit, Kim, Reddi, Kumar and Sra, "Why are Adaptive Methods Good for Attention
    Models?", NeurIPS 2020, arXiv 1912.03194, Algorithm 1.
  """
  count: jax.Array
  mu: optax.Updates
  nu: optax.Updates
  threshold_rule: ACClipThresholdRule


class ScaleByACClipPortsState(NamedTuple):
  """State of `scale_by_acclip_ports`: `ScaleByACClipState` plus `nu_sq`, the EMA of g^2.

  References:
    Zhang, Karimireddy, Veit, Kim, Reddi, Kumar and Sra, "Why are Adaptive Methods Good for Attention
    Models?", NeurIPS 2020, arXiv 1912.03194. The rule implemented here is that of the public PyTorch ports:
    rivercold/ACClip-Pytorch (``mod=1``) and the MLPerf Training v2.0 Samsung BERT submission
    (``optim/acclip.py``).
  """
  count: jax.Array
  mu: optax.Updates
  nu: optax.Updates
  nu_sq: optax.Updates
  threshold_rule: ACClipThresholdRule


class ClipByCoordinateState(NamedTuple):
  """State of `clip_by_coordinate`: the step `count` (for schedules) and the last `clip_fraction`.

  References:
    Zhang, Karimireddy, Veit, Kim, Reddi, Kumar and Sra, "Why are Adaptive Methods Good for Attention
    Models?", NeurIPS 2020, arXiv 1912.03194 (CClip: coordinate-wise clipping).
  """
  count: jax.Array
  clip_fraction: jax.Array


class ClipByScheduledGlobalNormState(NamedTuple):
  """State of `clip_by_scheduled_global_norm`: the step `count` (for schedules) and the last pre-clip `global_norm`.

  References:
    Zhang, Karimireddy, Veit, Kim, Reddi, Kumar and Sra, "Why are Adaptive Methods Good for Attention
    Models?", NeurIPS 2020, arXiv 1912.03194 (GClip under heavy-tailed noise).
  """
  count: jax.Array
  global_norm: jax.Array


def _check_moment_hyperparameters(b1: Any, b2: Any, alpha: Any, eps: Any, mu_dtype: Any) -> None:
  if mu_dtype is not None:
    check_floating_dtype("mu_dtype", mu_dtype)
  check_in_range("b1", b1, 0.0, 1.0)
  check_in_range("b2", b2, 0.0, 1.0)
  check_in_range("alpha", alpha, 0.0, float("inf"), low_inclusive=False)
  check_in_range("eps", eps, 0.0, float("inf"))


def _static_alpha(alpha: Any) -> float | None:
  """alpha as a Python float when it is a concrete scalar (selects the pow-free paths), else None."""
  concrete = concrete_value(alpha)
  return None if concrete is None or concrete.shape else float(concrete)


def _alpha_power_fns(alpha: Any) -> tuple[Callable[[jax.Array], jax.Array],
                                          Callable[[jax.Array], jax.Array]]:
  """(g -> |g|^alpha, t -> t^(1/alpha)) for t >= 0, with as few transcendentals as alpha allows.

  A concrete half-integer alpha (1, 1.5, 2, ...) gets |g|^alpha from multiplications and at most one
  sqrt; alpha 1 and 2 get their roots as the identity and sqrt. Other powers use exp(p * log x), about
  twice as fast as XLA's pow on CPU, mapping 0 to 0 through log(0) = -inf.
  """
  exp_log_power = lambda x, p: jnp.exp(p * jnp.log(x))
  static = _static_alpha(alpha)
  if static is None or not (2 * static).is_integer() or static > _MAX_MULTIPLIED_POWER:
    return (lambda g: exp_log_power(jnp.abs(g), alpha)), (lambda t: exp_log_power(t, 1.0 / alpha))
  whole, has_half = int(static), not static.is_integer()

  def moment_of(g):
    magnitude = jnp.abs(g)
    half_power = jnp.sqrt(magnitude) if has_half else None
    if whole == 0:
      return half_power
    whole_power = jax.lax.integer_pow(magnitude, whole) if whole > 1 else magnitude
    return whole_power * half_power if has_half else whole_power

  roots = {1.0: lambda t: t, 2.0: jnp.sqrt}
  return moment_of, roots.get(static, lambda t: exp_log_power(t, 1.0 / static))


def _bias_correction_factor(decay: Any, count: jax.Array, dtype: Any) -> jax.Array:
  """1 - decay^count in `dtype`, the moments' dtype (at least float32: bf16 would round decay^count to 1)."""
  return 1.0 - jnp.asarray(decay, dtype) ** count.astype(dtype)


def _moment_dtype(leaves: list[jax.Array]) -> Any:
  """The real dtype the moment math runs in: the widest of float32 and the leaves' (real parts') dtypes."""
  return jnp.result_type(jnp.float32, *[_real_dtype(leaf.dtype) for leaf in leaves])


def _real_dtype(dtype: Any) -> Any:
  """float32 for complex64, float64 for complex128, the dtype itself otherwise."""
  return jnp.finfo(dtype).dtype if jnp.issubdtype(dtype, jnp.complexfloating) else jnp.dtype(dtype)


def _real_zeros_like(params: optax.Params) -> optax.Params:
  """Zeros shaped and sharded like the params, in their real dtype (the EMAs of |g|^alpha and |g|^2 are real).

  `zeros_like` keeps each param's sharding (`zeros(shape, dtype)` would replicate a sharded model's state).
  """
  return jax.tree.map(lambda p: jnp.zeros_like(p, dtype=_real_dtype(jnp.result_type(p))), params)


def _abs_squared(g: jax.Array) -> jax.Array:
  """|g|^2, real: g^2 for real g, re^2 + im^2 for complex g."""
  if jnp.issubdtype(g.dtype, jnp.complexfloating):
    return jnp.square(g.real) + jnp.square(g.imag)
  return jnp.square(g)


def _check_momentum_init(params: optax.Params, mu_dtype: Any) -> None:
  """TypeError for integer params, or a real mu_dtype that would drop complex params' imaginary parts."""
  check_floating_leaves("params", params)
  if mu_dtype is not None and not jnp.issubdtype(mu_dtype, jnp.complexfloating):
    for path, leaf in jax.tree_util.tree_flatten_with_path(params)[0]:
      if jnp.issubdtype(jnp.result_type(leaf), jnp.complexfloating):
        raise TypeError(f"mu_dtype={jnp.dtype(mu_dtype).name} cannot hold the complex momentum of "
                        f"params{jax.tree_util.keystr(path)}; use a complex mu_dtype or None")


def _check_update_matches(updates: optax.Updates, mu: optax.Updates) -> None:
  """TypeError for integer updates; ValueError for updates not shaped like the params of init."""
  check_floating_leaves("updates", updates)
  check_same_tree("updates", updates, "the optimizer state (made by init)", mu)


def _leaves_like(updates: optax.Updates, *trees: optax.Updates) -> tuple[Any, list[list[Any]]]:
  """The treedef of `updates` (None leaves dropped) and the matching leaf lists of each tree."""
  leaves, treedef = jax.tree.flatten(updates)
  return treedef, [leaves] + [treedef.flatten_up_to(tree) for tree in trees]


def _fraction(clipped_counts: list[jax.Array], sizes: list[int]) -> jax.Array:
  """The fraction of clipped coordinates, from per-leaf int32 counts (float32: no int32 overflow)."""
  total = sum(sizes)
  if not total:
    return jnp.zeros([], jnp.float32)
  return sum(c.astype(jnp.float32) for c in clipped_counts) / jnp.float32(total)


def _acclip_moments(g32: jax.Array, mu: jax.Array, nu: jax.Array, b1: Any, b2: Any,
                    moment_of: Callable[[jax.Array], jax.Array]) -> tuple[jax.Array, jax.Array]:
  """Algorithm 1's EMAs, in at least float32: m = b1 m + (1 - b1) g and t = b2 t + (1 - b2) |g|^alpha."""
  return b1 * _upcast(mu) + (1 - b1) * g32, b2 * _upcast(nu) + (1 - b2) * moment_of(g32)


def _clip_momentum(m_hat: jax.Array, tau: jax.Array, eps: Any) -> jax.Array:
  """min(tau / (|m| + eps), 1) * m, with the factor 1 where tau = |m| + eps = 0 (eps = 0, m = 0)."""
  magnitude = jnp.abs(m_hat) + eps
  return jnp.where(tau < magnitude, tau / magnitude, 1) * m_hat


def _upcast(x: jax.Array) -> jax.Array:
  """x in at least float32: low-precision (bf16) leaves keep their dtype in the state, not in the math."""
  return x.astype(jnp.promote_types(x.dtype, jnp.float32))


def _threshold_rule(alpha: Any, eps: Any, mu_scale: Any, nu_scale: Any) -> ACClipThresholdRule:
  as_scalar = lambda x: jnp.asarray(x, jnp.float32).reshape(())
  return ACClipThresholdRule(as_scalar(alpha), as_scalar(eps), as_scalar(mu_scale), as_scalar(nu_scale))


def acclip_clip_fraction(state: ScaleByACClipState | ScaleByACClipPortsState) -> jax.Array:
  r"""The fraction of coordinates ACClip clipped at its last update, recomputed from its state.

  Counts the coordinates whose momentum the clip shrank: :math:`\tau < |\hat m| + \epsilon` and
  :math:`\hat m \ne 0`. Costs one read of mu and nu. With ``mu_dtype=bfloat16`` the test sees the
  stored (rounded) momentum, so a coordinate at the border may count differently from the update's own.

  Args:
    state: a `ScaleByACClipState` or `ScaleByACClipPortsState`.

  Returns:
    A float32 scalar in [0, 1] (0 before the first update: the momentum is zero).

  References:
    Zhang, Karimireddy, Veit, Kim, Reddi, Kumar and Sra, "Why are Adaptive Methods Good for Attention
    Models?", NeurIPS 2020, arXiv 1912.03194, Algorithm 1.
  """
  rule = state.threshold_rule
  mus, nus = jax.tree.leaves(state.mu), jax.tree.leaves(state.nu)
  counts = []
  for mu, nu in zip(mus, nus):
    m_hat = jnp.abs(mu).astype(jnp.float32) * rule.mu_scale  # |m|: the modulus for complex momentum
    t_hat = nu.astype(jnp.float32) * rule.nu_scale
    # The update's own roots for alpha 1 and 2 (exact), its exp-log form for any other alpha.
    tau = jnp.where(rule.alpha == 1, t_hat,
                    jnp.where(rule.alpha == 2, jnp.sqrt(t_hat), jnp.exp(jnp.log(t_hat) / rule.alpha)))
    # A zero momentum is left unchanged by the clip even where the factor is below 1.
    clipped = (tau < m_hat + rule.eps) & (m_hat != 0)
    counts.append(jnp.sum(clipped, dtype=jnp.int32))
  return _fraction(counts, [mu.size for mu in mus])


def scale_by_acclip(
    b1: float | jax.Array = 0.9,
    b2: float | jax.Array = 0.99,
    alpha: float | jax.Array = 1.0,
    eps: float | jax.Array = 1e-5,
    *,
    bias_correction: bool = False,
    mu_dtype: Any = None,
) -> optax.GradientTransformationExtraArgs:
  r"""Adaptive coordinate-wise clipping of the momentum (ACClip, Zhang et al. 2020, Algorithm 1).

  Element-wise, with :math:`m_0 = t_0 = 0`:

  .. math::
    m_k = b_1 m_{k-1} + (1 - b_1) g_k, \quad t_k = b_2 t_{k-1} + (1 - b_2) |g_k|^\alpha, \quad
    \tau_k = t_k^{1/\alpha}, \quad
    \hat g_k = \min\left\{\frac{\tau_k}{|m_k| + \epsilon}, 1\right\} m_k .

  The momentum is clipped, not the gradient; there is no division by a second moment. With
  ``bias_correction=True`` the clip uses :math:`m_k / (1 - b_1^k)` and :math:`t_k / (1 - b_2^k)` (the paper
  has no bias correction: early on :math:`t_k` is small, which clips more, like a warm-up). Like
  `optax.scale_by_adam` it returns a descent direction with the gradient's sign and scale; the alias
  `acclip` applies the learning rate. alpha = 1 needs no power and alpha = 2 only a square root; 1.5
  costs a sqrt and one exp-log root, other values two exp-log powers per coordinate, and so does a
  traced alpha: with `inject_hyperparams` pass ``static_args=("alpha",)`` to keep the fast paths.

  A gradient with a NaN or inf enters the state as in optax's own rules; wrap the optimizer in
  `optax.apply_if_finite` to skip such steps (the spike-clipping methods skip them themselves).

  Args:
    b1: decay of the momentum, in [0, 1).
    b2: decay of the EMA of :math:`|g|^\alpha`, in [0, 1).
    alpha: the moment order, > 0; the paper uses 1.
    eps: added to :math:`|m|` in the clip ratio, >= 0.
    bias_correction: divide m and t by :math:`1 - b^k` inside the clip.
    mu_dtype: dtype of the momentum (e.g. ``jnp.bfloat16`` to save memory); default the params' dtype.

  Returns:
    An `optax.GradientTransformationExtraArgs` whose state is a `ScaleByACClipState`. The fraction of
    coordinates clipped (:math:`\tau_k < |m_k| + \epsilon`) is recomputed from it by `clip_stats`.

  References:
    Zhang, Karimireddy, Veit, Kim, Reddi, Kumar and Sra, "Why are Adaptive Methods Good for Attention
    Models?", NeurIPS 2020, arXiv 1912.03194, Algorithm 1.

  Example:
    >>> import jax.numpy as jnp, optax
    >>> from acclip_optax import scale_by_acclip
    >>> tx = optax.chain(scale_by_acclip(), optax.scale(-0.1))
    >>> params = jnp.array([1.0, -2.0])
    >>> updates, state = tx.update(jnp.array([0.5, 100.0]), tx.init(params))
  """
  _check_moment_hyperparameters(b1, b2, alpha, eps, mu_dtype)
  mu_dtype = None if mu_dtype is None else jax.dtypes.canonicalize_dtype(mu_dtype)
  moment_of, root_of = _alpha_power_fns(alpha)

  def init_fn(params):
    _check_momentum_init(params, mu_dtype)
    return ScaleByACClipState(
        count=jnp.zeros([], jnp.int32),
        mu=optax.tree.zeros_like(params, dtype=mu_dtype),
        nu=_real_zeros_like(params),
        threshold_rule=_threshold_rule(alpha, eps, 1.0, 1.0))

  def update_fn(updates, state, params=None, **extra_args):
    del params, extra_args
    _check_update_matches(updates, state.mu)
    count = optax.safe_increment(state.count)
    treedef, (grads, mus, nus) = _leaves_like(updates, state.mu, state.nu)
    if bias_correction:
      dtype = _moment_dtype(grads)
      mu_scale = 1.0 / _bias_correction_factor(b1, count, dtype)
      nu_scale = 1.0 / _bias_correction_factor(b2, count, dtype)
    else:
      mu_scale = nu_scale = 1.0
    new_updates, new_mus, new_nus = [], [], []
    for g, mu, nu in zip(grads, mus, nus):
      g32 = _upcast(g)
      m, t = _acclip_moments(g32, mu, nu, b1, b2, moment_of)
      if bias_correction:
        direction = _clip_momentum(m * mu_scale, root_of(t * nu_scale), eps)
      else:
        direction = _clip_momentum(m, root_of(t), eps)
      new_updates.append(direction.astype(g.dtype))
      new_mus.append(m.astype(mu.dtype))
      new_nus.append(t.astype(nu.dtype))
    state = ScaleByACClipState(
        count=count, mu=treedef.unflatten(new_mus), nu=treedef.unflatten(new_nus),
        threshold_rule=_threshold_rule(alpha, eps, mu_scale, nu_scale))
    return treedef.unflatten(new_updates), state

  return optax.GradientTransformationExtraArgs(init_fn, update_fn)


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
  _check_moment_hyperparameters(b1, b2, alpha, eps, mu_dtype)
  mu_dtype = None if mu_dtype is None else jax.dtypes.canonicalize_dtype(mu_dtype)
  moment_of, root_of = _alpha_power_fns(alpha)

  def init_fn(params):
    _check_momentum_init(params, mu_dtype)
    return ScaleByACClipPortsState(
        count=jnp.zeros([], jnp.int32),
        mu=optax.tree.zeros_like(params, dtype=mu_dtype),
        nu=_real_zeros_like(params),
        nu_sq=_real_zeros_like(params),
        threshold_rule=_threshold_rule(alpha, eps, 1.0, 1.0))

  def update_fn(updates, state, params=None, **extra_args):
    del params, extra_args
    _check_update_matches(updates, state.mu)
    count = optax.safe_increment(state.count)
    treedef, (grads, mus, nus, nu_sqs) = _leaves_like(updates, state.mu, state.nu, state.nu_sq)
    if bias_correction:
      dtype = _moment_dtype(grads)
      step_scale = 1.0 / _bias_correction_factor(b1, count, dtype)
      sq_scale = b2 / _bias_correction_factor(b2, count, dtype)
    else:
      step_scale, sq_scale = 1.0, b2
    new_updates, new_mus, new_nus, new_nu_sqs = [], [], [], []
    for g, mu, nu, nu_sq in zip(grads, mus, nus, nu_sqs):
      g32 = _upcast(g)
      m, t = _acclip_moments(g32, mu, nu, b1, b2, moment_of)
      v = b2 * _upcast(nu_sq) + (1 - b2) * _abs_squared(g32)
      denominator = jnp.sqrt(sq_scale * v) + eps
      # v = 0 means every gradient so far was 0, so m = 0 too: the step is 0, not 0/0 (eps = 0).
      direction = step_scale * _clip_momentum(m, root_of(t), eps) / jnp.where(denominator > 0, denominator, 1)
      new_updates.append(direction.astype(g.dtype))
      new_mus.append(m.astype(mu.dtype))
      new_nus.append(t.astype(nu.dtype))
      new_nu_sqs.append(v.astype(nu_sq.dtype))
    state = ScaleByACClipPortsState(
        count=count, mu=treedef.unflatten(new_mus), nu=treedef.unflatten(new_nus),
        nu_sq=treedef.unflatten(new_nu_sqs), threshold_rule=_threshold_rule(alpha, eps, 1.0, 1.0))
    return treedef.unflatten(new_updates), state

  return optax.GradientTransformationExtraArgs(init_fn, update_fn)


def _value_at(schedule_or_value: Any, count: jax.Array) -> Any:
  return schedule_or_value(count) if callable(schedule_or_value) else schedule_or_value


def clip_by_coordinate(threshold: Threshold) -> optax.GradientTransformationExtraArgs:
  r"""Coordinate-wise clipping (CClip): :math:`g_i \leftarrow \min\{1, \tau_i / |g_i|\}\, g_i`.

  Equivalently :math:`g_i \leftarrow \mathrm{clip}(g_i, -\tau_i, \tau_i)`: each coordinate keeps its sign
  and its magnitude is capped at :math:`\tau_i`. An infinite threshold is the identity. Complex
  coordinates keep their phase and have their modulus :math:`|g_i|` capped.

  A gradient with a NaN or inf enters the state as in optax's own rules; wrap the optimizer in
  `optax.apply_if_finite` to skip such steps (the spike-clipping methods skip them themselves).

  Args:
    threshold: :math:`\tau > 0`: a float; a pytree shaped like the params whose leaves are scalars (one
      threshold per leaf) or arrays (one per coordinate); or a schedule ``count -> float`` (e.g.
      `clip_threshold_schedule`), evaluated at the number of updates done so far.

  Returns:
    An `optax.GradientTransformationExtraArgs` whose state is a `ClipByCoordinateState`; its
    ``clip_fraction`` is the fraction of coordinates with :math:`|g_i| > \tau_i` at the last update.

  References:
    Zhang, Karimireddy, Veit, Kim, Reddi, Kumar and Sra, "Why are Adaptive Methods Good for Attention
    Models?", NeurIPS 2020, arXiv 1912.03194 (CClip: coordinate-wise clipping).

  Example:
    >>> import jax.numpy as jnp
    >>> from acclip_optax import clip_by_coordinate
    >>> tx = clip_by_coordinate(1.0)
    >>> updates, state = tx.update(jnp.array([0.5, -3.0]), tx.init(jnp.zeros(2)))
    >>> updates
    Array([ 0.5, -1. ], dtype=float32)
  """
  if not callable(threshold):
    check_positive("threshold", threshold)

  def init_fn(params):
    del params
    return ClipByCoordinateState(count=jnp.zeros([], jnp.int32), clip_fraction=jnp.zeros([], jnp.float32))

  def update_fn(updates, state, params=None, **extra_args):
    del extra_args
    check_floating_leaves("updates", updates)
    if params is not None:  # the state holds no tree: the params, when given, say what the updates must be
      check_same_tree("updates", updates, "the params", params)
    treedef, (grads,) = _leaves_like(updates)
    taus = _thresholds_per_leaf(_value_at(threshold, state.count), updates, treedef)
    clipped_grads = [_clip_coordinates(g, t) for g, t in zip(grads, taus)]
    clipped_counts = [jnp.sum(jnp.abs(g) > t, dtype=jnp.int32) for g, t in zip(grads, taus)]
    state = ClipByCoordinateState(
        count=optax.safe_increment(state.count),
        clip_fraction=_fraction(clipped_counts, [g.size for g in grads]))
    return treedef.unflatten(clipped_grads), state

  return optax.GradientTransformationExtraArgs(init_fn, update_fn)


def _thresholds_per_leaf(tau: Any, updates: optax.Updates, treedef: Any) -> list[Any]:
  """One threshold per update leaf: a scalar for all, or a pytree shaped like the updates.

  Raises:
    ValueError: a pytree of another structure, or a leaf threshold that does not broadcast to its leaf's
      shape without changing it (a (3, 1) threshold for a (3,) leaf would turn the update into (3, 3)).
  """
  if jax.tree_util.treedef_is_leaf(jax.tree.structure(tau)):
    taus = [tau] * treedef.num_leaves
  else:
    try:
      taus = treedef.flatten_up_to(tau)
    except (ValueError, TypeError) as error:
      raise ValueError(f"threshold has the tree structure {jax.tree.structure(tau)}, but the updates have "
                       f"{treedef}; give a scalar or a pytree shaped like the params") from error
  for (path, g), t in zip(jax.tree_util.tree_flatten_with_path(updates)[0], taus):
    shape = jnp.shape(g)
    try:
      broadcast = jnp.broadcast_shapes(jnp.shape(t), shape)
    except ValueError:
      broadcast = None
    if broadcast != shape:
      raise ValueError(f"threshold{jax.tree_util.keystr(path)} has shape {jnp.shape(t)}, which does not "
                       f"broadcast to its update's shape {shape}")
  return taus


def _clip_coordinates(g: jax.Array, tau: Any) -> jax.Array:
  """clip(g, -tau, tau) for real g; for complex g the modulus is capped at tau and the phase kept."""
  if jnp.issubdtype(g.dtype, jnp.complexfloating):
    magnitude = jnp.abs(g)
    return (g * jnp.where(magnitude > tau, tau / jnp.where(magnitude > 0, magnitude, 1), 1)).astype(g.dtype)
  return jnp.clip(g, -tau, tau).astype(g.dtype)


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
    if params is not None:  # the state holds no tree: the params, when given, say what the updates must be
      check_same_tree("updates", updates, "the params", params)
    tau = _value_at(max_norm, state.count)
    norm, updates = global_norm_apart(updates)  # in at least float32: bf16 sums lose leading digits
    # where, not tau / max(norm, tau): 0/0 at a zero norm and inf/inf at an infinite bound.
    scale = jnp.where(norm > tau, tau / norm, 1.0)
    clipped = jax.tree.map(lambda g: (g * scale).astype(g.dtype), updates)
    state = ClipByScheduledGlobalNormState(count=optax.safe_increment(state.count),
                                  global_norm=norm.astype(jnp.float32))
    return clipped, state

  return optax.GradientTransformationExtraArgs(init_fn, update_fn)
