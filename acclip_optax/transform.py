"""Deprecated: the names of `acclip_optax.transform` are imported from `acclip_optax` (this module goes in the
next version)."""
from acclip_optax import _deprecation

__all__ = _deprecation.moved_names("transform")
__getattr__ = _deprecation.moved_module(__name__)
