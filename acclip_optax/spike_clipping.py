"""Adaptive clipping against gradient spikes, from the methods that followed Zhang et al. (2020).

* `zclip`: ZClip (Kumar et al. 2025): z-score of the global norm against its EMA mean and variance.
* `adagc`: AdaGC (Wang et al. 2025): per-tensor thresholds from an EMA of each tensor's clipped norm.
* `autoclip`: AutoClip (Seetharaman et al. 2020): a percentile of the history of global norms.
* `spam`: SPAM (Huang et al., ICLR 2025): Adam with spike-aware coordinate clipping and momentum resets.

Each follows the reference implementation named in its docstring, step for step (the tests compare
parameter trajectories with them in float64). Like the rest of the library, each is an
`optax.GradientTransformationExtraArgs` with a NamedTuple state of arrays and an int32 `count`; buffers
have a fixed size, so updates jit, and nothing syncs with the host. `clip_stats` reads their statistics.
"""
from __future__ import annotations

import math
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax

from acclip_optax._validation import (
    check_in_range, check_real_floating_leaves, check_same_tree, concrete_value)

__all__ = [
    "AdaGCState", "AutoClipState", "SpamState", "ZClipState", "adagc", "autoclip", "scale_by_spam", "spam",
    "zclip",
]

# torch.nn.utils.clip_grad_norm_ scales by max_norm / (norm + 1e-6): the references clip through it.
_TORCH_CLIP_EPS = 1e-6


def _global_norm(updates: optax.Updates) -> jax.Array:
  """||g||_2 over every leaf, in at least float32."""
  return optax.tree.norm(jax.tree.map(lambda g: g.astype(jnp.promote_types(g.dtype, jnp.float32)), updates))


def _scale_tree(updates: optax.Updates, scale: jax.Array) -> optax.Updates:
  return jax.tree.map(lambda g: (g * scale).astype(g.dtype), updates)


def _torch_clip_scale(norm: jax.Array, max_norm: jax.Array) -> jax.Array:
  """min(1, max_norm / (norm + 1e-6)), the factor torch.nn.utils.clip_grad_norm_ applies."""
  return jnp.minimum(1.0, max_norm / (norm + _TORCH_CLIP_EPS))


def _float_dtype(updates: optax.Updates) -> Any:
  return jnp.result_type(jnp.float32, *[leaf.dtype for leaf in jax.tree.leaves(updates)])


def _check_steps(name: str, value: Any, minimum: int) -> Any:
  """A step count as a Python int; a traced one (in `inject_hyperparams`' update) is returned unchecked.

  Buffer sizes are read from the state's shapes in `update`, so only `init` needs these concrete.
  """
  concrete = concrete_value(value)
  if concrete is None:
    return value
  if (isinstance(value, bool) or concrete.shape or not jnp.issubdtype(concrete.dtype, jnp.integer)
      or int(concrete) < minimum):
    raise ValueError(f"{name}={value!r} must be an integer >= {minimum}")
  return int(concrete)


# ------------------------------------------------------------------------------------------------ ZClip
class ZClipState(NamedTuple):
  """State of `zclip`.

  Attributes:
    count: int32, updates done.
    warmup_norms: the first `warmup_steps` global norms (the EMA starts from their mean and variance).
    mean, var: the EMAs of the (clipped) global norm and of its squared deviation.
    global_norm: the last update's pre-clip global norm.
    clip_threshold: the norm the last update was clipped to (inf when it was not clipped).
    clipped: 1.0 when the last update was clipped, else 0.0.
  """
  count: jax.Array
  warmup_norms: jax.Array
  mean: jax.Array
  var: jax.Array
  global_norm: jax.Array
  clip_threshold: jax.Array
  clipped: jax.Array


def zclip(alpha: float = 0.97, z_threshold: float = 2.5, warmup_steps: int = 25, max_norm: float | None = None,
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

  Args:
    alpha: EMA decay of the norm's mean and variance, in [0, 1).
    z_threshold: z-score above which an update is clipped, > 0.
    warmup_steps: norms collected before the EMA starts, >= 1.
    max_norm: an absolute cap on the global norm, > 0, or None.
    eps: added to sigma in the z-score, >= 0.

  Returns:
    An `optax.GradientTransformationExtraArgs` with a `ZClipState`.

  Example:
    >>> import jax.numpy as jnp, optax
    >>> from acclip_optax import zclip
    >>> tx = optax.chain(zclip(warmup_steps=2), optax.sgd(0.1))
    >>> updates, state = tx.update(jnp.ones(3), tx.init(jnp.zeros(3)))
  """
  check_in_range("alpha", alpha, 0.0, 1.0)
  check_in_range("z_threshold", z_threshold, 0.0, math.inf, low_inclusive=False)
  warmup_steps = _check_steps("warmup_steps", warmup_steps, 1)
  if max_norm is not None:
    check_in_range("max_norm", max_norm, 0.0, math.inf, low_inclusive=False)
  check_in_range("eps", eps, 0.0, math.inf)
  cap = math.inf if max_norm is None else max_norm

  def init_fn(params):
    check_real_floating_leaves("params", params)
    dtype = _float_dtype(params)
    zero = lambda: jnp.zeros([], dtype)  # a new buffer per leaf: a donated state may not repeat one
    return ZClipState(count=jnp.zeros([], jnp.int32), warmup_norms=jnp.zeros([warmup_steps], dtype),
                      mean=zero(), var=zero(), global_norm=zero(), clip_threshold=jnp.full([], jnp.inf, dtype),
                      clipped=zero())

  def update_fn(updates, state, params=None, **extra_args):
    del params, extra_args
    check_real_floating_leaves("updates", updates)
    norm = _global_norm(updates).astype(state.mean.dtype)
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
    scale = jnp.where(clipped, threshold / (norm + _TORCH_CLIP_EPS), 1.0)
    if max_norm is not None:  # torch's clip_grad_norm_ during warm-up: min(1, M / (n + 1e-6)), always
      scale = jnp.where(in_warmup, _torch_clip_scale(norm, cap), scale)
      clipped = jnp.where(in_warmup, norm + _TORCH_CLIP_EPS > cap, clipped)
    new_mean = alpha * state.mean + (1 - alpha) * clip_value
    new_var = alpha * state.var + (1 - alpha) * jnp.square(clip_value - new_mean)
    mean = jnp.where(in_warmup, jnp.where(starts, start_mean, state.mean), new_mean)
    var = jnp.where(in_warmup, jnp.where(starts, start_var, state.var), new_var)
    state = ZClipState(
        count=optax.safe_increment(state.count), warmup_norms=warmup_norms, mean=mean, var=var,
        global_norm=norm, clip_threshold=jnp.where(clipped, threshold, jnp.inf).astype(norm.dtype),
        clipped=clipped.astype(norm.dtype))
    return _scale_tree(updates, scale), state

  return optax.GradientTransformationExtraArgs(init_fn, update_fn)


# ------------------------------------------------------------------------------------------------ AdaGC
class AdaGCState(NamedTuple):
  """State of `adagc`.

  Attributes:
    count: int32, updates done.
    gamma: per leaf, the EMA of the leaf's clipped norm (a float scalar per tensor).
    global_norm: the last update's pre-clip global norm.
    clip_fraction: the fraction of tensors the last update clipped.
  """
  count: jax.Array
  gamma: optax.Updates
  global_norm: jax.Array
  clip_fraction: jax.Array


def adagc(lambda_abs: float = 1.0, lambda_rel: float = 1.05, beta: float = 0.98, warmup_steps: int = 100,
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

  Args:
    lambda_abs: the global-norm bound of the warm-up, > 0.
    lambda_rel: the bound relative to a tensor's EMA norm after warm-up, > 0.
    beta: EMA decay of the tensors' norms, in [0, 1).
    warmup_steps: steps of global-norm clipping before the per-tensor rule, >= 0.
    eps: the floor of the norms in the ratios and the global norm's offset, >= 0.

  Returns:
    An `optax.GradientTransformationExtraArgs` with an `AdaGCState`.

  Example:
    >>> import jax.numpy as jnp, optax
    >>> from acclip_optax import adagc
    >>> tx = optax.chain(adagc(warmup_steps=10), optax.adamw(1e-3))
    >>> updates, state = tx.update({"w": jnp.ones(3)}, tx.init({"w": jnp.zeros(3)}), {"w": jnp.zeros(3)})
  """
  check_in_range("lambda_abs", lambda_abs, 0.0, math.inf, low_inclusive=False)
  check_in_range("lambda_rel", lambda_rel, 0.0, math.inf, low_inclusive=False)
  check_in_range("beta", beta, 0.0, 1.0)
  warmup_steps = _check_steps("warmup_steps", warmup_steps, 0)
  check_in_range("eps", eps, 0.0, math.inf)

  def init_fn(params):
    check_real_floating_leaves("params", params)
    dtype = _float_dtype(params)
    return AdaGCState(count=jnp.zeros([], jnp.int32),
                      gamma=jax.tree.map(lambda p: jnp.zeros([], jnp.promote_types(p.dtype, jnp.float32)),
                                         params),
                      global_norm=jnp.zeros([], dtype), clip_fraction=jnp.zeros([], jnp.float32))

  def update_fn(updates, state, params=None, **extra_args):
    del params, extra_args
    check_real_floating_leaves("updates", updates)
    check_same_tree("updates", jax.tree.map(lambda g: jnp.zeros([]), updates), "the optimizer state (made by init)",
                    state.gamma)
    step = state.count + 1
    norm = _global_norm(updates).astype(state.global_norm.dtype)
    in_warmup = step < warmup_steps
    first = state.count == 0
    warmup_scale = jnp.minimum(lambda_abs / (norm + eps), 1.0)
    leaves, treedef = jax.tree.flatten(updates)
    gammas = treedef.flatten_up_to(state.gamma)
    clipped_leaves, new_gammas, clipped_flags = [], [], []
    for g, gamma in zip(leaves, gammas):
      g32 = g.astype(gamma.dtype)
      leaf_norm = jnp.sqrt(jnp.sum(jnp.square(g32)))
      ratio = lambda_rel * jnp.maximum(gamma, eps) / jnp.maximum(leaf_norm, eps)
      relative_scale = jnp.where(leaf_norm > 0, jnp.minimum(ratio, 1.0), 1.0)  # 0/0 at eps = 0: leave 0 as 0
      # The reference starts the EMA only after a warm-up step has set gamma (k = 1 when W = 0).
      scale = jnp.where(in_warmup | first, warmup_scale.astype(gamma.dtype), relative_scale)
      clipped_norm = scale * leaf_norm
      warmup_gamma = jnp.where(first, clipped_norm, jnp.minimum(gamma, clipped_norm))
      new_gammas.append(jnp.where(in_warmup | first, warmup_gamma, gamma + (1 - beta) * (clipped_norm - gamma)))
      clipped_leaves.append((g32 * scale).astype(g.dtype))
      clipped_flags.append(scale < 1.0)
    fraction = (jnp.mean(jnp.stack(clipped_flags).astype(jnp.float32)) if clipped_flags
                else jnp.zeros([], jnp.float32))
    state = AdaGCState(count=optax.safe_increment(state.count), gamma=treedef.unflatten(new_gammas),
                       global_norm=norm, clip_fraction=fraction)
    return treedef.unflatten(clipped_leaves), state

  return optax.GradientTransformationExtraArgs(init_fn, update_fn)


# --------------------------------------------------------------------------------------------- AutoClip
class AutoClipState(NamedTuple):
  """State of `autoclip`.

  Attributes:
    count: int32, updates done.
    norms: a ring buffer of the last `history` pre-clip global norms.
    global_norm: the last update's pre-clip global norm.
    clip_threshold: the percentile the last update was clipped at.
    clipped: 1.0 when the last update was clipped, else 0.0.
  """
  count: jax.Array
  norms: jax.Array
  global_norm: jax.Array
  clip_threshold: jax.Array
  clipped: jax.Array


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

  Args:
    percentile: p, in [0, 100].
    history: the number of recent norms kept, >= 1.

  Returns:
    An `optax.GradientTransformationExtraArgs` with an `AutoClipState`.

  Example:
    >>> import jax.numpy as jnp, optax
    >>> from acclip_optax import autoclip
    >>> tx = optax.chain(autoclip(10.0, history=100), optax.sgd(0.1))
    >>> updates, state = tx.update(jnp.ones(3), tx.init(jnp.zeros(3)))
  """
  check_in_range("percentile", percentile, 0.0, 100.0, high_inclusive=True)
  history = _check_steps("history", history, 1)

  def init_fn(params):
    check_real_floating_leaves("params", params)
    dtype = _float_dtype(params)
    zero = lambda: jnp.zeros([], dtype)  # a new buffer per leaf: a donated state may not repeat one
    return AutoClipState(count=jnp.zeros([], jnp.int32), norms=jnp.zeros([history], dtype),
                         global_norm=zero(), clip_threshold=zero(), clipped=zero())

  def update_fn(updates, state, params=None, **extra_args):
    del params, extra_args
    check_real_floating_leaves("updates", updates)
    norm = _global_norm(updates).astype(state.norms.dtype)
    size = state.norms.shape[0]
    norms = state.norms.at[state.count % size].set(norm)
    valid = jnp.minimum(state.count + 1, size)
    ordered = jnp.sort(jnp.where(jnp.arange(size) < valid, norms, jnp.inf))
    position = (percentile / 100.0) * (valid - 1).astype(norms.dtype)
    low = jnp.floor(position).astype(jnp.int32)
    high = jnp.minimum(low + 1, valid - 1)
    fraction = position - low
    threshold = ordered[low] + fraction * (ordered[high] - ordered[low])
    scale = _torch_clip_scale(norm, threshold)
    state = AutoClipState(count=optax.safe_increment(state.count), norms=norms, global_norm=norm,
                          clip_threshold=threshold, clipped=(norm > threshold).astype(norm.dtype))
    return _scale_tree(updates, scale), state

  return optax.GradientTransformationExtraArgs(init_fn, update_fn)


# ------------------------------------------------------------------------------------------------- SPAM
class SpamState(NamedTuple):
  """State of `scale_by_spam`.

  Attributes:
    count: int32, updates done.
    mu, nu: Adam's moments, zeroed every `reset_interval` steps.
    clip_fraction: the fraction of coordinates the last update's spike clip changed.
  """
  count: jax.Array
  mu: optax.Updates
  nu: optax.Updates
  clip_fraction: jax.Array


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
  """
  for name, value in (("b1", b1), ("b2", b2)):
    check_in_range(name, value, 0.0, 1.0)
  check_in_range("eps", eps, 0.0, math.inf)
  check_in_range("theta", theta, 0.0, math.inf)
  reset_interval = _check_steps("reset_interval", reset_interval, 1)
  warmup_steps = _check_steps("warmup_steps", warmup_steps, 0)
  grad_accu_steps = _check_steps("grad_accu_steps", grad_accu_steps, 0)

  def init_fn(params):
    check_real_floating_leaves("params", params)
    return SpamState(count=jnp.zeros([], jnp.int32), mu=optax.tree.zeros_like(params),
                     nu=optax.tree.zeros_like(params), clip_fraction=jnp.zeros([], jnp.float32))

  def update_fn(updates, state, params=None, **extra_args):
    del params, extra_args
    check_real_floating_leaves("updates", updates)
    check_same_tree("updates", updates, "the optimizer state (made by init)", state.mu)
    step = state.count + 1
    reset = step % reset_interval == 0
    clip = (theta != 0) & (step >= grad_accu_steps) & (step % reset_interval >= grad_accu_steps)
    dtype = _float_dtype(updates)
    k = step.astype(dtype)
    step_size = jnp.sqrt(1 - jnp.asarray(b2, dtype) ** k) / (1 - jnp.asarray(b1, dtype) ** k)
    step_size = step_size * _spam_warmup_scale(step, reset_interval, warmup_steps).astype(dtype)
    leaves, treedef = jax.tree.flatten(updates)
    mus, nus = treedef.flatten_up_to(state.mu), treedef.flatten_up_to(state.nu)
    directions, new_mus, new_nus, counts, sizes = [], [], [], [], []
    for g, mu, nu in zip(leaves, mus, nus):
      g32 = g.astype(jnp.promote_types(g.dtype, jnp.float32))
      mu32 = jnp.where(reset, 0, mu.astype(g32.dtype))
      nu32 = jnp.where(reset, 0, nu.astype(g32.dtype))
      # g^2 > theta v  <=>  |g| > sqrt(theta v): the clip is a clamp to +-sqrt(theta v) (+-inf: no clip),
      # which XLA fuses with the moment updates better than a select on a sign.
      bound = jnp.where(clip, jnp.sqrt(theta * nu32), jnp.inf)
      spike = jnp.abs(g32) > bound
      g32 = jnp.clip(g32, -bound, bound)
      m = b1 * mu32 + (1 - b1) * g32
      v = b2 * nu32 + (1 - b2) * jnp.square(g32)
      directions.append((step_size * m / (jnp.sqrt(v) + eps)).astype(g.dtype))
      new_mus.append(m.astype(mu.dtype))
      new_nus.append(v.astype(nu.dtype))
      counts.append(jnp.sum(spike, dtype=jnp.int32))
      sizes.append(g.size)
    total = sum(sizes)
    fraction = (sum(c.astype(jnp.float32) for c in counts) / total) if total else jnp.zeros([], jnp.float32)
    state = SpamState(count=optax.safe_increment(state.count), mu=treedef.unflatten(new_mus),
                      nu=treedef.unflatten(new_nus), clip_fraction=fraction)
    return treedef.unflatten(directions), state

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

  Args:
    learning_rate: :math:`\eta`, a float or a schedule.
    b1, b2, eps, theta, reset_interval, warmup_steps, grad_accu_steps: see `scale_by_spam`.
    weight_decay: :math:`\lambda`, >= 0.
    mask: the leaves to decay (a pytree of booleans or a function of the params), None: all.

  Returns:
    ``chain(scale_by_spam, scale_by_learning_rate[, decay after the step])``.

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
