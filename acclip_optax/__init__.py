"""acclip_optax: GClip, CClip and ACClip (Zhang et al., NeurIPS 2020) as composable Optax transformations,
and the adaptive spike-clipping methods that followed (ZClip, AdaGC, AutoClip, SPAM, Stable-SPAM,
skip-step)."""
import importlib as _importlib

from acclip_optax import _deprecation, noise
from acclip_optax._acclip import ACClipThresholdRule, ScaleByACClipState, acclip, acclip_clip_fraction, scale_by_acclip
from acclip_optax._acclip_ports import ScaleByACClipPortsState, acclip_ports, scale_by_acclip_ports
from acclip_optax._adagc import AdaGCState, adagc
from acclip_optax._autoclip import AutoClipState, autoclip
from acclip_optax._cclip import ClipByCoordinateState, cclip, clip_by_coordinate
from acclip_optax._gclip import ClipByScheduledGlobalNormState, clip_by_scheduled_global_norm, gclip
from acclip_optax._qk_clip import QKClipState, qk_clip
from acclip_optax._schedule import clip_threshold_schedule, strongly_convex_lr_schedule
from acclip_optax._skip_step import SkipStepState, skip_step_on_spikes
from acclip_optax._spam import SpamState, scale_by_spam, spam
from acclip_optax._stable_spam import StableSpamState, scale_by_stable_spam, stable_spam
from acclip_optax._stats import clip_stats
from acclip_optax._zclip import ZClipState, zclip

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
  if name in _deprecation.MOVED_MODULES:  # a module of an earlier version, imported on first use
    _deprecation.warn(f"acclip_optax.{name}", "the names of acclip_optax", " (the package is the one public surface)")
    return _importlib.import_module(f"acclip_optax.{name}")
  if name in _DEPRECATED:
    new = _DEPRECATED[name]
    _deprecation.warn(f"acclip_optax.{name}", f"acclip_optax.{new}",
                      " (optax.clip_by_global_norm is optax's own, with a fixed threshold and no state)")
    return globals()[new]
  raise AttributeError(f"module 'acclip_optax' has no attribute {name!r}")
