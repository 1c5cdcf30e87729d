"""Deprecated: the names of `acclip_optax.alias` are imported from `acclip_optax` (this module goes in the
next version)."""
from acclip_optax import _deprecation

__getattr__ = _deprecation.moved_module(__name__, ("acclip", "acclip_ports", "cclip", "gclip"))
