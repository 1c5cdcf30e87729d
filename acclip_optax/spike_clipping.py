"""Deprecated: the names of `acclip_optax.spike_clipping` are imported from `acclip_optax` (this module goes in the
next version)."""
from acclip_optax import _deprecation

__getattr__ = _deprecation.moved_module(__name__, ("AdaGCState", "AutoClipState", "SkipStepState", "SpamState", "StableSpamState", "ZClipState", "adagc", "autoclip", "scale_by_spam", "scale_by_stable_spam", "skip_step_on_spikes", "spam", "stable_spam", "zclip"))
