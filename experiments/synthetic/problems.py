"""The synthetic objectives, the optimizers under test and one vmapped, jitted simulator for all runs.

Every run ("lane") is: start at x0, take `num_steps` steps of an optimizer fed with the true gradient plus
independent symmetric alpha-stable noise on each coordinate (scale `noise_scale`), and record the
suboptimality f(x_k) - f* and the true gradient norm. A batch of lanes differs in alpha, the
learning-rate and clipping multipliers and the seed, so one compiled program serves a whole sweep.
"""
from __future__ import annotations

import dataclasses
import functools
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

import acclip_optax
from acclip_optax import noise

# Methods with an SGD-scale update (the step is lr times something of the gradient's magnitude) and with
# an Adam-scale one (magnitude about 1 per coordinate); they get different learning-rate grids.
SGD_SCALE_METHODS = ("sgd", "sgd_momentum", "gclip", "cclip", "acclip")
ADAM_SCALE_METHODS = ("acclip_ports", "adam")
METHODS = SGD_SCALE_METHODS + ADAM_SCALE_METHODS
# Methods that take a clipping threshold (tuned as a multiple of the theory's bound).
CLIPPED_METHODS = ("gclip", "cclip")
# Methods whose step sizes (and thresholds) the strongly convex theory prescribes.
THEORY_METHODS = ("sgd", "gclip", "cclip")
MOMENTUM = 0.9


def make_optimizer(method: str, learning_rate, clip_threshold) -> optax.GradientTransformation:
  """The optimizer `method` with a learning-rate schedule and (GClip, CClip) a threshold schedule."""
  if method == "sgd":
    return optax.sgd(learning_rate)
  if method == "sgd_momentum":
    return optax.sgd(learning_rate, momentum=MOMENTUM)
  if method == "gclip":
    return acclip_optax.gclip(learning_rate, max_norm=clip_threshold)
  if method == "cclip":
    return acclip_optax.cclip(learning_rate, threshold=clip_threshold)
  if method == "acclip":
    return acclip_optax.acclip(learning_rate)
  if method == "acclip_ports":
    return acclip_optax.acclip_ports(learning_rate)
  if method == "adam":
    return optax.adam(learning_rate)
  raise ValueError(f"make_optimizer: unknown method {method!r}; expected one of {METHODS}.")


class Quadratic(NamedTuple):
  r"""f(x) = 1/2 sum_i h_i x_i^2, minimum 0 at x = 0 (diagonal: the coordinate axes are the noise's)."""
  curvatures: jax.Array

  def value(self, x):
    return 0.5 * jnp.sum(self.curvatures * x * x)

  def gradient(self, x):
    return self.curvatures * x


class Rosenbrock(NamedTuple):
  r"""f(x, y) = (1 - x)^2 + b (y - x^2)^2, minimum 0 at (1, 1); non-convex with a curved valley."""
  valley_weight: jax.Array

  def value(self, z):
    return (1.0 - z[0]) ** 2 + self.valley_weight * (z[1] - z[0] ** 2) ** 2

  def gradient(self, z):
    valley = z[1] - z[0] ** 2
    return jnp.stack([-2.0 * (1.0 - z[0]) - 4.0 * self.valley_weight * z[0] * valley,
                      2.0 * self.valley_weight * valley])


def quadratic(dimension: int, condition_number: float) -> Quadratic:
  """Curvatures log-spaced in [1, condition_number] (mu = 1, L = condition_number)."""
  return Quadratic(jnp.asarray(np.geomspace(1.0, condition_number, dimension), jnp.float32))


@functools.partial(jax.tree_util.register_dataclass,
                   data_fields=["mu", "offset", "gradient_bound", "noise_scale", "noise_dimension"],
                   meta_fields=["decaying"])
@dataclasses.dataclass(frozen=True)
class Schedules:
  """Base schedules that each lane multiplies by its own constants.

  The clipping bound is the theory's alpha-moment bound of the stochastic gradient at x0, with the
  noise's scale sigma standing in for its (infinite for stable noise) alpha-th moment:
  bound(alpha) = gradient_bound + sigma * noise_dimension^(1/alpha), where GClip uses
  ||grad f(x0)||_2 and noise_dimension = d (E||xi||^alpha <= sum_i E|xi_i|^alpha = d sigma^alpha),
  and CClip uses ||grad f(x0)||_inf and noise_dimension = 1 (Assumption 2, B_i = bound).

  Strongly convex (`decaying=True`), the theory's schedules: eta_k = 4 / (mu (k + 1 + offset)) and
  tau_k = bound(alpha) (k + 1)^(1/alpha). The offset (2 L / mu) keeps eta_k L <= 2 from the first step,
  so that SGD's deterministic part is stable and any blow-up comes from the noise. Non-convex
  (`decaying=False`): constant eta = 1 and tau = bound(alpha), so the lane's learning-rate multiplier is
  the step size itself. Only `decaying` is static: the numbers are traced, so one compiled program
  serves every problem of the same shape.
  """
  decaying: bool
  mu: float = 1.0
  offset: int = 0
  gradient_bound: float = 0.0
  noise_scale: float = 1.0
  noise_dimension: int = 1

  def learning_rate(self, step):
    if not self.decaying:
      return jnp.ones_like(step, jnp.float32)
    return acclip_optax.strongly_convex_lr_schedule(self.mu)(step + self.offset)

  def clip_threshold(self, step, alpha):
    bound = self.gradient_bound + self.noise_scale * self.noise_dimension ** (1.0 / alpha)
    if not self.decaying:
      return jnp.full_like(step, 1.0, jnp.float32) * bound
    return acclip_optax.clip_threshold_schedule(bound, alpha)(step)


class Lanes(NamedTuple):
  """One entry per run: the noise index, the two multipliers and the seed's PRNG key."""
  alpha: jax.Array
  lr_multiplier: jax.Array
  clip_multiplier: jax.Array
  key: jax.Array


class LaneResults(NamedTuple):
  """Per lane: f - f* at the checkpoints, the final f - f*, and min over k of ||grad f(x_k)||."""
  checkpoint_suboptimality: np.ndarray
  final_suboptimality: np.ndarray
  min_gradient_norm: np.ndarray


@functools.partial(jax.jit, static_argnames=("method", "num_steps", "checkpoints"))
def _simulate(problem, x0, noise_scale, lanes: Lanes, schedules: Schedules, *, method: str,
              num_steps: int, checkpoints: tuple[int, ...]):
  def run_lane(alpha, lr_multiplier, clip_multiplier, key):
    optimizer = make_optimizer(
        method, lambda k: lr_multiplier * schedules.learning_rate(k),
        lambda k: clip_multiplier * schedules.clip_threshold(k, alpha))

    def step(carry, step_key):
      x, state = carry
      gradient = problem.gradient(x) + noise_scale * noise.sample_symmetric_stable(step_key, alpha, x.shape)
      updates, state = optimizer.update(gradient, state, x)
      x = optax.apply_updates(x, updates)
      return (x, state), (problem.value(x), jnp.linalg.norm(problem.gradient(x)))

    _, (values, gradient_norms) = jax.lax.scan(step, (x0, optimizer.init(x0)),
                                               jax.random.split(key, num_steps))
    # A NaN norm (after a blow-up) must not hide the smallest norm reached before it.
    gradient_norms = jnp.where(jnp.isnan(gradient_norms), jnp.inf, gradient_norms)
    min_norm = jnp.minimum(jnp.linalg.norm(problem.gradient(x0)), jnp.min(gradient_norms))
    return values[jnp.asarray(checkpoints)], values[-1], min_norm

  return jax.vmap(run_lane)(*lanes)


def simulate(problem, x0, noise_scale: float, lanes: Lanes, *, method: str, schedules: Schedules,
             num_steps: int, checkpoints: tuple[int, ...]) -> LaneResults:
  """Runs every lane of `lanes` (one vmapped, jitted program) and returns numpy results.

  `checkpoints` are 0-based step indices (the value after step index i is f(x_{i+1})). The minimum
  value f* is 0 for both problems, so f(x) is the suboptimality.
  """
  results = _simulate(problem, jnp.asarray(x0, jnp.float32), jnp.float32(noise_scale), lanes, schedules,
                      method=method, num_steps=num_steps, checkpoints=checkpoints)
  return LaneResults(*(np.asarray(r, np.float64) for r in results))
