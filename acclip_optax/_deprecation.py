"""Names and modules of an earlier version, kept one version with a DeprecationWarning (private)."""
from __future__ import annotations

import functools
import importlib
import warnings
from collections.abc import Callable
from typing import Any


def warn(old: str, new: str, reason: str = "") -> None:
  warnings.warn(f"{old} is deprecated and goes in the next version: use {new}{reason}", DeprecationWarning,
                stacklevel=3)


# The public modules of an earlier version: their names moved to the package (or, for type aliases, to the
# private module that defines them now).
MOVED_MODULES = ("alias", "schedule", "spike_clipping", "stats", "transform")
# Old module name -> the names it exported, each to where it lives now ("acclip_optax" for the package).
_MOVED_NAMES = {
    "transform": dict.fromkeys(("ACClipThresholdRule", "ClipByCoordinateState", "ClipByScheduledGlobalNormState",
                                "ScaleByACClipPortsState", "ScaleByACClipState", "acclip_clip_fraction",
                                "clip_by_coordinate", "clip_by_scheduled_global_norm", "scale_by_acclip",
                                "scale_by_acclip_ports"), "acclip_optax") | {
        "Threshold": "acclip_optax._common", "clip_by_global_norm": "acclip_optax",
        "ClipByGlobalNormState": "acclip_optax"},
    "spike_clipping": dict.fromkeys(("AdaGCState", "AutoClipState", "SkipStepState", "SpamState", "StableSpamState",
                                     "ZClipState", "adagc", "autoclip", "scale_by_spam", "scale_by_stable_spam",
                                     "skip_step_on_spikes", "spam", "stable_spam", "zclip"), "acclip_optax"),
    "alias": dict.fromkeys(("acclip", "acclip_ports", "cclip", "gclip"), "acclip_optax") | {
        "Mask": "acclip_optax._acclip"},
    "stats": {"clip_stats": "acclip_optax"},
    "schedule": dict.fromkeys(("clip_threshold_schedule", "strongly_convex_lr_schedule"), "acclip_optax"),
}
# Names the old modules exported that were renamed in the package as well.
_RENAMED = {"clip_by_global_norm": "clip_by_scheduled_global_norm",
            "ClipByGlobalNormState": "ClipByScheduledGlobalNormState"}


def moved_names(module: str) -> list[str]:
  """The names `acclip_optax.<module>` exported (its `__all__`)."""
  return sorted(_MOVED_NAMES[module])


def moved_module(module_name: str) -> Callable[[str], Any]:
  """The `__getattr__` of `acclip_optax.<module>`, whose names moved: each lookup warns and returns the
  object where it lives now (a renamed one under its new name)."""
  short = module_name.rsplit(".", 1)[-1]
  names = _MOVED_NAMES[short]

  def getattr_(name: str) -> Any:
    if name not in names:
      raise AttributeError(f"module {module_name!r} has no attribute {name!r}")
    new = _RENAMED.get(name, name)
    if names[name] == "acclip_optax":
      warn(f"{module_name}.{name}", f"acclip_optax.{new}", " (the package is the one public surface)")
    else:  # a type alias, private now
      warn(f"{module_name}.{name}", "a type of your own", f" (it is {names[name]}.{new}, a private name)")
    return getattr(importlib.import_module(names[name]), new)

  return getattr_


def renamed_arguments(**renames: str) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
  """A decorator that accepts each old keyword (`old=new`) for one version, with a DeprecationWarning.

  The wrapper keeps the function's signature (`inspect.signature` follows `__wrapped__`), so
  `optax.inject_hyperparams` sees the new names.
  """
  def decorate(function: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(function)
    def wrapper(*args, **kwargs):
      for old, new in renames.items():
        if old in kwargs:
          if new in kwargs:
            raise TypeError(f"{function.__name__}() got both {old}= (deprecated) and {new}=; give {new}= only")
          warn(f"{function.__name__}({old}=...)", f"{new}=...")
          kwargs[new] = kwargs.pop(old)
      return function(*args, **kwargs)
    return wrapper
  return decorate
