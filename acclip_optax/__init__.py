"""acclip_optax: GClip, CClip and ACClip (Zhang et al., NeurIPS 2020) as composable Optax transformations,
and the adaptive spike-clipping methods that followed (ZClip, AdaGC, AutoClip, SPAM, Stable-SPAM,
skip-step)."""
import warnings

from acclip_optax import noise
from acclip_optax.alias import acclip, acclip_ports, cclip, gclip
from acclip_optax.qk_clip import QKClipState, qk_clip
from acclip_optax.schedule import clip_threshold_schedule, strongly_convex_lr_schedule
from acclip_optax.spike_clipping import (
    AdaGCState, AutoClipState, SkipStepState, SpamState, StableSpamState, ZClipState, adagc, autoclip,
    scale_by_spam, scale_by_stable_spam, skip_step_on_spikes, spam, stable_spam, zclip)
from acclip_optax.stats import clip_stats
from acclip_optax.transform import (
    ACClipThresholdRule,
    ClipByCoordinateState,
    ClipByScheduledGlobalNormState,
    ScaleByACClipPortsState,
    ScaleByACClipState,
    acclip_clip_fraction,
    clip_by_coordinate,
    clip_by_scheduled_global_norm,
    scale_by_acclip,
    scale_by_acclip_ports,
)

__version__ = "0.2.0"

__all__ = [
    "ACClipThresholdRule",
    "AdaGCState",
    "AutoClipState",
    "SkipStepState",
    "SpamState",
    "StableSpamState",
    "ZClipState",
    "adagc",
    "autoclip",
    "scale_by_spam",
    "scale_by_stable_spam",
    "skip_step_on_spikes",
    "spam",
    "stable_spam",
    "zclip",
    "ClipByCoordinateState",
    "QKClipState",
    "ClipByScheduledGlobalNormState",
    "ScaleByACClipPortsState",
    "ScaleByACClipState",
    "acclip",
    "acclip_clip_fraction",
    "acclip_ports",
    "cclip",
    "clip_by_coordinate",
    "clip_by_scheduled_global_norm",
    "clip_stats",
    "clip_threshold_schedule",
    "gclip",
    "noise",
    "qk_clip",
    "scale_by_acclip",
    "scale_by_acclip_ports",
    "strongly_convex_lr_schedule",
]

# Names of an earlier version, kept one version: they shadowed optax's `clip_by_global_norm` (a fixed
# threshold and an empty state) with a transformation that takes a schedule and keeps the pre-clip norm.
_DEPRECATED = {"clip_by_global_norm": "clip_by_scheduled_global_norm",
               "ClipByGlobalNormState": "ClipByScheduledGlobalNormState"}


def __getattr__(name: str):
  if name in _DEPRECATED:
    new = _DEPRECATED[name]
    warnings.warn(f"acclip_optax.{name} is deprecated and goes in the next version: use acclip_optax.{new} "
                  "(optax.clip_by_global_norm is optax's own, with a fixed threshold and no state)",
                  DeprecationWarning, stacklevel=2)
    return globals()[new]
  raise AttributeError(f"module 'acclip_optax' has no attribute {name!r}")
