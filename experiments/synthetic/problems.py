"""The synthetic objectives, the optimizers under test and one vmapped, jitted simulator for all runs.

Every run ("lane") is: start at x0, take `num_steps` steps of an optimizer fed with the true gradient plus
independent symmetric alpha-stable noise on each coordinate (scale `noise_scale`), and record the
suboptimality f(x_k) - f* and the true gradient norm. A batch of lanes differs in alpha, the
learning-rate and clipping multipliers and the seed, so one compiled program serves a whole sweep.
"""
from __future__ import annotations

import dataclasses
import functools
import types
from typing import Any, Mapping, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

import acclip_optax
from acclip_optax import noise
from experiments.common import optimizers

MOMENTUM = 0.9
# The study's methods: a label -> (registry name, the settings this study gives it). SGD and the clipped
# methods run without momentum, as the theory analyses them; "sgd_momentum" is heavy-ball SGD. Each
# method's learning-rate scale ("sgd" or "adam": which grid it gets) and whether it takes a clipping
# threshold come from the registry.
METHODS: Mapping[str, tuple[str, Mapping[str, Any]]] = types.MappingProxyType({
    "sgd": ("sgd", {"momentum": 0.0}),
    "sgd_momentum": ("sgd", {"momentum": MOMENTUM}),
    "gclip": ("gclip", {"momentum": 0.0}),
    "cclip": ("cclip", {"momentum": 0.0}),
    "acclip": ("acclip", {}),
    "acclip_ports": ("acclip_ports", {}),
    "adam": ("adam", {}),
    # The spike-clipping methods that followed the paper, with their reference defaults.
    "zclip": ("zclip", {}),
    "adagc": ("adagc", {}),
    "autoclip": ("autoclip", {}),
    "spam": ("spam", {}),
    "stable_spam": ("stable_spam", {}),
    # AdamW inside skip-step; the simulator passes f(x_k) as the loss it also tests.
    "skip_step_on_spikes": ("skip_step_on_spikes", {}),
})
# Methods whose step sizes (and thresholds) the strongly convex theory prescribes.
THEORY_METHODS = ("sgd", "gclip", "cclip")


def optimizer_spec(method: str) -> optimizers.OptimizerSpec:
  """The registry spec of a study method (its learning rate and threshold are set per lane)."""
  if method not in METHODS:
    raise ValueError(f"unknown method {method!r}; expected one of {', '.join(METHODS)}")
  name, settings = METHODS[method]
  return optimizers.OptimizerSpec(name, total_steps=1, hyperparameters=tuple(sorted(settings.items())))


def is_clipped(method: str) -> bool:
  """Whether the method takes a clipping threshold (tuned as a multiple of the theory's bound)."""
  return "clip_threshold" in optimizers.REGISTRY[METHODS[method][0]].fields


def learning_rate_scale(method: str) -> str:
  """"sgd" or "adam": the registry's learning-rate scale of the method."""
  return optimizers.REGISTRY[METHODS[method][0]].learning_rate_scale


def make_optimizer(method: str, learning_rate, clip_threshold) -> optax.GradientTransformation:
  """The optimizer `method` with a learning-rate schedule and (GClip, CClip) a threshold schedule."""
  spec = optimizer_spec(method)
  return spec.transformation(learning_rate, **({"clip_threshold": clip_threshold} if is_clipped(method) else {}))


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
      updates, state = optimizer.update(gradient, state, x, loss=problem.value(x))
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
