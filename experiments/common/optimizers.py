"""The optimizer factory shared by the experiment drivers: a config names an optimizer, this builds it.

`create_optimizer(config, total_steps)` returns one `optax.GradientTransformation` assembled as

    chain( clip_by_global_norm(grad_clip_norm)      # optional pre-clipping of the raw gradient
         , add_decayed_weights(weight_decay, mask)  # only for weight_decay_mode='coupled' (L2 in the gradient)
         , <named optimizer>(lr_k)                  # lr_k = peak_learning_rate * learning_rate_scale(k)
         , decoupled weight decay                   # -lr_k * weight_decay * x, for 'decoupled' mode
         )

wrapped in `optax.inject_hyperparams`, so the state holds two hyperparameters:

* `peak_learning_rate` (a number in the state): the only thing a learning-rate sweep changes, so a step
  function compiled once serves every learning rate of the sweep;
* `learning_rate_scale` (a schedule of the step count k): linear warm-up over `warmup_steps`, then linear or
  cosine decay from 1 to `final_learning_rate_scale` at `total_steps` (or constant):

      scale(k) = (k + 1) / warmup_steps                                     for k < warmup_steps
      scale(k) = f + (1 - f) * d((k - warmup_steps) / (total_steps - warmup_steps))   afterwards,
      d(u) = 1 - u (linear), (1 + cos(pi u)) / 2 (cosine), 1 (constant); f = final_learning_rate_scale.

`current_learning_rate(opt_state)` reads lr_k back for logging.

Weight decay is masked off biases and normalisation parameters (`weight_decay_mask`): a leaf is decayed when
it has ndim > 1 and its name is neither `scale` nor ends in `bias`. In Flax that selects kernels and
embeddings, and it leaves out LayerNorm/BatchNorm `scale`/`bias` and attention's 2-D per-head biases, the
usual BERT/ResNet rule; plain dicts of arrays fall back on the ndim test alone.

Optimizer names and the config fields each reads (None means "the optimizer's own default"):

* `adam`, `adamw`: b1, b2, eps (optax.adam / optax.adamw; `adam` applies weight decay as well when
  weight_decay > 0, in the chosen mode, so adam and adamw differ only by their decay convention in optax);
* `acclip`: the paper's Algorithm 1, b1, b2, alpha, eps, bias_correction (acclip_optax.acclip);
* `acclip_ports`: the public PyTorch ports' variant (acclip_optax.acclip_ports), b1, b2, alpha, eps;
* `lamb`: b1, b2, eps (optax.lamb; its decay enters the trust ratio, as in the LAMB paper);
* `sgd`: momentum, nesterov (optax.sgd);
* `gclip`: clip_threshold (the global-norm bound tau), momentum, nesterov (acclip_optax.gclip);
* `cclip`: clip_threshold (the coordinate bound tau), momentum, nesterov (acclip_optax.cclip);
* `zclip`, `adagc`, `autoclip`: the spike-clipping methods that followed the paper, with their reference
  defaults (acclip_optax.zclip, .adagc, .autoclip), in front of AdamW (b1, b2, eps, decoupled decay), the
  optimizer their authors pair them with;
* `spam`: b1, b2, eps (acclip_optax.spam with its reference defaults otherwise; decoupled decay after the
  step, as its reference).
"""
from __future__ import annotations

import math
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import optax

import acclip_optax

OPTIMIZER_NAMES = ("adam", "adamw", "acclip", "acclip_ports", "lamb", "sgd", "gclip", "cclip", "zclip", "adagc",
                   "autoclip", "spam")
LEARNING_RATE_DECAYS = ("linear", "cosine", "constant")
WEIGHT_DECAY_MODES = ("decoupled", "coupled")

# Optimizers whose own constructor takes weight_decay and mask and applies decoupled decay itself.
_BUILTIN_DECOUPLED_DECAY = ("adamw", "acclip", "acclip_ports", "lamb", "zclip", "adagc", "autoclip", "spam")
# Spike clipping in front of AdamW.
_CLIP_BEFORE_ADAMW = {"zclip": acclip_optax.zclip, "adagc": acclip_optax.adagc, "autoclip": acclip_optax.autoclip}


def default_optimizer_config() -> ml_collections.ConfigDict:
  """Every field `create_optimizer` reads, with neutral defaults; driver configs update it."""
  config = ml_collections.ConfigDict()
  config.optimizer = "adamw"
  config.learning_rate = 1e-3  # the peak learning rate, reached at the end of warm-up
  config.warmup_steps = 0
  config.learning_rate_decay = "linear"
  config.final_learning_rate_scale = 0.0
  config.weight_decay = 0.0
  config.weight_decay_mode = "decoupled"
  config.grad_clip_norm = 0.0  # > 0: global-norm pre-clipping of the raw gradient
  config.b1 = ml_collections.config_dict.placeholder(float)
  config.b2 = ml_collections.config_dict.placeholder(float)
  config.eps = ml_collections.config_dict.placeholder(float)
  config.alpha = ml_collections.config_dict.placeholder(float)
  config.bias_correction = False
  config.momentum = 0.9
  config.nesterov = False
  config.clip_threshold = 1.0
  return config


def weight_decay_mask(params: Any) -> Any:
  """True for the leaves that get weight decay: ndim > 1 and not named like a bias or a norm scale.

  Kernels and embeddings are decayed; vectors (biases, LayerNorm/BatchNorm scales and offsets) are not,
  nor are multi-dimensional biases such as Flax attention's per-head `bias` [heads, head_dim].
  """
  def decays(path, leaf) -> bool:
    name = str(getattr(path[-1], "key", getattr(path[-1], "name", ""))) if path else ""
    return jnp.ndim(leaf) > 1 and not (name.endswith("bias") or name == "scale")

  return jax.tree_util.tree_map_with_path(decays, params)


def learning_rate_scale_schedule(
    warmup_steps: int, total_steps: int, decay: str = "linear", final_scale: float = 0.0
) -> optax.Schedule:
  """The warm-up-then-decay multiplier of the peak learning rate (formula in the module docstring)."""
  if decay not in LEARNING_RATE_DECAYS:
    raise ValueError(
        f"learning_rate_decay={decay!r} is not one of {', '.join(LEARNING_RATE_DECAYS)}")
  if total_steps < 1:
    raise ValueError(f"total_steps={total_steps} must be >= 1")
  if not 0 <= warmup_steps <= total_steps:
    raise ValueError(f"warmup_steps={warmup_steps} must lie in [0, total_steps={total_steps}]")
  decay_steps = max(total_steps - warmup_steps, 1)

  def schedule(count):
    count = jnp.asarray(count, jnp.float32)
    warmup = jnp.minimum((count + 1.0) / max(warmup_steps, 1), 1.0)
    progress = jnp.clip((count - warmup_steps) / decay_steps, 0.0, 1.0)
    if decay == "linear":
      decayed = 1.0 - progress
    elif decay == "cosine":
      decayed = 0.5 * (1.0 + jnp.cos(math.pi * progress))
    else:
      decayed = jnp.ones_like(progress)
    after_warmup = final_scale + (1.0 - final_scale) * decayed
    return jnp.where(count < warmup_steps, warmup, after_warmup)

  return schedule


def _optional(**kwargs) -> dict[str, Any]:
  """The keyword arguments that were set, so unset ones fall back to each optimizer's own default."""
  return {name: value for name, value in kwargs.items() if value is not None}


def _named_optimizer(config, learning_rate, weight_decay: float) -> optax.GradientTransformation:
  """The optimizer `config.optimizer` at a fixed (possibly traced) learning rate."""
  name = config.optimizer
  adam_moments = _optional(b1=config.b1, b2=config.b2, eps=config.eps)
  decay = dict(weight_decay=weight_decay, mask=weight_decay_mask)
  momentum = config.momentum or None
  if name == "adam":
    return optax.adam(learning_rate, **adam_moments)
  if name == "adamw":
    return optax.adamw(learning_rate, **adam_moments, **decay)
  if name == "lamb":
    return optax.lamb(learning_rate, **adam_moments, **decay)
  if name == "acclip":
    return acclip_optax.acclip(
        learning_rate, **_optional(alpha=config.alpha), **adam_moments, **decay,
        bias_correction=config.bias_correction)
  if name == "acclip_ports":
    return acclip_optax.acclip_ports(
        learning_rate, **_optional(alpha=config.alpha), **adam_moments, **decay)
  if name == "sgd":
    return optax.sgd(learning_rate, momentum=momentum, nesterov=config.nesterov)
  if name == "gclip":
    return acclip_optax.gclip(
        learning_rate, config.clip_threshold, momentum=momentum, nesterov=config.nesterov)
  if name == "cclip":
    return acclip_optax.cclip(
        learning_rate, config.clip_threshold, momentum=momentum, nesterov=config.nesterov)
  if name in _CLIP_BEFORE_ADAMW:
    return optax.chain(_CLIP_BEFORE_ADAMW[name](), optax.adamw(learning_rate, **adam_moments, **decay))
  if name == "spam":
    return acclip_optax.spam(learning_rate, **adam_moments, **decay)
  raise ValueError(f"optimizer={name!r} is not one of {', '.join(OPTIMIZER_NAMES)}")


def create_optimizer(config: ml_collections.ConfigDict, total_steps: int) -> optax.GradientTransformation:
  """Builds the optimizer named by `config.optimizer` with its learning-rate schedule and weight decay.

  Update (per step k, learning rate lr_k = peak_learning_rate * learning_rate_scale(k)):

    g <- clip_by_global_norm(g, grad_clip_norm)           if grad_clip_norm > 0
    g <- g + weight_decay * mask * x                       if weight_decay_mode == 'coupled'
    u <- <optimizer>(g; lr_k)                              e.g. -lr_k * adam_direction
    u <- u - lr_k * weight_decay * mask * x                if 'decoupled' (built into adamw/acclip/lamb)

  Args:
    config: a ConfigDict with the fields of `default_optimizer_config()` (missing fields take those
      defaults).
    total_steps: the number of optimizer steps of the run; the decay reaches its end here.

  Returns:
    An `optax.GradientTransformation` whose state is an `inject_hyperparams` state holding
    `peak_learning_rate` and `learning_rate_scale`.

  Raises:
    ValueError: a setting `check_optimizer_config` refuses, or an inconsistent schedule.

  Example:
    >>> config = default_optimizer_config(); config.optimizer = "sgd"
    >>> tx = create_optimizer(config, total_steps=100)
    >>> state = tx.init({"w": jnp.ones((2, 2))})
  """
  config = check_optimizer_config(config)
  scale_schedule = learning_rate_scale_schedule(
      config.warmup_steps, total_steps, config.learning_rate_decay, config.final_learning_rate_scale)
  weight_decay = float(config.weight_decay)
  decoupled = config.weight_decay_mode == "decoupled" and weight_decay > 0
  builtin_decay = decoupled and config.optimizer in _BUILTIN_DECOUPLED_DECAY

  def build(peak_learning_rate, learning_rate_scale):
    learning_rate = peak_learning_rate * learning_rate_scale
    parts = []
    if config.grad_clip_norm and config.grad_clip_norm > 0:
      parts.append(optax.clip_by_global_norm(config.grad_clip_norm))
    if config.weight_decay_mode == "coupled" and weight_decay > 0:
      parts.append(optax.add_decayed_weights(weight_decay, mask=weight_decay_mask))
    parts.append(_named_optimizer(config, learning_rate, weight_decay if builtin_decay else 0.0))
    if decoupled and not builtin_decay:
      # The optimizer's update is already -lr * direction; adding -lr * wd * x is decoupled decay.
      parts.append(optax.add_decayed_weights(-learning_rate * weight_decay, mask=weight_decay_mask))
    return optax.chain(*parts)

  return optax.inject_hyperparams(build)(
      peak_learning_rate=float(config.learning_rate), learning_rate_scale=scale_schedule)


def check_optimizer_config(config) -> ml_collections.ConfigDict:
  """The optimizer fields of `config` over `default_optimizer_config()`, after checking each one.

  Drivers call it before loading any data, so a bad setting fails in a second, not after the corpus and
  vocabulary are ready. (`warmup_steps <= total_steps` is checked with the schedule, once the run's length
  is known.)

  Raises:
    ValueError: an unknown optimizer, decay or weight-decay mode; a learning rate, weight decay or
      pre-clipping norm that is negative or not finite; a negative warm-up.
  """
  full_config = default_optimizer_config()
  full_config.update(_optimizer_fields(config))
  config = full_config
  for name, allowed in (("optimizer", OPTIMIZER_NAMES), ("learning_rate_decay", LEARNING_RATE_DECAYS),
                        ("weight_decay_mode", WEIGHT_DECAY_MODES)):
    if config[name] not in allowed:
      raise ValueError(f"{name}={config[name]!r} is not one of {', '.join(allowed)}")
  for name in ("learning_rate", "weight_decay", "grad_clip_norm"):
    if not (math.isfinite(config[name]) and config[name] >= 0):
      raise ValueError(f"{name}={config[name]} must be a finite number >= 0")
  if config.warmup_steps < 0:
    raise ValueError(f"warmup_steps={config.warmup_steps} must be >= 0")
  return config


def _optimizer_fields(config) -> dict[str, Any]:
  """The optimizer fields present in a (possibly larger) experiment config."""
  known = default_optimizer_config().keys()
  return {name: config[name] for name in known if name in config}


def current_learning_rate(opt_state) -> jax.Array:
  """The learning rate lr_k used by the last update (before any update: the one the first will use)."""
  hyperparams = opt_state.hyperparams
  return hyperparams["peak_learning_rate"] * hyperparams["learning_rate_scale"]


def optimizer_signature(config, total_steps: int) -> tuple:
  """A hashable summary of everything that changes the compiled update, i.e. all but the peak learning rate.

  Two configs with the same signature can share one compiled train step: the peak learning rate lives in
  the optimizer state.
  """
  fields = _optimizer_fields(config)
  fields.pop("learning_rate", None)
  return (total_steps,) + tuple(sorted(fields.items()))

