"""The step sizes and clipping thresholds of the paper's convergence theory (strongly convex case)."""
from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp

from acclip_optax._common import check_positive



def clip_threshold_schedule(bound: float | jax.Array, alpha: float) -> Callable[[jax.Array], jax.Array]:
  r"""The growing clipping threshold :math:`\tau_k = B (k+1)^{1/\alpha}`.

  With noise of bounded alpha-moment (:math:`E|g|^\alpha \le B^\alpha`), clipping at this threshold makes
  the bias and the variance of the clipped gradient shrink at the same rate. Use it as the `max_norm` of
  `clip_by_scheduled_global_norm` (B = G) or the `threshold` of `clip_by_coordinate` (B = B_i, per coordinate).

  Args:
    bound: B > 0, a float or a pytree/array of per-coordinate bounds.
    alpha: the moment order, > 0 (the theory has alpha in (1, 2]).

  Returns:
    A schedule ``k -> bound * (k + 1) ** (1 / alpha)`` of the step count k = 0, 1, ...

  References:
    Zhang, Karimireddy, Veit, Kim, Reddi, Kumar and Sra, "Why are Adaptive Methods Good for Attention
    Models?", NeurIPS 2020, arXiv 1912.03194 (GClip under heavy-tailed noise).

  Example:
    >>> from acclip_optax import clip_threshold_schedule
    >>> float(clip_threshold_schedule(2.0, alpha=2.0)(3))
    4.0
  """
  check_positive("bound", bound)
  check_positive("alpha", alpha)

  def schedule(count):
    growth = (jnp.asarray(count, jnp.float32) + 1.0) ** (1.0 / alpha)
    return jax.tree.map(lambda b: b * growth, bound)

  return schedule


def strongly_convex_lr_schedule(mu: float) -> Callable[[jax.Array], jax.Array]:
  r"""The step size :math:`\eta_k = 4 / (\mu (k+1))` of the strongly convex analysis.

  Args:
    mu: the strong-convexity constant, > 0.

  Returns:
    A schedule ``k -> 4 / (mu * (k + 1))`` of the step count k = 0, 1, ...

  References:
    Zhang, Karimireddy, Veit, Kim, Reddi, Kumar and Sra, "Why are Adaptive Methods Good for Attention
    Models?", NeurIPS 2020, arXiv 1912.03194 (GClip under heavy-tailed noise).

  Example:
    >>> from acclip_optax import strongly_convex_lr_schedule
    >>> float(strongly_convex_lr_schedule(2.0)(1))
    1.0
  """
  check_positive("mu", mu)

  def schedule(count):
    return 4.0 / (mu * (jnp.asarray(count, jnp.float32) + 1.0))

  return schedule
