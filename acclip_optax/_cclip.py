"""Coordinate-wise clipping (CClip, Zhang et al. 2020): `clip_by_coordinate` and the optimizer `cclip`."""
from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax

from acclip_optax._common import (
    check_floating_leaves, check_positive, check_updates_match_params, clipped_sgd, count_true, fraction, Threshold,
    value_at)


class ClipByCoordinateState(NamedTuple):
  """State of `clip_by_coordinate`: the step `count` (for schedules) and the last `clip_fraction`."""
  count: jax.Array
  clip_fraction: jax.Array


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
    check_updates_match_params(updates, params)
    taus = _thresholds_like(value_at(threshold, state.count), updates)
    clipped_counts = jax.tree.leaves(jax.tree.map(lambda g, t: count_true(jnp.abs(g) > t), updates, taus))
    state = ClipByCoordinateState(
        count=optax.safe_increment(state.count),
        clip_fraction=fraction(clipped_counts, [g.size for g in jax.tree.leaves(updates)]))
    return jax.tree.map(_clip_coordinates, updates, taus), state

  return optax.GradientTransformationExtraArgs(init_fn, update_fn)


def _thresholds_like(tau: Any, updates: optax.Updates) -> optax.Updates:
  """The thresholds as a tree shaped like the updates: a scalar for all, or a pytree shaped like them.

  Raises:
    ValueError: a pytree of another structure, or a leaf threshold that does not broadcast to its leaf's
      shape without changing it (a (3, 1) threshold for a (3,) leaf would turn the update into (3, 3)).
  """
  treedef = jax.tree.structure(updates)
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
  return treedef.unflatten(taus)


def _clip_coordinates(g: jax.Array, tau: Any) -> jax.Array:
  """clip(g, -tau, tau) for real g; for complex g the modulus is capped at tau and the phase kept."""
  if jnp.issubdtype(g.dtype, jnp.complexfloating):
    magnitude = jnp.abs(g)
    return (g * jnp.where(magnitude > tau, tau / jnp.where(magnitude > 0, magnitude, 1), 1)).astype(g.dtype)
  return jnp.clip(g, -tau, tau).astype(g.dtype)


def cclip(learning_rate: optax.ScalarOrSchedule, threshold: Threshold, momentum: float | None = None,
          nesterov: bool = False) -> optax.GradientTransformationExtraArgs:
  r"""SGD with coordinate-wise clipping (CClip): :math:`x_{k+1} = x_k - \eta_k\, \mathrm{clip}(\tau_k, g_k)`.

  A gradient with a NaN or inf enters the state as in optax's own rules; wrap the optimizer in
  `optax.apply_if_finite` to skip such steps.

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
  return clipped_sgd(clip_by_coordinate(threshold), learning_rate, momentum, nesterov)
