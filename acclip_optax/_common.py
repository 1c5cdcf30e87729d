"""Pieces several transformations share (private): norms, dtypes, fractions, skips and step-count checks."""
from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import optax

from acclip_optax._validation import check_floating_leaves, check_in_range, check_same_tree, concrete_value

# A clipping threshold: a float, a pytree of per-leaf or per-coordinate thresholds, or a schedule.
Threshold = float | jax.Array | optax.Params | Callable[[jax.Array], jax.Array]
# torch.nn.utils.clip_grad_norm_ scales by max_norm / (norm + 1e-6): the later methods' references clip
# through it.
TORCH_CLIP_EPS = 1e-6


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


def upcast(x: jax.Array) -> jax.Array:
  """x in at least float32: low-precision (bf16) leaves keep their dtype in the state, not in the math."""
  return x.astype(jnp.promote_types(x.dtype, jnp.float32))


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
