"""Constructor-time checks of hyperparameters that may also arrive as traced arrays.

`optax.inject_hyperparams` calls the constructors inside `update` with traced values, so a check can only
run when the value is concrete; traced values pass unchecked.
"""
from __future__ import annotations

import math
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np


def concrete_value(value: Any) -> np.ndarray | None:
  """`value` as a NumPy array when it is concrete, None when it is traced (inside jit/vmap/grad)."""
  try:
    return np.asarray(value)
  except (jax.errors.ConcretizationTypeError, jax.errors.TracerArrayConversionError,
          jax.errors.TracerBoolConversionError):
    return None


def check_real_number(name: str, value: Any) -> np.ndarray | None:
  """A concrete `value` as an array of real numbers (None when traced); TypeError for anything else.

  Refuses None, strings, booleans and complex numbers, which would otherwise fail (or compute nonsense)
  only at the first update.
  """
  if value is None or isinstance(value, (str, bytes, bool)):
    raise TypeError(f"{name}={value!r} must be a real number (or an array of them), "
                    f"not {type(value).__name__}")
  concrete = concrete_value(value)
  if concrete is None:
    return None
  # jnp.issubdtype: NumPy does not count bfloat16 (which inject_hyperparams may give) as floating.
  if not (jnp.issubdtype(concrete.dtype, jnp.integer) or jnp.issubdtype(concrete.dtype, jnp.floating)):
    raise TypeError(f"{name}={value!r} must be a real number (or an array of them), not {concrete.dtype}")
  return concrete


def check_in_range(name: str, value: Any, low: float, high: float, *, low_inclusive: bool = True,
                   high_inclusive: bool = False) -> None:
  """Raises ValueError naming `name` and `value` unless every entry of a concrete `value` lies in range.

  NaN lies in no range; a value that is not a real number is a TypeError (`check_real_number`).
  """
  concrete = check_real_number(name, value)
  if concrete is None:
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


def check_floating_dtype(name: str, dtype: Any) -> None:
  """TypeError unless `dtype` is a floating-point or complex dtype (integers would truncate updates to 0)."""
  if not jnp.issubdtype(dtype, jnp.inexact):
    raise TypeError(f"{name} has dtype {np.dtype(dtype).name}; acclip_optax transformations need "
                    "floating-point (or complex) values: an integer update or moment truncates to 0")


def check_real_floating_leaves(name: str, tree: Any) -> None:
  """TypeError unless every leaf of `tree` has a real floating-point dtype (complex is refused too)."""
  check_floating_leaves(name, tree)
  for path, leaf in jax.tree_util.tree_flatten_with_path(tree)[0]:
    if jnp.issubdtype(jnp.result_type(leaf), jnp.complexfloating):
      raise TypeError(f"{name}{jax.tree_util.keystr(path)} is complex; this transformation supports real "
                      "floating-point values only")


def check_floating_leaves(name: str, tree: Any) -> None:
  """`check_floating_dtype` for every leaf of `tree`, naming the leaf's path."""
  for path, leaf in jax.tree_util.tree_flatten_with_path(tree)[0]:
    check_floating_dtype(f"{name}{jax.tree_util.keystr(path)}", jnp.result_type(leaf))


def check_same_tree(name: str, tree: Any, reference_name: str, reference: Any) -> None:
  """ValueError unless `tree` has the structure and leaf shapes of `reference`, naming both."""
  structure, reference_structure = jax.tree.structure(tree), jax.tree.structure(reference)
  if structure != reference_structure:
    raise ValueError(f"{name} has the tree structure {structure}, but {reference_name} has "
                     f"{reference_structure}; pass updates shaped like the params given to init")
  for (path, leaf), reference_leaf in zip(jax.tree_util.tree_flatten_with_path(tree)[0],
                                          jax.tree.leaves(reference)):
    if np.shape(leaf) != np.shape(reference_leaf):
      raise ValueError(f"{name}{jax.tree_util.keystr(path)} has shape {np.shape(leaf)}, but "
                       f"{reference_name} holds shape {np.shape(reference_leaf)} there; pass updates "
                       "shaped like the params given to init")
