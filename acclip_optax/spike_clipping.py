"""Adaptive clipping against gradient spikes, from the methods that followed Zhang et al. (2020).

* `zclip`: ZClip (Kumar et al. 2025): z-score of the global norm against its EMA mean and variance.
* `adagc`: AdaGC (Wang et al. 2025): per-tensor thresholds from an EMA of each tensor's clipped norm.
* `autoclip`: AutoClip (Seetharaman et al. 2020): a percentile of the history of global norms.
* `spam`: SPAM (Huang et al., ICLR 2025): Adam with spike-aware coordinate clipping and momentum resets.
* `stable_spam`: Stable-SPAM (Huang et al. 2025): SPAM's successor, with a clipping threshold that follows
  the gradients' running maxima and the update scaled by running gradient-norm statistics.
* `skip_step_on_spikes`: wraps any transformation and skips the step when the gradient norm or the loss is
  `sigma` standard deviations above its recent mean (OLMo-core's and levanter's skip-step).

Each follows the reference implementation named in its docstring, step for step (the tests compare
parameter trajectories with them in float64). Like the rest of the library, each is an
`optax.GradientTransformationExtraArgs` with a NamedTuple state of arrays and an int32 `count`; buffers
have a fixed size, so updates jit, and nothing syncs with the host. `clip_stats` reads their statistics.

A gradient with a value that is not finite (NaN or inf, or a global norm that overflows) is the spike these
methods exist for, and never enters their statistics: ZClip, AdaGC, AutoClip, SPAM and Stable-SPAM return a
zero update for that step and keep their state as it was, counting the step in `nonfinite_count` (which
`clip_stats` reports as ``nonfinite_steps``); `skip_step_on_spikes` skips it.
"""
from __future__ import annotations

import math
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax

from acclip_optax._common import global_norm_apart
from acclip_optax._validation import (
    check_in_range, check_real_floating_leaves, check_same_tree, concrete_value)

__all__ = [
    "AdaGCState", "AutoClipState", "SkipStepState", "SpamState", "StableSpamState", "ZClipState", "adagc",
    "autoclip", "scale_by_spam", "scale_by_stable_spam", "skip_step_on_spikes", "spam", "stable_spam", "zclip",
]

# torch.nn.utils.clip_grad_norm_ scales by max_norm / (norm + 1e-6): the references clip through it.
_TORCH_CLIP_EPS = 1e-6




def _scale_tree(updates: optax.Updates, scale: jax.Array) -> optax.Updates:
  return jax.tree.map(lambda g: (g * scale).astype(g.dtype), updates)


def _torch_clip_scale(norm: jax.Array, max_norm: jax.Array) -> jax.Array:
  """min(1, max_norm / (norm + 1e-6)), the factor torch.nn.utils.clip_grad_norm_ applies."""
  return jnp.minimum(1.0, max_norm / (norm + _TORCH_CLIP_EPS))


def _float_dtype(updates: optax.Updates) -> Any:
  return jnp.result_type(jnp.float32, *[leaf.dtype for leaf in jax.tree.leaves(updates)])


def _skip_if_nonfinite(finite: jax.Array, updates: optax.Updates, state: Any, new_state: Any
                       ) -> tuple[optax.Updates, Any]:
  """(updates, new_state) for a finite gradient; else a zero update and `state` with its `nonfinite_count`
  advanced (the statistics never see the bad gradient)."""
  updates = jax.tree.map(lambda u: jnp.where(finite, u, jnp.zeros_like(u)), updates)
  kept = optax.tree.where(finite, new_state, state)
  return updates, kept._replace(nonfinite_count=jnp.where(
      finite, state.nonfinite_count, optax.safe_increment(state.nonfinite_count)))


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
    nonfinite_count: int32, steps whose gradient was not finite (zero update, state otherwise kept).

  References:
    Kumar et al., "ZClip: Adaptive Spike Mitigation for LLM Pre-Training", arXiv 2504.02507, 2025.
  """
  count: jax.Array
  warmup_norms: jax.Array
  mean: jax.Array
  var: jax.Array
  global_norm: jax.Array
  clip_threshold: jax.Array
  clipped: jax.Array
  nonfinite_count: jax.Array


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

  References:
    Kumar et al., "ZClip: Adaptive Spike Mitigation for LLM Pre-Training", arXiv 2504.02507, 2025.

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
                      clipped=zero(), nonfinite_count=jnp.zeros([], jnp.int32))

  def update_fn(updates, state, params=None, **extra_args):
    del extra_args
    check_real_floating_leaves("updates", updates)
    if params is not None:  # the state holds no tree: the params, when given, say what the updates must be
      check_same_tree("updates", updates, "the params", params)
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
    scale = jnp.where(clipped, threshold / (norm + _TORCH_CLIP_EPS), 1.0)
    if max_norm is not None:  # torch's clip_grad_norm_ during warm-up: min(1, M / (n + 1e-6)), always
      scale = jnp.where(in_warmup, _torch_clip_scale(norm, cap), scale)
      clipped = jnp.where(in_warmup, norm + _TORCH_CLIP_EPS > cap, clipped)
    new_mean = alpha * state.mean + (1 - alpha) * clip_value
    new_var = alpha * state.var + (1 - alpha) * jnp.square(clip_value - new_mean)
    mean = jnp.where(in_warmup, jnp.where(starts, start_mean, state.mean), new_mean)
    var = jnp.where(in_warmup, jnp.where(starts, start_var, state.var), new_var)
    new_state = ZClipState(
        count=optax.safe_increment(state.count), warmup_norms=warmup_norms, mean=mean, var=var,
        global_norm=norm, clip_threshold=jnp.where(clipped, threshold, jnp.inf).astype(norm.dtype),
        clipped=clipped.astype(norm.dtype), nonfinite_count=state.nonfinite_count)
    return _skip_if_nonfinite(jnp.isfinite(norm), _scale_tree(updates, scale), state, new_state)

  return optax.GradientTransformationExtraArgs(init_fn, update_fn)


# ------------------------------------------------------------------------------------------------ AdaGC
class AdaGCState(NamedTuple):
  """State of `adagc`.

  Attributes:
    count: int32, updates done.
    gamma: per leaf, the EMA of the leaf's clipped norm (a float scalar per tensor).
    global_norm: the last update's pre-clip global norm.
    clip_fraction: the fraction of tensors the last update clipped.
    nonfinite_count: int32, steps whose gradient was not finite (zero update, state otherwise kept).

  References:
    Wang et al., "AdaGC: Improving Training Stability for Large Language Model Pretraining", arXiv
    2502.11034, 2025.
  """
  count: jax.Array
  gamma: optax.Updates
  global_norm: jax.Array
  clip_fraction: jax.Array
  nonfinite_count: jax.Array


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
  check_in_range("beta", beta, 0.0, 1.0)
  warmup_steps = _check_steps("warmup_steps", warmup_steps, 0)
  check_in_range("eps", eps, 0.0, math.inf)

  def init_fn(params):
    check_real_floating_leaves("params", params)
    dtype = _float_dtype(params)
    return AdaGCState(count=jnp.zeros([], jnp.int32),
                      gamma=jax.tree.map(lambda p: jnp.zeros([], jnp.promote_types(p.dtype, jnp.float32)),
                                         params),
                      global_norm=jnp.zeros([], dtype), clip_fraction=jnp.zeros([], jnp.float32),
                      nonfinite_count=jnp.zeros([], jnp.int32))

  def update_fn(updates, state, params=None, **extra_args):
    del extra_args
    check_real_floating_leaves("updates", updates)
    check_same_tree("updates", jax.tree.map(lambda g: jnp.zeros([]), updates), "the optimizer state (made by init)",
                    state.gamma)
    if params is not None:  # gamma is a scalar per tensor: the params, when given, hold the shapes
      check_same_tree("updates", updates, "the params", params)
    step = state.count + 1
    norm, updates = global_norm_apart(updates)
    norm = norm.astype(state.global_norm.dtype)
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
    new_state = AdaGCState(count=optax.safe_increment(state.count), gamma=treedef.unflatten(new_gammas),
                           global_norm=norm, clip_fraction=fraction, nonfinite_count=state.nonfinite_count)
    return _skip_if_nonfinite(jnp.isfinite(norm), treedef.unflatten(clipped_leaves), state, new_state)

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
    nonfinite_count: int32, steps whose gradient was not finite (zero update, state otherwise kept).

  References:
    Seetharaman, Wichern, Pardo and Le Roux, "AutoClip: Adaptive Gradient Clipping for Source Separation
    Networks", IEEE MLSP 2020, arXiv 2007.14469.
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
  history = _check_steps("history", history, 1)

  def init_fn(params):
    check_real_floating_leaves("params", params)
    dtype = _float_dtype(params)
    zero = lambda: jnp.zeros([], dtype)  # a new buffer per leaf: a donated state may not repeat one
    return AutoClipState(count=jnp.zeros([], jnp.int32), norms=jnp.zeros([history], dtype),
                         global_norm=zero(), clip_threshold=zero(), clipped=zero(),
                         nonfinite_count=jnp.zeros([], jnp.int32))

  def update_fn(updates, state, params=None, **extra_args):
    del extra_args
    check_real_floating_leaves("updates", updates)
    if params is not None:  # the state holds no tree: the params, when given, say what the updates must be
      check_same_tree("updates", updates, "the params", params)
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
    scale = _torch_clip_scale(norm, threshold)
    new_state = AutoClipState(count=optax.safe_increment(state.count), norms=norms, global_norm=norm,
                              clip_threshold=threshold, clipped=(norm > threshold).astype(norm.dtype),
                              nonfinite_count=state.nonfinite_count)
    return _skip_if_nonfinite(jnp.isfinite(norm), _scale_tree(updates, scale), state, new_state)

  return optax.GradientTransformationExtraArgs(init_fn, update_fn)


# ------------------------------------------------------------------------------------------------- SPAM
class SpamState(NamedTuple):
  """State of `scale_by_spam`.

  Attributes:
    count: int32, updates done.
    mu, nu: Adam's moments, zeroed every `reset_interval` steps.
    clip_fraction: the fraction of coordinates the last update's spike clip changed.
    nonfinite_count: int32, steps whose gradient was not finite (zero update, state otherwise kept).

  References:
    Huang et al., "SPAM: Spike-Aware Adam with Momentum Reset for Stable LLM Training", ICLR 2025, arXiv
    2501.06842.
  """
  count: jax.Array
  mu: optax.Updates
  nu: optax.Updates
  clip_fraction: jax.Array
  nonfinite_count: jax.Array


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

  References:
    Huang et al., "SPAM: Spike-Aware Adam with Momentum Reset for Stable LLM Training", ICLR 2025, arXiv
    2501.06842.
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
                     nu=optax.tree.zeros_like(params), clip_fraction=jnp.zeros([], jnp.float32),
                     nonfinite_count=jnp.zeros([], jnp.int32))

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
    # A non-finite gradient leaves the moments as they were and gives a zero step, by arithmetic with scalar
    # weights rather than a select between the old and the new moments (which costs XLA:CPU its in-place
    # update). The finiteness test, a reduction, runs apart from the element-wise update (fused into it,
    # XLA:CPU runs the update on one thread).
    finite = jnp.all(jnp.stack([jnp.all(jnp.isfinite(g)) for g in leaves])) if leaves else jnp.array(True)
    finite, leaves = jax.lax.optimization_barrier((finite, leaves))
    taken = finite.astype(dtype)  # 1: the step is taken; 0: it is skipped
    kept = (~reset).astype(dtype) * taken + (1 - taken)  # what multiplies the old moments before the EMA
    directions, new_mus, new_nus, spikes, sizes = [], [], [], [], []
    for g, mu, nu in zip(leaves, mus, nus):
      g32 = jnp.where(finite, g.astype(jnp.promote_types(g.dtype, jnp.float32)), 0)
      mu32, nu32 = kept * mu.astype(g32.dtype), kept * nu.astype(g32.dtype)
      # g^2 > theta v  <=>  |g| > sqrt(theta v): the clip is a clamp to +-sqrt(theta v) (+-inf: no clip),
      # which XLA fuses with the moment updates better than a select on a sign.
      bound = jnp.where(clip, jnp.sqrt(theta * nu32), jnp.inf)
      spikes.append(jnp.abs(g32) > bound)
      g32 = jnp.clip(g32, -bound, bound)
      # Skipped: m = 1 * mu + 0 (the weights b1 -> 1, 1 - b1 -> 0), and the same for v.
      m = (taken * b1 + (1 - taken)) * mu32 + taken * (1 - b1) * g32
      v = (taken * b2 + (1 - taken)) * nu32 + taken * (1 - b2) * jnp.square(g32)
      directions.append((taken * step_size * m / (jnp.sqrt(v) + eps)).astype(g.dtype))
      new_mus.append(m.astype(mu.dtype))
      new_nus.append(v.astype(nu.dtype))
      sizes.append(g.size)
    total = sum(sizes)
    # The clipped-coordinate count, a reduction too, after the update and apart from it.
    directions, new_mus, new_nus = jax.lax.optimization_barrier((directions, new_mus, new_nus))
    counts = [jnp.sum(spike, dtype=jnp.int32) for spike in spikes]
    fraction = (sum(c.astype(jnp.float32) for c in counts) / total) if total else jnp.zeros([], jnp.float32)
    state = SpamState(count=jnp.where(finite, optax.safe_increment(state.count), state.count),
                      mu=treedef.unflatten(new_mus), nu=treedef.unflatten(new_nus),
                      clip_fraction=jnp.where(finite, fraction, state.clip_fraction),
                      nonfinite_count=jnp.where(finite, state.nonfinite_count,
                                                optax.safe_increment(state.nonfinite_count)))
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

  References:
    Huang et al., "SPAM: Spike-Aware Adam with Momentum Reset for Stable LLM Training", ICLR 2025, arXiv
    2501.06842.

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


# ------------------------------------------------------------------------------------------ Stable-SPAM
class StableSpamState(NamedTuple):
  """State of `scale_by_stable_spam`.

  Attributes:
    count: int32, updates done.
    mu, nu: Adam's moments, zeroed every `reset_interval` steps.
    max_ema: per leaf, the EMA of the leaf's largest ``|g_i|`` (AdaClip's threshold before bias correction).
    norm_ema, norm_sq_ema: per leaf, the EMAs of the clipped leaf's norm and squared norm (AdaGN).
    clip_fraction: the fraction of coordinates the last update's AdaClip scaled down.
    nonfinite_count: int32, steps whose gradient was not finite (zero update, state otherwise kept).

  References:
    Huang et al., "Stable-SPAM: How to Train in 4-Bit More Stably than 16-Bit Adam", arXiv 2502.17055, 2025.
  """
  count: jax.Array
  mu: optax.Updates
  nu: optax.Updates
  max_ema: optax.Updates
  norm_ema: optax.Updates
  norm_sq_ema: optax.Updates
  clip_fraction: jax.Array
  nonfinite_count: jax.Array


def _stable_spam_momentum_scale(step: jax.Array, decay_steps: Any, floor: Any) -> jax.Array:
  """s_k: the cosine decay of b1 and gamma1 (reference: `CosineDecay(1.0, t_max, eta_min)`).

  s_k = f + (1 - f) c(k + 1) / c(1) for k < T and f after, c(j) = 1 + cos(pi j / (T + 1)), T =
  `decay_steps`: torch's recursive `CosineAnnealingLR`, which the reference first steps at epoch 2 from
  the value of epoch 1, telescopes to this (not to the closed form c(k + 1) / 2, as SPAM's warm-up does).
  """
  period = decay_steps + 1.0
  cosine = floor + (1.0 - floor) * (1.0 + jnp.cos(jnp.pi * (step + 1.0) / period)) / (1.0 + jnp.cos(jnp.pi / period))
  return jnp.where(step >= decay_steps, floor, cosine)


def scale_by_stable_spam(b1: float = 0.9, b2: float = 0.999, gamma1: float | None = 0.7, gamma2: float = 0.9,
                         max_decay: float = 0.999, reset_interval: int = 1000, eps: float = 1e-8,
                         momentum_decay_steps: int | None = None,
                         momentum_decay_floor: float = 0.5) -> optax.GradientTransformationExtraArgs:
  r"""Stable-SPAM's direction (Huang et al. 2025): Adam after adaptive spike clipping and norm scaling.

  At step t = 1, 2, ..., for each tensor (leaf) g with :math:`g_{max} = \max_i |g_i|` (r =
  `reset_interval`, :math:`\theta` = `max_decay`, :math:`s_t` = 1 unless `momentum_decay_steps` is set):

  .. math::
    M \leftarrow \theta M + (1 - \theta) g_{max}, \quad \hat M = \frac{M}{1 - \theta^t}, \quad
    \tilde g_i = \begin{cases} \frac{g_i}{g_{max}} \hat M & |g_i| > \hat M \\ g_i & \text{else}
    \end{cases} \quad \text{(AdaClip)},

    n = \|\tilde g\|, \quad \mu \leftarrow \gamma_1 s_t \mu + (1 - \gamma_1 s_t) n, \quad
    \nu \leftarrow \gamma_2 \nu + (1 - \gamma_2) n^2, \quad
    \hat g = \frac{\tilde g}{n} \cdot \frac{\mu / (1 - (\gamma_1 s_t)^t)}{\sqrt{\nu / (1 - \gamma_2^t)}
    + \epsilon} \quad \text{(AdaGN)},

    m, v \leftarrow 0 \text{ when } t \bmod r = 0, \quad m = \beta_1 s_t m + (1 - \beta_1 s_t) \hat g, \quad
    v = \beta_2 v + (1 - \beta_2) \hat g^2, \quad
    u = \frac{m / (1 - (\beta_1 s_t)^k)}{\sqrt{v / (1 - \beta_2^k)} + \epsilon},

  where k counts the steps since the last reset, the reset step being k = 1 (k = t before the first). A
  tensor whose clipped gradient is zero (n = 0) keeps its m, v, mu and nu and gets u = 0. With
  `momentum_decay_steps` T, :math:`s_t = f + (1 - f)\,c(t + 1) / c(1)` for t < T and f =
  `momentum_decay_floor` after, :math:`c(j) = 1 + \cos(\pi j / (T + 1))` (what the reference's
  `CosineDecay` computes: torch's recursive `CosineAnnealingLR` started at its second epoch).

  This is `pytorch_optimizer.StableSPAM` 4.1.0 (its default, non-foreach path) step for step, with its
  defaults. Where it differs from the paper's Algorithm 1 we follow it: Adam's bias corrections restart
  at each momentum reset while the AdaClip and AdaGN corrections use the global t; the optional cosine
  decay of :math:`\beta_1` and :math:`\gamma_1` (its `t_max`, `eta_min`); and the skip of an all-zero
  tensor. Names: the reference's `theta` (an EMA decay) is `max_decay` here, because `theta` is SPAM's
  spike threshold in this module; its `update_proj_gap` is `reset_interval`, as in `scale_by_spam`; its
  `gamma1=-1` (use :math:`\beta_1`) is ``gamma1=None``; `t_max` and `eta_min` are `momentum_decay_steps`
  and `momentum_decay_floor`.

  Args:
    b1, b2: Adam's decays, in [0, 1).
    gamma1: the decay of the EMA of the tensor norm, in [0, 1); None: `b1`.
    gamma2: the decay of the EMA of the squared tensor norm, in [0, 1).
    max_decay: the decay of the EMA of ``max |g_i|``, in [0, 1).
    reset_interval: steps between momentum resets, >= 1.
    eps: added to the square roots, >= 0.
    momentum_decay_steps: T of the cosine decay of b1 and gamma1, >= 1, or None (no decay).
    momentum_decay_floor: f, the decay's final multiplier, in [0, 1].

  Returns:
    An `optax.GradientTransformationExtraArgs` with a `StableSpamState`; its update is a direction (scale
    it by the negative learning rate, as `stable_spam` does).

  References:
    Huang et al., "Stable-SPAM: How to Train in 4-Bit More Stably than 16-Bit Adam", arXiv 2502.17055, 2025.

  Example:
    >>> import jax.numpy as jnp, optax
    >>> from acclip_optax import scale_by_stable_spam
    >>> tx = optax.chain(scale_by_stable_spam(), optax.scale_by_learning_rate(1e-3))
    >>> updates, state = tx.update(jnp.ones(3), tx.init(jnp.zeros(3)))
  """
  for name, value in (("b1", b1), ("b2", b2), ("gamma2", gamma2), ("max_decay", max_decay)):
    check_in_range(name, value, 0.0, 1.0)
  if gamma1 is not None:
    check_in_range("gamma1", gamma1, 0.0, 1.0)
  norm_decay = b1 if gamma1 is None else gamma1
  reset_interval = _check_steps("reset_interval", reset_interval, 1)
  check_in_range("eps", eps, 0.0, math.inf)
  if momentum_decay_steps is not None:
    momentum_decay_steps = _check_steps("momentum_decay_steps", momentum_decay_steps, 1)
  check_in_range("momentum_decay_floor", momentum_decay_floor, 0.0, 1.0, high_inclusive=True)

  def init_fn(params):
    check_real_floating_leaves("params", params)
    scalar = lambda p: jnp.zeros([], jnp.promote_types(p.dtype, jnp.float32))
    return StableSpamState(
        count=jnp.zeros([], jnp.int32), mu=jax.tree.map(lambda p: jnp.zeros_like(p, dtype=p.dtype), params),
        nu=jax.tree.map(lambda p: jnp.zeros_like(p, dtype=p.dtype), params), max_ema=jax.tree.map(scalar, params),
        norm_ema=jax.tree.map(scalar, params), norm_sq_ema=jax.tree.map(scalar, params),
        clip_fraction=jnp.zeros([], jnp.float32), nonfinite_count=jnp.zeros([], jnp.int32))

  def update_fn(updates, state, params=None, **extra_args):
    del params, extra_args
    check_real_floating_leaves("updates", updates)
    check_same_tree("updates", updates, "the optimizer state (made by init)", state.mu)
    dtype = _float_dtype(updates)
    step = state.count + 1
    t = step.astype(dtype)
    momentum_scale = (jnp.ones([], dtype) if momentum_decay_steps is None else
                      _stable_spam_momentum_scale(t, momentum_decay_steps, momentum_decay_floor).astype(dtype))
    beta1, gamma = b1 * momentum_scale, norm_decay * momentum_scale
    reset = step % reset_interval == 0
    since_reset = jnp.where(step >= reset_interval, step % reset_interval + 1, step).astype(dtype)
    adam_correction1 = 1 - beta1 ** since_reset
    adam_correction2 = jnp.sqrt(1 - jnp.asarray(b2, dtype) ** since_reset)
    max_correction = 1 - jnp.asarray(max_decay, dtype) ** t
    norm_correction1 = 1 - gamma ** t
    norm_correction2 = 1 - jnp.asarray(gamma2, dtype) ** t
    leaves, treedef = jax.tree.flatten(updates)
    mus, nus = treedef.flatten_up_to(state.mu), treedef.flatten_up_to(state.nu)
    max_emas = treedef.flatten_up_to(state.max_ema)
    norm_emas, norm_sq_emas = treedef.flatten_up_to(state.norm_ema), treedef.flatten_up_to(state.norm_sq_ema)
    outputs = {name: [] for name in ("direction", "mu", "nu", "max_ema", "norm_ema", "norm_sq_ema")}
    # max |g| per leaf first: a NaN or inf anywhere in g makes it NaN or inf, which is the finiteness test. A
    # skipped step then runs as a step that no tensor is active in (the moments and EMAs kept, no reset, a
    # zero direction), with no select between the old and the new moments.
    largests = [jnp.max(jnp.abs(g.astype(jnp.promote_types(g.dtype, jnp.float32))), initial=0.0) for g in leaves]
    finite = jnp.all(jnp.isfinite(jnp.stack(largests))) if leaves else jnp.array(True)
    reset = reset & finite
    spike_counts, sizes = [], []
    for g, largest, mu, nu, max_ema, norm_ema, norm_sq_ema in zip(leaves, largests, mus, nus, max_emas, norm_emas,
                                                                  norm_sq_emas):
      g32 = g.astype(jnp.promote_types(g.dtype, jnp.float32))
      max_ema = jnp.where(finite, max_ema + (1 - max_decay) * (largest.astype(max_ema.dtype) - max_ema), max_ema)
      threshold = (max_ema / max_correction).astype(g32.dtype)
      spike = jnp.abs(g32) > threshold
      clipped = jnp.where(spike, g32 / largest * threshold, g32)
      norm = jnp.sqrt(jnp.sum(jnp.square(clipped))).astype(norm_ema.dtype)
      active = (norm > 0) & finite
      norm_ema = jnp.where(active, norm_ema + (1 - gamma) * (norm - norm_ema), norm_ema)
      norm_sq_ema = jnp.where(active, norm_sq_ema + (1 - gamma2) * (jnp.square(norm) - norm_sq_ema), norm_sq_ema)
      norm_scale = (norm_ema / norm_correction1) / (jnp.sqrt(norm_sq_ema / norm_correction2) + eps)
      normalized = clipped * (norm_scale / jnp.where(active, norm, 1.0)).astype(g32.dtype)
      mu32 = jnp.where(reset, 0, mu.astype(g32.dtype))
      nu32 = jnp.where(reset, 0, nu.astype(g32.dtype))
      m = jnp.where(active, mu32 + (1 - beta1) * (normalized - mu32), mu32)
      v = jnp.where(active, b2 * nu32 + (1 - b2) * jnp.square(normalized), nu32)
      direction = (m / adam_correction1) / (jnp.sqrt(v) / adam_correction2 + eps)
      outputs["direction"].append(jnp.where(active, direction, 0).astype(g.dtype))
      outputs["mu"].append(m.astype(mu.dtype))
      outputs["nu"].append(v.astype(nu.dtype))
      outputs["max_ema"].append(max_ema)
      outputs["norm_ema"].append(norm_ema)
      outputs["norm_sq_ema"].append(norm_sq_ema)
      spike_counts.append(jnp.sum(spike, dtype=jnp.int32))
      sizes.append(g.size)
    total = sum(sizes)
    fraction = (sum(c.astype(jnp.float32) for c in spike_counts) / total) if total else jnp.zeros([], jnp.float32)
    unflatten = {name: treedef.unflatten(values) for name, values in outputs.items()}
    state = StableSpamState(count=jnp.where(finite, optax.safe_increment(state.count), state.count),
                            mu=unflatten["mu"], nu=unflatten["nu"], max_ema=unflatten["max_ema"],
                            norm_ema=unflatten["norm_ema"], norm_sq_ema=unflatten["norm_sq_ema"],
                            clip_fraction=jnp.where(finite, fraction, state.clip_fraction),
                            nonfinite_count=jnp.where(finite, state.nonfinite_count,
                                                      optax.safe_increment(state.nonfinite_count)))
    return unflatten["direction"], state

  return optax.GradientTransformationExtraArgs(init_fn, update_fn)


def stable_spam(learning_rate: optax.ScalarOrSchedule, b1: float = 0.9, b2: float = 0.999,
                gamma1: float | None = 0.7, gamma2: float = 0.9, max_decay: float = 0.999,
                reset_interval: int = 1000, eps: float = 1e-8, weight_decay: float = 0.0, mask: Any = None, *,
                momentum_decay_steps: int | None = None,
                momentum_decay_floor: float = 0.5) -> optax.GradientTransformationExtraArgs:
  r"""Stable-SPAM (Huang et al. 2025) with decoupled weight decay, as `pytorch_optimizer.StableSPAM`.

  .. math::
    x \leftarrow x - \eta_k (u_k + \lambda x)

  with :math:`u_k` from `scale_by_stable_spam` and :math:`\lambda` = `weight_decay` on the leaves `mask`
  selects: the reference's decay :math:`x \leftarrow (1 - \eta_k \lambda) x` before its step.

  Args:
    learning_rate: :math:`\eta`, a float or a schedule.
    b1, b2, gamma1, gamma2, max_decay, reset_interval, eps, momentum_decay_steps, momentum_decay_floor:
      see `scale_by_stable_spam`.
    weight_decay: :math:`\lambda`, >= 0.
    mask: the leaves to decay (a pytree of booleans or a function of the params), None: all.

  Returns:
    ``chain(scale_by_stable_spam, [add_decayed_weights,] scale_by_learning_rate)``.

  References:
    Huang et al., "Stable-SPAM: How to Train in 4-Bit More Stably than 16-Bit Adam", arXiv 2502.17055, 2025.

  Example:
    >>> import jax.numpy as jnp
    >>> from acclip_optax import stable_spam
    >>> tx = stable_spam(1e-3)
    >>> updates, state = tx.update(jnp.ones(3), tx.init(jnp.zeros(3)))
  """
  check_in_range("weight_decay", weight_decay, 0.0, math.inf)
  parts = [scale_by_stable_spam(b1, b2, gamma1, gamma2, max_decay, reset_interval, eps, momentum_decay_steps,
                                momentum_decay_floor)]
  if not (isinstance(weight_decay, (int, float)) and weight_decay == 0):  # a traced one may be nonzero
    parts.append(optax.add_decayed_weights(weight_decay, mask))
  parts.append(optax.scale_by_learning_rate(learning_rate))
  return optax.chain(*parts)


# ------------------------------------------------------------------------------------------- skip-step
class SkipStepState(NamedTuple):
  """State of `skip_step_on_spikes`.

  Attributes:
    count: int32, updates seen (skipped or not).
    inner_state: the wrapped transformation's state (unchanged by a skipped step).
    grad_norms, losses: ring buffers of the last `window` recorded global norms and losses.
    num_recorded: int32, steps recorded in them (a step with a non-finite norm or loss is not recorded).
    skip_count: int32, steps skipped so far.
    skipped: 1.0 when the last step was skipped, else 0.0.

  References:
    OLMo-core `olmo_core.optim.SkipStepOptimizer`; levanter `SkipStepConfig`. The OLMo 2 report (Team OLMo et
    al., "2 OLMo 2 Furious", arXiv 2501.00656, 2025) describes skipping steps on loss and norm spikes.
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

  tested once the window holds max(2, w // 2 - 1) earlier steps (before that no step is skipped). Every
  step's norm and loss enter the window, skipped or not. As OLMo-core's `SkipStepOptimizer` (rolling
  interval 128, sigma factor 6; a value that is not finite fails the test and is skipped) and levanter's
  `SkipStepConfig`, with two differences: a non-finite norm or loss is not recorded (so one NaN does not
  make every later mean NaN), and at least 2 earlier values are needed (OLMo-core's test starts at 1
  when w < 6, where the ddof = 1 deviation of one value is NaN and every step is skipped). Before the test
  starts a non-finite step passes; wrap the result in `optax.apply_if_finite` for those.

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
  window = _check_steps("window", window, 2)
  check_in_range("sigma", sigma, 0.0, math.inf)
  inner = optax.with_extra_args_support(inner)

  def init_fn(params):
    check_real_floating_leaves("params", params)
    dtype = _float_dtype(params)
    zero_count = lambda: jnp.zeros([], jnp.int32)  # a new buffer per leaf: a donated state may not repeat one
    return SkipStepState(count=zero_count(), inner_state=inner.init(params), grad_norms=jnp.zeros([window], dtype),
                         losses=jnp.zeros([window], dtype), num_recorded=zero_count(), skip_count=zero_count(),
                         skipped=jnp.zeros([], dtype))

  def update_fn(updates, state, params=None, *, loss=None, **extra_args):
    check_real_floating_leaves("updates", updates)
    if params is not None:  # before the inner transformation, which may fail on another tree less clearly
      check_same_tree("updates", updates, "the params", params)
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
    skip = testing & spike
    inner_updates, inner_state = inner.update(updates, state.inner_state, params, **extra_args)
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
