"""Deprecated: the names of `acclip_optax.spike_clipping` are imported from `acclip_optax` (this module goes in the
next version)."""
from acclip_optax import _deprecation

__all__ = _deprecation.moved_names("spike_clipping")
__getattr__ = _deprecation.moved_module(__name__)
