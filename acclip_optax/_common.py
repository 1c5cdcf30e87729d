"""Pieces several transformations share (private): norms, dtypes, fractions, skips, and the checks of
settings and trees.

The constructor-time checks of hyperparameters may meet traced arrays: `optax.inject_hyperparams` calls the
constructors inside `update` with traced values, so a check runs only when the value is concrete; traced
values pass unchecked.
"""
from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax

# A clipping threshold: a float, a pytree of per-leaf or per-coordinate thresholds, or a schedule.
Threshold = float | jax.Array | optax.Params | Callable[[jax.Array], jax.Array]
# torch.nn.utils.clip_grad_norm_ scales by max_norm / (norm + 1e-6): the later methods' references clip
# through it.
TORCH_CLIP_EPS = 1e-6


# ---- checks of settings and trees

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


# ---- norms, dtypes, fractions, skips

def global_norm(updates: optax.Updates) -> jax.Array:
  r"""The global norm :math:`\|g\| = \sqrt{\sum_\ell \langle g_\ell, g_\ell \rangle}`, in at least float32.

  Each leaf's sum of squares is a dot product of the flattened leaf with itself (its conjugate for complex
  leaves): a reduction every backend runs as one vectorised, multi-threaded kernel (a matrix-unit op on
  TPU), where a sum of squares per leaf is a separate, slower reduction on XLA:CPU. The same value as
  `optax.tree.norm` up to the order of summation.
  """
  squares = [jnp.real(jnp.vdot(leaf, leaf)) for leaf in jax.tree.leaves(jax.tree.map(upcast, updates))]
  if not squares:
    return jnp.zeros([], jnp.float32)
  return jnp.sqrt(sum(squares[1:], squares[0]))


def global_norm_apart(updates: optax.Updates) -> tuple[jax.Array, optax.Updates]:
  """(`global_norm(updates)`, updates) behind an optimization barrier: the update that follows is compiled
  apart from the norm's reduction.

  XLA:CPU fuses the reduction with the element-wise update that reads the same gradients, and runs the
  fused loop on one thread: AdamW behind a global norm took 3.3x AdamW's time, 1.8x with the barrier
  (docs/benchmarks.md). The barrier changes no value; a GPU or TPU keeps the reduction a kernel of its own
  in any case.
  """
  norm = global_norm(updates)
  return jax.lax.optimization_barrier((norm, updates))


def upcast_dtype(dtype: Any) -> Any:
  """The dtype the math of a leaf of `dtype` runs in: at least float32."""
  return jnp.promote_types(dtype, jnp.float32)


def upcast(x: jax.Array) -> jax.Array:
  """x in at least float32: low-precision (bf16) leaves keep their dtype in the state, not in the math."""
  return x.astype(upcast_dtype(x.dtype))


def real_dtype(dtype: Any) -> Any:
  """float32 for complex64, float64 for complex128, the dtype itself otherwise."""
  return jnp.finfo(dtype).dtype if jnp.issubdtype(dtype, jnp.complexfloating) else jnp.dtype(dtype)


def float_dtype(tree: Any) -> Any:
  """The widest of float32 and the tree's leaves' dtypes: the dtype of a statistic of the whole tree."""
  return jnp.result_type(jnp.float32, *[leaf.dtype for leaf in jax.tree.leaves(tree)])


def fraction(counts: list[jax.Array], sizes: list[int]) -> jax.Array:
  """sum(counts) / sum(sizes) in float32 (no int32 overflow), 0 for no coordinates: a clipped fraction."""
  total = sum(sizes)
  if not total:
    return jnp.zeros([], jnp.float32)
  return sum(c.astype(jnp.float32) for c in counts) / jnp.float32(total)


# `count_true` sums rows of at most this many entries in uint8 (a row's count fits; wider rows took longer),
# and splits a last axis only into a number of rows divisible by _COUNT_ROWS_DIVISOR, so that a last axis
# sharded over up to that many devices splits along its shards.
_COUNT_ROW, _COUNT_ROWS_DIVISOR = 32, 16
# Below this many entries a count is one plain int32 sum.
_COUNT_PLAIN_BELOW = 1 << 16


def _count_row_width(length: int) -> int:
  """The largest power of two k <= _COUNT_ROW dividing `length` with length / k divisible by
  _COUNT_ROWS_DIVISOR; 0 when none is 8 or more."""
  width = _COUNT_ROW
  while width >= 8 and (length % width or (length // width) % _COUNT_ROWS_DIVISOR):
    width //= 2
  return width if width >= 8 else 0


def count_true(mask: jax.Array) -> jax.Array:
  """The number of true entries of a boolean array, as an exact int32 (a count of clipped coordinates).

  The same integer as ``jnp.sum(mask, dtype=jnp.int32)``, summed in two stages for a large array: its last
  axis of length L is split into L / k rows of k entries (k a power of two from 8 to 32 dividing L, with L / k
  divisible by 16), each row summed in uint8, then the row counts in int32. XLA:CPU writes a mask it sums to
  a buffer in the sum's dtype; a uint8 sum over short rows writes a quarter of the bytes: on a 30522 x 768
  leaf the count took 7 ms instead of 36, the time of one read (`benchmarks/fresh_buffers.py` has why a new
  buffer costs so much there). Only the last axis is split, into a number of rows that a sharding of it over
  up to 16 devices divides, so the array's sharding carries over and no mask moves between devices (tested
  on a mesh); a GPU or TPU sums a large array in stages anyway. An array sharded explicitly (sharding in
  types), a small one, or one whose last axis allows no such split is summed in one stage.
  """
  width = _count_row_width(mask.shape[-1]) if mask.ndim else 0
  spec = getattr(getattr(jax.typeof(mask), "sharding", None), "spec", ())
  if mask.size < _COUNT_PLAIN_BELOW or not width or any(axis is not None for axis in spec):
    return jnp.sum(mask, dtype=jnp.int32)
  rows = mask.reshape(*mask.shape[:-1], mask.shape[-1] // width, width).astype(jnp.uint8)
  return jnp.sum(jnp.sum(rows, axis=-1, dtype=jnp.uint8), dtype=jnp.int32)


def scale_tree(updates: optax.Updates, scale: jax.Array) -> optax.Updates:
  """Every leaf times `scale`, in the leaf's dtype."""
  return jax.tree.map(lambda g: (g * scale).astype(g.dtype), updates)


def torch_clip_scale(norm: jax.Array, max_norm: jax.Array) -> jax.Array:
  """min(1, max_norm / (norm + 1e-6)), the factor torch.nn.utils.clip_grad_norm_ applies."""
  return jnp.minimum(1.0, max_norm / (norm + TORCH_CLIP_EPS))


def value_at(schedule_or_value: Any, count: jax.Array) -> Any:
  """A schedule's value at `count`, or the value itself."""
  return schedule_or_value(count) if callable(schedule_or_value) else schedule_or_value


def skip_if_nonfinite(finite: jax.Array, updates: optax.Updates, state: Any, new_state: Any
                      ) -> tuple[optax.Updates, Any]:
  """(updates, new_state) for a finite gradient; else a zero update and `state` with its `nonfinite_count`
  advanced (the statistics never see the bad gradient)."""
  updates = jax.tree.map(lambda u: jnp.where(finite, u, jnp.zeros_like(u)), updates)
  kept = optax.tree.where(finite, new_state, state)
  return updates, kept._replace(nonfinite_count=count_unless(finite, state.nonfinite_count))


def count_if(condition: jax.Array, count: jax.Array) -> jax.Array:
  """count + 1 where `condition`, else count (int32, saturating)."""
  return jnp.where(condition, optax.safe_increment(count), count)


def count_unless(condition: jax.Array, count: jax.Array) -> jax.Array:
  """count + 1 where not `condition`, else count (int32, saturating)."""
  return jnp.where(condition, count, optax.safe_increment(count))


def check_steps(name: str, value: Any, minimum: int) -> Any:
  """A step count as a Python int; a traced one (in `inject_hyperparams`' update) is returned unchecked.

  Buffer sizes are read from the state's shapes in `update`, so only `init` needs these concrete.
  """
  concrete = concrete_value(value)
  if concrete is None:
    return value
  if (isinstance(value, bool) or concrete.shape or not jnp.issubdtype(concrete.dtype, jnp.integer)
      or int(concrete) < minimum):
    raise ValueError(f"{name}={value!r} must be an integer >= {minimum}")
  return int(concrete)


def check_updates_match_params(updates: optax.Updates, params: optax.Params | None) -> None:
  """For a state that holds no tree: the params, when given, say what the updates must be."""
  if params is not None:
    check_same_tree("updates", updates, "the params", params)


def clipped_sgd(clip: optax.GradientTransformation, learning_rate: optax.ScalarOrSchedule,
                momentum: float | None, nesterov: bool) -> optax.GradientTransformationExtraArgs:
  """clip, then optional heavy-ball/Nesterov momentum (`optax.trace`), then the learning rate."""
  if momentum is not None:
    check_in_range("momentum", momentum, 0.0, 1.0)
  return optax.chain(
      clip,
      _checked_trace(momentum, nesterov) if momentum is not None else optax.identity(),
      optax.scale_by_learning_rate(learning_rate))


def _checked_trace(momentum: float | jax.Array, nesterov: bool) -> optax.GradientTransformation:
  """`optax.trace` that refuses integer params and updates not shaped like its momentum (optax would
  broadcast them)."""
  trace = optax.trace(decay=momentum, nesterov=nesterov)

  def init_fn(params):
    check_floating_leaves("params", params)
    return trace.init(params)

  def update_fn(updates, state, params=None):
    check_same_tree("updates", updates, "the optimizer state (made by init)", state.trace)
    return trace.update(updates, state, params)

  return optax.GradientTransformation(init_fn, update_fn)


def unzip(like: Any, tree: Any, size: int) -> tuple[Any, ...]:
  """`size` trees shaped like `like`, from a tree shaped like it whose leaves are `size`-tuples (the outputs
  of a per-leaf step mapped with `jax.tree.map`)."""
  if not jax.tree.leaves(like):  # nothing to transpose (and no leaf to tell the tuples' structure by)
    return (like,) * size
  return jax.tree.transpose(jax.tree.structure(like), jax.tree.structure((0,) * size), tree)


def largest_magnitudes_apart(updates: optax.Updates) -> tuple[optax.Updates, optax.Updates]:
  """(max |g| of each leaf, in at least float32 (0 for an empty leaf), updates) behind an optimization barrier.

  NaN anywhere in a leaf makes its maximum NaN and an inf makes it inf, so `isfinite` of the maxima is the
  finiteness test of the whole gradient, without a boolean array per leaf. A max-reduction is one fused
  pass on every backend (XLA:CPU runs a sum of booleans as a materialised array and a tree of partial
  sums); the barrier keeps it apart from the element-wise update that follows and stops XLA from sharing
  |g| between the two (which would materialise it).
  """
  largest = jax.tree.map(lambda g: jnp.max(jnp.abs(upcast(g)), initial=0.0), updates)
  return jax.lax.optimization_barrier((largest, updates))


def all_finite(largest: optax.Updates) -> jax.Array:
  """Whether every leaf's largest magnitude (from `largest_magnitudes_apart`) is finite."""
  leaves = jax.tree.leaves(largest)
  return jnp.all(jnp.isfinite(jnp.stack(leaves))) if leaves else jnp.array(True)
