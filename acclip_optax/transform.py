"""Deprecated: the names of `acclip_optax.transform` are imported from `acclip_optax` (this module goes in the
next version)."""
from acclip_optax import _deprecation

__getattr__ = _deprecation.moved_module(__name__, ("ACClipThresholdRule", "ClipByGlobalNormState", "clip_by_global_norm", "ClipByCoordinateState", "ClipByScheduledGlobalNormState", "ScaleByACClipPortsState", "ScaleByACClipState", "acclip_clip_fraction", "clip_by_coordinate", "clip_by_scheduled_global_norm", "scale_by_acclip", "scale_by_acclip_ports"))
