"""Clipping statistics read from an optimizer state, without a host sync."""
from __future__ import annotations

from typing import Any

import jax

from acclip_optax.transform import (
    ClipByCoordinateState, ClipByGlobalNormState, ScaleByACClipPortsState, ScaleByACClipState)

__all__ = ["clip_stats"]

_STATS_BY_STATE = {
    ScaleByACClipState: "clip_fraction",
    ScaleByACClipPortsState: "clip_fraction",
    ClipByCoordinateState: "clip_fraction",
    ClipByGlobalNormState: "global_norm",
}


def clip_stats(opt_state: Any) -> dict[str, jax.Array]:
  """The clipping statistics held anywhere in an optimizer state.

  Walks the state as a pytree, so it sees through `optax.chain`, `optax.inject_hyperparams`,
  `optax.masked`, `optax.MultiSteps`, `optax.apply_if_finite` and any nesting of them.

  Keys: ``"clip_fraction"`` (ACClip, the ports' ACClip and CClip: the fraction of coordinates clipped at
  the last update) and ``"global_norm"`` (GClip: the pre-clip global norm). When a state holds several
  transformations with the same statistic, the first (outermost, leftmost) keeps the plain key and the
  others get ``"/1"``, ``"/2"``, ... in the order they appear.

  Args:
    opt_state: any optimizer state (possibly replicated or traced).

  Returns:
    A dict of scalar arrays (the state's own arrays: no computation, no device-to-host copy); empty when
    the state holds no clipping transformation.

  Example:
    >>> import jax.numpy as jnp
    >>> from acclip_optax import acclip, clip_stats
    >>> opt = acclip(0.1)
    >>> sorted(clip_stats(opt.init(jnp.zeros(3))))
    ['clip_fraction']
  """
  is_clip_state = lambda node: isinstance(node, tuple(_STATS_BY_STATE))
  stats: dict[str, jax.Array] = {}
  seen: dict[str, int] = {}
  for node in jax.tree.leaves(opt_state, is_leaf=is_clip_state):
    if not is_clip_state(node):
      continue
    name = _STATS_BY_STATE[type(node)]
    key = name if name not in seen else f"{name}/{seen[name]}"
    seen[name] = seen.get(name, 0) + 1
    stats[key] = getattr(node, name)
  return stats
