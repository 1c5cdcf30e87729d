"""ACClip (Zhang et al. 2020, Algorithm 1): adaptive coordinate-wise clipping of the momentum.

`scale_by_acclip` is the paper's rule, `acclip` the optimizer around it, `acclip_clip_fraction` its clip
statistic. The moment helpers here are shared with the public PyTorch ports' variant (`_acclip_ports`).
"""
from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax

from acclip_optax._common import (
    check_floating_dtype, check_floating_leaves, check_in_range, check_same_tree, concrete_value, count_true, fraction,
    real_dtype, upcast)

Mask = Any | Callable[[optax.Params], Any] | None

# Above this, |g|^alpha by repeated multiplication loses to exp-log.
_MAX_MULTIPLIED_POWER = 4


class ACClipThresholdRule(NamedTuple):
  """Part of the state of `scale_by_acclip` (and of `scale_by_acclip_ports`), its ``threshold_rule``: float32
  scalars of the last update's clip test, so `clip_stats` can recompute it from mu and nu.

  A coordinate was clipped when ``(nu * nu_scale) ** (1 / alpha) < |mu * mu_scale| + eps``. Keeping these
  four scalars instead of a clip count keeps the update a single fused element-wise pass: a reduction
  inside the update costs XLA its fusion (measured in docs/benchmarks.md).
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
  """
  count: jax.Array
  mu: optax.Updates
  nu: optax.Updates
  threshold_rule: ACClipThresholdRule


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
  return jnp.result_type(jnp.float32, *[real_dtype(leaf.dtype) for leaf in leaves])


def _real_zeros_like(params: optax.Params) -> optax.Params:
  """Zeros shaped and sharded like the params, in their real dtype (the EMAs of |g|^alpha and |g|^2 are real).

  `zeros_like` keeps each param's sharding (`zeros(shape, dtype)` would replicate a sharded model's state).
  """
  return jax.tree.map(lambda p: jnp.zeros_like(p, dtype=real_dtype(jnp.result_type(p))), params)


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


def _acclip_moments(updates: optax.Updates, mu: optax.Updates, nu: optax.Updates, b1: Any, b2: Any,
                    moment_of: Callable[[jax.Array], jax.Array]) -> tuple[optax.Updates, optax.Updates]:
  """Algorithm 1's EMAs, in at least float32: m = b1 m + (1 - b1) g and t = b2 t + (1 - b2) |g|^alpha."""
  m = jax.tree.map(lambda g, mu: b1 * upcast(mu) + (1 - b1) * upcast(g), updates, mu)
  t = jax.tree.map(lambda g, nu: b2 * upcast(nu) + (1 - b2) * moment_of(upcast(g)), updates, nu)
  return m, t


def _cast_like(tree: optax.Updates, like: optax.Updates) -> optax.Updates:
  """`tree` in the dtypes of `like`'s leaves (the state's storage dtypes)."""
  return jax.tree.map(lambda x, y: x.astype(y.dtype), tree, like)


def _checked_setup(b1: Any, b2: Any, alpha: Any, eps: Any, mu_dtype: Any) -> tuple[Any, Callable, Callable]:
  """The hyperparameters checked; (mu_dtype canonical or None, |g| -> |g|^alpha, t -> t^(1/alpha))."""
  _check_moment_hyperparameters(b1, b2, alpha, eps, mu_dtype)
  mu_dtype = None if mu_dtype is None else jax.dtypes.canonicalize_dtype(mu_dtype)
  return (mu_dtype, *_alpha_power_fns(alpha))


def _initial_fields(params: optax.Params, mu_dtype: Any, alpha: Any, eps: Any) -> dict[str, Any]:
  """The fields both ACClip states start with: count, mu, nu and the threshold rule (params checked)."""
  _check_momentum_init(params, mu_dtype)
  return dict(count=jnp.zeros([], jnp.int32), mu=optax.tree.zeros_like(params, dtype=mu_dtype),
              nu=_real_zeros_like(params), threshold_rule=_threshold_rule(alpha, eps, 1.0, 1.0))


def _clip_momentum(m_hat: jax.Array, tau: jax.Array, eps: Any) -> jax.Array:
  """min(tau / (|m| + eps), 1) * m, with the factor 1 where tau = |m| + eps = 0 (eps = 0, m = 0)."""
  magnitude = jnp.abs(m_hat) + eps
  return jnp.where(tau < magnitude, tau / magnitude, 1) * m_hat


def _threshold_rule(alpha: Any, eps: Any, mu_scale: Any, nu_scale: Any) -> ACClipThresholdRule:
  as_scalar = lambda x: jnp.asarray(x, jnp.float32).reshape(())
  return ACClipThresholdRule(as_scalar(alpha), as_scalar(eps), as_scalar(mu_scale), as_scalar(nu_scale))


def acclip_clip_fraction(state: Any) -> jax.Array:
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

  Example:
    >>> import jax.numpy as jnp
    >>> from acclip_optax import acclip_clip_fraction, scale_by_acclip
    >>> tx = scale_by_acclip()
    >>> _, state = tx.update(jnp.array([0.5, 100.0]), tx.init(jnp.zeros(2)))
    >>> acclip_clip_fraction(state)  # at the first step |m| = 0.1 |g| > tau = 0.01 |g|: all clipped
    Array(1., dtype=float32)
  """
  rule = state.threshold_rule

  def clipped_count(mu, nu):
    m_hat = jnp.abs(mu).astype(jnp.float32) * rule.mu_scale  # |m|: the modulus for complex momentum
    t_hat = nu.astype(jnp.float32) * rule.nu_scale
    # The update's own roots for alpha 1 and 2 (exact), its exp-log form for any other alpha.
    tau = jnp.where(rule.alpha == 1, t_hat,
                    jnp.where(rule.alpha == 2, jnp.sqrt(t_hat), jnp.exp(jnp.log(t_hat) / rule.alpha)))
    # A zero momentum is left unchanged by the clip even where the factor is below 1.
    return count_true((tau < m_hat + rule.eps) & (m_hat != 0))

  counts = jax.tree.leaves(jax.tree.map(clipped_count, state.mu, state.nu))
  return fraction(counts, [mu.size for mu in jax.tree.leaves(state.mu)])


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
  mu_dtype, moment_of, root_of = _checked_setup(b1, b2, alpha, eps, mu_dtype)

  def init_fn(params):
    return ScaleByACClipState(**_initial_fields(params, mu_dtype, alpha, eps))

  def update_fn(updates, state, params=None, **extra_args):
    del params, extra_args
    _check_update_matches(updates, state.mu)
    count = optax.safe_increment(state.count)
    if bias_correction:
      dtype = _moment_dtype(jax.tree.leaves(updates))
      mu_scale = 1.0 / _bias_correction_factor(b1, count, dtype)
      nu_scale = 1.0 / _bias_correction_factor(b2, count, dtype)
    else:
      mu_scale = nu_scale = 1.0
    mu, nu = _acclip_moments(updates, state.mu, state.nu, b1, b2, moment_of)

    def direction(g, m, t):
      if bias_correction:
        return _clip_momentum(m * mu_scale, root_of(t * nu_scale), eps).astype(g.dtype)
      return _clip_momentum(m, root_of(t), eps).astype(g.dtype)

    state = ScaleByACClipState(
        count=count, mu=_cast_like(mu, state.mu), nu=_cast_like(nu, state.nu),
        threshold_rule=_threshold_rule(alpha, eps, mu_scale, nu_scale))
    return jax.tree.map(direction, updates, mu, nu), state

  return optax.GradientTransformationExtraArgs(init_fn, update_fn)


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

  A gradient with a NaN or inf enters the state as in optax's own rules; wrap the optimizer in
  `optax.apply_if_finite` to skip such steps.

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
