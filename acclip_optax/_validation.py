"""Constructor-time checks of hyperparameters that may also arrive as traced arrays.

`optax.inject_hyperparams` calls the constructors inside `update` with traced values, so a check can only
run when the value is concrete; traced values pass unchecked.
"""
from __future__ import annotations

import math
from typing import Any

import jax
import numpy as np


def concrete_value(value: Any) -> np.ndarray | None:
  """`value` as a NumPy array when it is concrete, None when it is traced (inside jit/vmap/grad)."""
  try:
    return np.asarray(value)
  except (jax.errors.ConcretizationTypeError, jax.errors.TracerArrayConversionError,
          jax.errors.TracerBoolConversionError):
    return None


def check_in_range(name: str, value: Any, low: float, high: float, *, low_inclusive: bool = True,
                   high_inclusive: bool = False) -> None:
  """Raises ValueError naming `name` and `value` unless every entry of a concrete `value` lies in range."""
  concrete = concrete_value(value)
  if concrete is None or not np.issubdtype(concrete.dtype, np.number):
    return
  above = concrete >= low if low_inclusive else concrete > low
  below = concrete <= high if high_inclusive else concrete < high
  if not np.all(above & below):
    left = "[" if low_inclusive else "("
    right = "]" if high_inclusive else ")"
    high_text = "inf" if math.isinf(high) else f"{high:g}"
    raise ValueError(f"{name}={value!r} must lie in {left}{low:g}, {high_text}{right}")


def check_positive(name: str, value: Any) -> None:
  """Raises ValueError unless every leaf of a concrete `value` (a number, array or pytree) is > 0."""
  for leaf in jax.tree.leaves(value):
    concrete = concrete_value(leaf)
    if concrete is not None and np.issubdtype(concrete.dtype, np.number) and not np.all(concrete > 0):
      raise ValueError(f"{name}={value!r} must be > 0")
