"""Deprecated: the names of `acclip_optax.stats` are imported from `acclip_optax` (this module goes in the
next version)."""
from acclip_optax import _deprecation

__getattr__ = _deprecation.moved_module(__name__, ("clip_stats",))
