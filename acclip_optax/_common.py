"""Pieces several transformations share (private): the global norm."""
from __future__ import annotations

import jax
import jax.numpy as jnp
import optax


def global_norm(updates: optax.Updates) -> jax.Array:
  r"""The global norm :math:`\|g\| = \sqrt{\sum_\ell \langle g_\ell, g_\ell \rangle}`, in at least float32.

  Each leaf's sum of squares is a dot product of the flattened leaf with itself (its conjugate for complex
  leaves): a reduction every backend runs as one vectorised, multi-threaded kernel (a matrix-unit op on
  TPU), where a sum of squares per leaf is a separate, slower reduction on XLA:CPU. The same value as
  `optax.tree.norm` up to the order of summation.
  """
  squares = [jnp.real(jnp.vdot(leaf, leaf)) for leaf in jax.tree.leaves(
      jax.tree.map(lambda g: g.astype(jnp.promote_types(g.dtype, jnp.float32)), updates))]
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
