"""Names and modules of an earlier version, kept one version with a DeprecationWarning (private)."""
from __future__ import annotations

import functools
import importlib
import warnings
from collections.abc import Callable, Iterable
from typing import Any


def warn(old: str, new: str, reason: str = "") -> None:
  warnings.warn(f"{old} is deprecated and goes in the next version: use {new}{reason}", DeprecationWarning,
                stacklevel=3)


def moved_module(module_name: str, names: Iterable[str]) -> Callable[[str], Any]:
  """A module `__getattr__` for a module whose names moved to the package: each lookup warns and returns
  `acclip_optax.NAME`."""
  names = frozenset(names)

  def getattr_(name: str) -> Any:
    if name not in names:
      raise AttributeError(f"module {module_name!r} has no attribute {name!r}")
    warn(f"{module_name}.{name}", f"acclip_optax.{name}", " (the package is the one public surface)")
    return getattr(importlib.import_module("acclip_optax"), name)

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
