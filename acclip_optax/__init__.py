"""acclip_optax: GClip, CClip and ACClip (Zhang et al., NeurIPS 2020) as composable Optax transformations,
and the adaptive spike-clipping methods that followed (ZClip, AdaGC, AutoClip, SPAM, Stable-SPAM,
skip-step)."""
from acclip_optax import noise
from acclip_optax.alias import acclip, acclip_ports, cclip, gclip
from acclip_optax.schedule import clip_threshold_schedule, strongly_convex_lr_schedule
from acclip_optax.spike_clipping import (
    AdaGCState, AutoClipState, SkipStepState, SpamState, StableSpamState, ZClipState, adagc, autoclip,
    scale_by_spam, scale_by_stable_spam, skip_step_on_spikes, spam, stable_spam, zclip)
from acclip_optax.stats import clip_stats
from acclip_optax.transform import (
    ACClipThresholdRule,
    ClipByCoordinateState,
    ClipByGlobalNormState,
    ScaleByACClipPortsState,
    ScaleByACClipState,
    acclip_clip_fraction,
    clip_by_coordinate,
    clip_by_global_norm,
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
    "ClipByGlobalNormState",
    "ScaleByACClipPortsState",
    "ScaleByACClipState",
    "acclip",
    "acclip_clip_fraction",
    "acclip_ports",
    "cclip",
    "clip_by_coordinate",
    "clip_by_global_norm",
    "clip_stats",
    "clip_threshold_schedule",
    "gclip",
    "noise",
    "scale_by_acclip",
    "scale_by_acclip_ports",
    "strongly_convex_lr_schedule",
]
