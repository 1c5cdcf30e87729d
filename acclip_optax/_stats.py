"""Clipping statistics read from an optimizer state, without a host sync."""
from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp

from acclip_optax._acclip import ScaleByACClipState, acclip_clip_fraction
from acclip_optax._acclip_ports import ScaleByACClipPortsState
from acclip_optax._adagc import AdaGCState
from acclip_optax._autoclip import AutoClipState
from acclip_optax._cclip import ClipByCoordinateState
from acclip_optax._gclip import ClipByScheduledGlobalNormState
from acclip_optax._qk_clip import QKClipState
from acclip_optax._skip_step import SkipStepState
from acclip_optax._spam import SpamState
from acclip_optax._stable_spam import StableSpamState
from acclip_optax._zclip import ZClipState

# state type -> {statistic name: how to read it from the state}
_NONFINITE = {"nonfinite_steps": lambda state: state.nonfinite_count.astype(jnp.float32)}
_GLOBAL_CLIP_STATS = {"global_norm": lambda state: state.global_norm,
                      "clip_threshold": lambda state: state.clip_threshold,
                      "clipped": lambda state: state.clipped, **_NONFINITE}
_STATS_BY_STATE = {
    ScaleByACClipState: {"clip_fraction": acclip_clip_fraction},
    ScaleByACClipPortsState: {"clip_fraction": acclip_clip_fraction},
    ClipByCoordinateState: {"clip_fraction": lambda state: state.clip_fraction},
    ClipByScheduledGlobalNormState: {"global_norm": lambda state: state.global_norm},
    ZClipState: _GLOBAL_CLIP_STATS,
    AutoClipState: _GLOBAL_CLIP_STATS,
    AdaGCState: {"global_norm": lambda state: state.global_norm,
                 "clip_fraction": lambda state: state.clip_fraction, **_NONFINITE},
    SpamState: {"clip_fraction": lambda state: state.clip_fraction, **_NONFINITE},
    StableSpamState: {"clip_fraction": lambda state: state.clip_fraction, **_NONFINITE},
    QKClipState: {"max_attention_logit": lambda state: state.max_logit,
                  "heads_clipped": lambda state: state.heads_clipped.astype(jnp.float32)},
    SkipStepState: {"skip_count": lambda state: state.skip_count.astype(jnp.float32),
                    "skipped": lambda state: state.skipped},
}


def _is_clip_state(node: Any) -> bool:
  return isinstance(node, tuple(_STATS_BY_STATE))


def _clip_states(opt_state: Any):
  """The states `_STATS_BY_STATE` knows, outermost first; a skip-step's inner state after the skip-step."""
  for node in jax.tree.leaves(opt_state, is_leaf=_is_clip_state):
    if _is_clip_state(node):
      yield node
      if isinstance(node, SkipStepState):
        yield from _clip_states(node.inner_state)


def clip_stats(opt_state: Any) -> dict[str, jax.Array]:
  """The clipping statistics held anywhere in an optimizer state.

  Walks the state as a pytree, so it sees through `optax.chain`, `optax.inject_hyperparams`,
  `optax.masked`, `optax.MultiSteps`, `optax.apply_if_finite` and any nesting of them.

  Keys: ``"clip_fraction"`` (ACClip, the ports' ACClip, CClip, SPAM and Stable-SPAM: the fraction of
  coordinates clipped at the last update; AdaGC: the fraction of tensors), ``"global_norm"`` (GClip, ZClip,
  AutoClip, AdaGC: the pre-clip global norm), for ZClip and AutoClip ``"clip_threshold"`` (the norm the
  update was clipped to; ZClip: inf when it was not) and ``"clipped"`` (1.0 or 0.0), and for
  `skip_step_on_spikes` ``"skip_count"`` (steps skipped so far) and ``"skipped"`` (1.0 when the last step
  was), then its inner transformation's; for ZClip, AdaGC, AutoClip, SPAM and Stable-SPAM
  ``"nonfinite_steps"`` (steps whose gradient was not finite, given a zero update); for `qk_clip`
  ``"max_attention_logit"`` (the largest logit of the last step) and ``"heads_clipped"``. When a state holds several
  transformations with the same statistic, the first (outermost, leftmost) keeps the plain key and the
  others get ``"/1"``, ``"/2"``, ... in the order they appear.

  Args:
    opt_state: any optimizer state (possibly replicated or traced).

  Returns:
    A dict of float32 scalar arrays, computed on the device (no host sync); empty when the state holds no
    clipping transformation. ACClip's fraction is recomputed from its mu and nu (one read of each, see
    `acclip_clip_fraction`), so call this where you log, e.g. every few hundred steps, rather than in every
    step: that keeps the update itself a single fused pass.

  References:
    Zhang, Karimireddy, Veit, Kim, Reddi, Kumar and Sra, "Why are Adaptive Methods Good for Attention
    Models?", NeurIPS 2020, arXiv 1912.03194.
    The method each state belongs to: see its transformation.

  Example:
    >>> import jax.numpy as jnp
    >>> from acclip_optax import acclip, clip_stats
    >>> opt = acclip(0.1)
    >>> sorted(clip_stats(opt.init(jnp.zeros(3))))
    ['clip_fraction']
  """
  stats: dict[str, jax.Array] = {}
  seen: dict[str, int] = {}
  for node in _clip_states(opt_state):
    for name, read in _STATS_BY_STATE[type(node)].items():
      key = name if name not in seen else f"{name}/{seen[name]}"
      seen[name] = seen.get(name, 0) + 1
      stats[key] = jnp.asarray(read(node)).astype(jnp.float32)  # float32 whatever the params' dtype
  return stats
