"""The experiments' one optimizer registry: a name maps to its constructor, the config fields it reads and
its learning-rate scale; an immutable `OptimizerSpec` built once per run is the optimizer's description.

`OptimizerSpec.create()` returns one `optax.GradientTransformation` assembled as

    chain( GClip(grad_clip_norm)                    # optional pre-clipping of the raw gradient (the library's
                                                    # clip_by_scheduled_global_norm: optax's rule, a cheaper norm)
         , add_decayed_weights(weight_decay, mask)  # only for weight_decay_mode='coupled' (L2 in the gradient)
         , <named optimizer>(lr_k)                  # lr_k = peak_learning_rate * learning_rate_scale(k)
         , decoupled weight decay                   # -lr_k * weight_decay * x, for 'decoupled' mode
         , independent weight decay                 # -scale(k) * weight_decay * x, for 'independent' mode
         , QK-clip                                  # last, for adamw_qkclip and muon_qkclip
         )

wrapped in `optax.inject_hyperparams`, so the state holds two hyperparameters:

* `peak_learning_rate` (a number in the state): the only thing a learning-rate sweep changes, so a step
  function compiled once (keyed by `OptimizerSpec.step_key()`) serves every learning rate of the sweep;
* `learning_rate_scale` (a schedule of the step count k): linear warm-up over `warmup_steps`, then linear or
  cosine decay from 1 to `final_learning_rate_scale` at `total_steps` (or constant):

      scale(k) = (k + 1) / warmup_steps                                     for k < warmup_steps
      scale(k) = f + (1 - f) * d((k - warmup_steps) / (total_steps - warmup_steps))   afterwards,
      d(u) = 1 - u (linear), (1 + cos(pi u)) / 2 (cosine), 1 (constant); f = final_learning_rate_scale.

`current_learning_rate(opt_state)` reads lr_k back for logging.

Weight decay, three ways (`weight_decay_mode`; `weight_decay = 0` is no decay in every mode):

* "coupled": L2 in the gradient, g <- g + weight_decay * x, before the optimizer (torch.optim.Adam's
  weight_decay); the optimizer's own normalisation then rescales it.
* "decoupled": x <- x - lr_k * weight_decay * x after the optimizer (AdamW, Loshchilov & Hutter 2019): the
  shrink per step is proportional to the peak learning rate.
* "independent": x <- x - scale(k) * weight_decay * x after the optimizer (Wortsman et al. 2023, "Small-scale
  proxies for large-scale Transformer training instabilities"): the schedule's shape but not the peak
  learning rate, so the shrink per step is the same at every learning rate of a sweep. A decoupled run at
  peak learning rate eta with decay lambda shrinks exactly as an independent one with decay eta * lambda.

Weight decay is masked off biases and normalisation parameters (`weight_decay_mask`): a leaf is decayed when
it has ndim > 1 and its name is neither `scale` nor ends in `bias`. In Flax that selects kernels and
embeddings, and it leaves out LayerNorm/BatchNorm `scale`/`bias` and attention's 2-D per-head biases, the
usual BERT/ResNet rule; plain dicts of arrays fall back on the ndim test alone.

`REGISTRY` (names, the fields each reads; a field left None means "the optimizer's own default"):

* `adam`, `adamw`: b1, b2, eps (optax.adam / optax.adamw; `adam` applies weight decay as well when
  weight_decay > 0, in the chosen mode, so adam and adamw differ only by their decay convention in optax);
* `acclip`: the paper's Algorithm 1, b1, b2, alpha, eps, bias_correction (acclip_optax.acclip);
* `acclip_ports`: the public PyTorch ports' variant (acclip_optax.acclip_ports), b1, b2, alpha, eps;
* `lamb`: b1, b2, eps (optax.lamb; its decay enters the trust ratio, as in the LAMB paper);
* `sgd`: momentum, nesterov (optax.sgd; momentum 0 is plain SGD);
* `gclip`: clip_threshold (the global-norm bound tau), momentum, nesterov (acclip_optax.gclip);
* `cclip`: clip_threshold (the coordinate bound tau), momentum, nesterov (acclip_optax.cclip);
* `zclip`, `adagc`, `autoclip`: the spike-clipping methods that followed the paper, with their reference
  defaults (acclip_optax.zclip, .adagc, .autoclip), in front of AdamW (b1, b2, eps, decoupled decay), the
  optimizer their authors pair them with;
* `spam`: b1, b2, eps (acclip_optax.spam with its reference defaults otherwise; decoupled decay after the
  step, as its reference);
* `stable_spam`: b1, b2, eps (acclip_optax.stable_spam with its reference defaults otherwise; decoupled
  decay, as its reference);
* `skip_step_on_spikes`: AdamW (b1, b2, eps, decoupled decay) inside acclip_optax.skip_step_on_spikes
  (window 128, sigma 6, OLMo-core's defaults): a step whose gradient norm or loss spikes is skipped. The train steps
  pass the loss to the update (`update(..., loss=...)`); the other optimizers ignore it.
* `muon`: optax.contrib.muon (Jordan et al. 2024) with its defaults: the momentum orthogonalised by
  Newton-Schulz for the kernels, the attention projections' 3-D kernels included (`muon_dimension_numbers`),
  and Adam (b1, b2) for embeddings, biases and LayerNorm; decoupled decay on both.
* `adamw_qkclip`, `muon_qkclip`: AdamW, or Muon, followed by acclip_optax.qk_clip over every attention layer
  (`attention_layers`) at `qk_clip_threshold` (MuonClip, Kimi K2). The BERT train step passes each layer's
  largest logits (`update(..., max_logits=...)`); without them nothing is rescaled.

The learning-rate scale says how large a step is at a given learning rate: `sgd` (lr times something of
the gradient's size) or `adam` (about lr per coordinate); studies choose their learning-rate grids by it.
"""
from __future__ import annotations

import dataclasses
import math
import types
from typing import Any, Callable, Mapping

import jax
import jax.numpy as jnp
import ml_collections
import optax

import acclip_optax

LEARNING_RATE_DECAYS = ("linear", "cosine", "constant")
WEIGHT_DECAY_MODES = ("decoupled", "coupled", "independent")
LEARNING_RATE_SCALES = ("sgd", "adam")
# The schedule and weight-decay fields every optimizer reads (the spec's own attributes).
SCHEDULE_FIELDS = ("learning_rate", "warmup_steps", "learning_rate_decay", "final_learning_rate_scale",
                   "weight_decay", "weight_decay_mode", "grad_clip_norm")


def default_optimizer_config() -> ml_collections.ConfigDict:
  """Every optimizer field a config may set, with neutral defaults; driver configs update it."""
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
  config.qk_clip_threshold = 100.0  # tau of QK-clip (adamw_qkclip, muon_qkclip): Kimi K2's; size it to the model
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


# ------------------------------------------------------------------------------------------- the registry
@dataclasses.dataclass(frozen=True)
class RegisteredOptimizer:
  """One registry entry.

  Attributes:
    constructor: `(learning_rate, weight_decay, **fields) -> GradientTransformation`; `weight_decay` is
      non-zero only when `decoupled_decay` and the run asks for decoupled decay.
    fields: the config fields the constructor reads.
    learning_rate_scale: "sgd" or "adam" (see the module docstring).
    decoupled_decay: the constructor applies decoupled weight decay itself (else the factory adds it).
    caps_attention_logits: QK-clip (`config.qk_clip_threshold`) follows everything else, weight decay included:
      it rescales the weights the step leaves.
  """
  constructor: Callable[..., optax.GradientTransformation]
  fields: tuple[str, ...]
  learning_rate_scale: str
  decoupled_decay: bool
  caps_attention_logits: bool = False


def _optional(**kwargs) -> dict[str, Any]:
  """The keyword arguments that were set, so unset ones fall back to each optimizer's own default."""
  return {name: value for name, value in kwargs.items() if value is not None}


def _decay(weight_decay) -> dict[str, Any]:
  return dict(weight_decay=weight_decay, mask=weight_decay_mask)


def _check_moments(b1=None, b2=None, eps=None, momentum=None) -> None:
  """What optax's own constructors leave unchecked: decays in [0, 1), eps > 0 (it divides by sqrt(v) + eps,
  and v stays 0 for a parameter whose gradient is always 0); None: the optimizer's default."""
  for name, value in (("b1", b1), ("b2", b2), ("momentum", momentum)):
    if value is not None and not 0 <= value < 1:
      raise ValueError(f"{name}={value!r} must lie in [0, 1)")
  if eps is not None and not (math.isfinite(eps) and eps > 0):
    raise ValueError(f"eps={eps!r} must be a finite number > 0")


def _adam_like(make: Callable, decays: bool) -> Callable:
  def construct(learning_rate, weight_decay, b1=None, b2=None, eps=None):
    _check_moments(b1=b1, b2=b2, eps=eps)
    return make(learning_rate, **_optional(b1=b1, b2=b2, eps=eps), **(_decay(weight_decay) if decays else {}))
  return construct


def _acclip(learning_rate, weight_decay, b1=None, b2=None, alpha=None, eps=None, bias_correction=False):
  return acclip_optax.acclip(learning_rate, **_optional(b1=b1, b2=b2, alpha=alpha, eps=eps),
                             **_decay(weight_decay), bias_correction=bias_correction)


def _acclip_ports(learning_rate, weight_decay, b1=None, b2=None, alpha=None, eps=None):
  return acclip_optax.acclip_ports(learning_rate, **_optional(b1=b1, b2=b2, alpha=alpha, eps=eps),
                                   **_decay(weight_decay))


def _sgd(learning_rate, weight_decay, momentum=None, nesterov=False):
  del weight_decay
  _check_moments(momentum=momentum)
  return optax.sgd(learning_rate, momentum=momentum or None, nesterov=nesterov)


def _clipped_sgd(clip: Callable) -> Callable:
  def construct(learning_rate, weight_decay, clip_threshold=1.0, momentum=None, nesterov=False):
    del weight_decay
    return clip(learning_rate, clip_threshold, momentum=momentum or None, nesterov=nesterov)
  return construct


def _before_adamw(clip: Callable) -> Callable:
  def construct(learning_rate, weight_decay, b1=None, b2=None, eps=None):
    _check_moments(b1=b1, b2=b2, eps=eps)
    adamw = optax.adamw(learning_rate, **_optional(b1=b1, b2=b2, eps=eps), **_decay(weight_decay))
    return optax.chain(clip(), adamw)
  return construct


def attention_layers(params: Any) -> dict[str, tuple[tuple[str, ...], tuple[str, ...]]]:
  """{module path "a/b/attention": (query path, key path)} of every Flax `MultiHeadDotProductAttention` in the
  params (a module dict holding query, key, value and out projections), the names its `max_logits` carry."""
  found = {}
  for path, leaf in jax.tree_util.tree_flatten_with_path(params)[0]:
    keys = tuple(str(getattr(entry, "key", entry)) for entry in path)
    if len(keys) >= 3 and keys[-2] == "query" and keys[-1] == "kernel":
      found["/".join(keys[:-2])] = (keys[:-1], keys[:-2] + ("key",))
  return found


def _qk_clip_of_attention_layers(threshold: float) -> optax.GradientTransformationExtraArgs:
  """`acclip_optax.qk_clip` over every attention layer of the params it is given (`attention_layers`)."""
  def make(params):
    if params is None:
      raise ValueError("QK-clip finds the attention layers in the params: pass them to init and update")
    layers = attention_layers(params)
    if not layers:
      raise ValueError("QK-clip rescales the query and key projections of attention layers, but the params hold "
                       "none (no module holding a 'query' kernel): choose an optimizer without QK-clip "
                       "for this model")
    return acclip_optax.qk_clip(threshold, attention=layers)

  return optax.GradientTransformationExtraArgs(
      lambda params: make(params).init(params),
      lambda updates, state, params=None, **extra: make(params).update(updates, state, params, **extra))


def muon_dimension_numbers(params: Any) -> Any:
  """Which leaves Muon orthogonalises, and how: the 2-D kernels (in, out), and the attention projections as the
  matrices they are, query/key/value (in, heads, head_dim) as one (in, heads * head_dim) matrix and the output
  (heads, head_dim, out) as one (heads * head_dim, out) matrix, all heads together as in an `nn.Dense` of the
  same size; None (Muon's Adam branch) for embeddings, biases and norms."""
  def numbers(path, leaf):
    name = str(getattr(path[-1], "key", "")) if path else ""
    if name != "kernel" or leaf.ndim < 2:
      return None
    if leaf.ndim == 2:
      return optax.contrib.MuonDimensionNumbers(reduction_axis=0, output_axis=1)
    module = str(getattr(path[-2], "key", "")) if len(path) > 1 else ""
    if module == "out":
      return optax.contrib.MuonDimensionNumbers(reduction_axis=(0, 1), output_axis=2)
    return optax.contrib.MuonDimensionNumbers(reduction_axis=0, output_axis=(1, 2))
  return jax.tree_util.tree_map_with_path(numbers, params)


def _muon(learning_rate, weight_decay, b1=None, b2=None):
  """optax.contrib.muon with its defaults (Muon's momentum 0.95, 5 Newton-Schulz steps): Newton-Schulz on the
  matrices (`muon_dimension_numbers`), Adam (b1, b2) on the rest, decoupled decay on both branches."""
  _check_moments(b1=b1, b2=b2)
  return optax.contrib.muon(
      learning_rate, weight_decay=weight_decay, weight_decay_mask=weight_decay_mask,
      **_optional(adam_b1=b1, adam_b2=b2), adam_weight_decay=weight_decay,
      muon_weight_dimension_numbers=muon_dimension_numbers)


def _check_qk_clip_threshold(threshold: float) -> float:
  if not (math.isfinite(threshold) and threshold > 0):
    raise ValueError(f"qk_clip_threshold={threshold!r} must be a finite number > 0")
  return threshold


def _capping_logits(make: Callable) -> Callable:
  """`make`, reading `qk_clip_threshold` too (checked here; `OptimizerSpec.transformation` puts QK-clip last)."""
  def construct(learning_rate, weight_decay, qk_clip_threshold=None, **fields):
    if qk_clip_threshold is not None:
      _check_qk_clip_threshold(qk_clip_threshold)
    return make(learning_rate, weight_decay, **fields)
  return construct


def _skip_step_on_spikes(make: Callable) -> Callable:
  def construct(learning_rate, weight_decay, **fields):
    return acclip_optax.skip_step_on_spikes(make(learning_rate, weight_decay, **fields))
  return construct


_ADAM_FIELDS = ("b1", "b2", "eps")
_SGD_FIELDS = ("momentum", "nesterov")
REGISTRY: Mapping[str, RegisteredOptimizer] = types.MappingProxyType({
    "adam": RegisteredOptimizer(_adam_like(optax.adam, decays=False), _ADAM_FIELDS, "adam", False),
    "adamw": RegisteredOptimizer(_adam_like(optax.adamw, decays=True), _ADAM_FIELDS, "adam", True),
    "acclip": RegisteredOptimizer(_acclip, ("b1", "b2", "alpha", "eps", "bias_correction"), "sgd", True),
    "acclip_ports": RegisteredOptimizer(_acclip_ports, ("b1", "b2", "alpha", "eps"), "adam", True),
    "lamb": RegisteredOptimizer(_adam_like(optax.lamb, decays=True), _ADAM_FIELDS, "adam", True),
    "sgd": RegisteredOptimizer(_sgd, _SGD_FIELDS, "sgd", False),
    "gclip": RegisteredOptimizer(_clipped_sgd(acclip_optax.gclip), ("clip_threshold",) + _SGD_FIELDS, "sgd",
                                 False),
    "cclip": RegisteredOptimizer(_clipped_sgd(acclip_optax.cclip), ("clip_threshold",) + _SGD_FIELDS, "sgd",
                                 False),
    "zclip": RegisteredOptimizer(_before_adamw(acclip_optax.zclip), _ADAM_FIELDS, "adam", True),
    "adagc": RegisteredOptimizer(_before_adamw(acclip_optax.adagc), _ADAM_FIELDS, "adam", True),
    "autoclip": RegisteredOptimizer(_before_adamw(acclip_optax.autoclip), _ADAM_FIELDS, "adam", True),
    "spam": RegisteredOptimizer(_adam_like(acclip_optax.spam, decays=True), _ADAM_FIELDS, "adam", True),
    "stable_spam": RegisteredOptimizer(_adam_like(acclip_optax.stable_spam, decays=True), _ADAM_FIELDS, "adam",
                                       True),
    "skip_step_on_spikes": RegisteredOptimizer(_skip_step_on_spikes(_adam_like(optax.adamw, decays=True)),
                                               _ADAM_FIELDS, "adam", True),
    "muon": RegisteredOptimizer(_muon, ("b1", "b2"), "adam", True),
    "adamw_qkclip": RegisteredOptimizer(_capping_logits(_adam_like(optax.adamw, decays=True)),
                                        _ADAM_FIELDS + ("qk_clip_threshold",), "adam", True,
                                        caps_attention_logits=True),
    "muon_qkclip": RegisteredOptimizer(_capping_logits(_muon), ("b1", "b2", "qk_clip_threshold"), "adam", True,
                                       caps_attention_logits=True),
})


# Every field some optimizer of the registry reads (beyond the schedule and decay, which every one reads).
OPTIMIZER_FIELDS = tuple(sorted({name for entry in REGISTRY.values() for name in entry.fields}))


def check_fields_read(config, given: Mapping[str, Any]) -> None:
  """ValueError when a field set on the command line (`given`: name -> value) is one the chosen optimizer
  does not read: a user who forgot --config.optimizer would otherwise train another optimizer, unwarned."""
  entry = check_optimizer_name(config.optimizer)
  for name, value in given.items():
    if name in OPTIMIZER_FIELDS and name not in entry.fields:
      readers = [other for other, found in REGISTRY.items() if name in found.fields]
      raise ValueError(
          f"--config.{name}={value!r} is not read by optimizer {config.optimizer!r} (it reads "
          f"{', '.join(entry.fields) or 'no optimizer-specific field'}): drop it, or choose an optimizer that "
          f"reads it ({', '.join(readers)})")


# Registry names of an earlier version: refused with the new name.
RENAMED_OPTIMIZERS = {"skipstep": "skip_step_on_spikes"}


def check_optimizer_name(name: str) -> RegisteredOptimizer:
  """The registry entry of `name`; ValueError listing the registry when there is none."""
  if name in RENAMED_OPTIMIZERS:
    raise ValueError(f"optimizer={name!r} is now called {RENAMED_OPTIMIZERS[name]!r}, the library's name for it")
  if name not in REGISTRY:
    raise ValueError(f"optimizer={name!r} is not one of {', '.join(REGISTRY)}")
  return REGISTRY[name]


# ------------------------------------------------------------------------------------------------ the spec
@dataclasses.dataclass(frozen=True)
class OptimizerSpec:
  """Everything that defines a run's optimizer, immutable and hashable; build it once per run.

  It builds the transformation (`create`), keys compiled steps (`step_key`), and is what a checkpoint
  records (`to_dict`) and a restore template is rebuilt from (`from_dict`).

  Attributes:
    name: a `REGISTRY` name.
    total_steps: the run's optimizer steps; the learning-rate decay ends there.
    learning_rate ... grad_clip_norm: the schedule and weight-decay settings (`default_optimizer_config`).
    hyperparameters: the registry entry's own fields, as sorted (name, value) pairs.
  """
  name: str
  total_steps: int
  learning_rate: float = 1e-3
  warmup_steps: int = 0
  learning_rate_decay: str = "linear"
  final_learning_rate_scale: float = 0.0
  weight_decay: float = 0.0
  weight_decay_mode: str = "decoupled"
  grad_clip_norm: float = 0.0
  hyperparameters: tuple[tuple[str, Any], ...] = ()

  def __post_init__(self):
    entry = check_optimizer_name(self.name)
    _check_schedule_fields({name: getattr(self, name) for name in SCHEDULE_FIELDS})
    learning_rate_scale_schedule(self.warmup_steps, self.total_steps, self.learning_rate_decay,
                                 self.final_learning_rate_scale)
    unknown = sorted(set(dict(self.hyperparameters)) - set(entry.fields))
    if unknown:
      raise ValueError(f"optimizer {self.name!r} reads {', '.join(entry.fields) or 'no fields'}, not {unknown}")

  @classmethod
  def from_config(cls, config, total_steps: int) -> "OptimizerSpec":
    """The spec of `config.optimizer` with the fields `config` sets over `default_optimizer_config()`."""
    fields = default_optimizer_config()
    fields.update({name: config[name] for name in fields.keys() if name in config})
    entry = check_optimizer_name(fields.optimizer)
    return cls(name=fields.optimizer, total_steps=int(total_steps),
               **{name: fields[name] for name in SCHEDULE_FIELDS},
               hyperparameters=tuple(sorted((name, fields[name]) for name in entry.fields)))

  @classmethod
  def from_dict(cls, fields: Mapping[str, Any]) -> "OptimizerSpec":
    """The inverse of `to_dict`."""
    fields = dict(fields)
    hyperparameters = tuple(sorted(fields.pop("hyperparameters", {}).items()))
    return cls(**fields, hyperparameters=hyperparameters)

  def to_dict(self) -> dict[str, Any]:
    """A JSON-able dict (what a checkpoint and config.json record)."""
    fields = dataclasses.asdict(self)
    fields["hyperparameters"] = dict(self.hyperparameters)
    return fields

  @property
  def learning_rate_scale(self) -> str:
    return REGISTRY[self.name].learning_rate_scale

  def replace(self, **changes) -> "OptimizerSpec":
    """A copy with attributes or hyperparameters changed (hyperparameters by their own names)."""
    hyperparameters = dict(self.hyperparameters)
    own = {name: changes.pop(name) for name in list(changes) if name in REGISTRY[self.name].fields}
    hyperparameters.update(own)
    return dataclasses.replace(self, **changes, hyperparameters=tuple(sorted(hyperparameters.items())))

  def step_key(self) -> "OptimizerSpec":
    """The spec with its peak learning rate zeroed: what a compiled update depends on.

    The update reads the peak learning rate from the optimizer state it is given, so one compiled step
    serves every learning rate of a sweep.
    """
    return dataclasses.replace(self, learning_rate=0.0)

  def transformation(self, learning_rate: optax.ScalarOrSchedule, learning_rate_scale: Any = 1.0,
                     **hyperparameters) -> optax.GradientTransformation:
    """The chain of the module docstring at `learning_rate` (a number, schedule or traced value).

    `learning_rate_scale` is the schedule's multiplier scale(k) that independent weight decay follows (a
    number or traced value; `create` passes the one inside `learning_rate`). `hyperparameters` override the
    spec's own (e.g. a traced or scheduled `clip_threshold`).
    """
    weight_decay = float(self.weight_decay)
    decoupled = self.weight_decay_mode == "decoupled" and weight_decay > 0
    entry = REGISTRY[self.name]
    builtin_decay = decoupled and entry.decoupled_decay
    parts = []
    if self.grad_clip_norm > 0:
      # optax.clip_by_global_norm's rule with the norm computed apart: 1.26x AdamW's update step, optax's 2.04x.
      parts.append(acclip_optax.clip_by_scheduled_global_norm(self.grad_clip_norm))
    if self.weight_decay_mode == "coupled" and weight_decay > 0:
      parts.append(optax.add_decayed_weights(weight_decay, mask=weight_decay_mask))
    fields = {**dict(self.hyperparameters), **hyperparameters}
    parts.append(entry.constructor(learning_rate, weight_decay if builtin_decay else 0.0, **fields))
    if decoupled and not builtin_decay:
      # The optimizer's update is already -lr * direction; adding -lr * wd * x is decoupled decay.
      parts.append(optax.add_decayed_weights(-learning_rate * weight_decay, mask=weight_decay_mask))
    if self.weight_decay_mode == "independent" and weight_decay > 0:
      parts.append(optax.add_decayed_weights(-learning_rate_scale * weight_decay, mask=weight_decay_mask))
    if entry.caps_attention_logits:  # last: it rescales the weights the step leaves, decay included
      threshold = fields.get("qk_clip_threshold", default_optimizer_config().qk_clip_threshold)
      parts.append(_qk_clip_of_attention_layers(_check_qk_clip_threshold(threshold)))
    return optax.chain(*parts)

  def create(self) -> optax.GradientTransformation:
    """The run's optimizer: `transformation` at lr_k = peak_learning_rate * learning_rate_scale(k).

    Update (per step k):

      g <- min(1, grad_clip_norm / ||g||) g                 if grad_clip_norm > 0 (the library's GClip)
      g <- g + weight_decay * mask * x                       if weight_decay_mode == 'coupled'
      u <- <optimizer>(g; lr_k)                              e.g. -lr_k * adam_direction
      u <- u - lr_k * weight_decay * mask * x                if 'decoupled' (built into adamw/acclip/lamb)
      u <- u - scale(k) * weight_decay * mask * x            if 'independent'
      u <- qk_clip(u; qk_clip_threshold)                     last, for adamw_qkclip and muon_qkclip

    With `skip_step_on_spikes`, a skipped step skips what its inner optimizer does (AdamW's decoupled decay
    included); the coupled decay it sees in the gradient and the independent decay after it are outside the
    skip (the independent decay shrinks the weights on a skipped step too: it does not depend on the gradient).

    Returns:
      An `optax.GradientTransformation` whose state is an `inject_hyperparams` state holding
      `peak_learning_rate` and `learning_rate_scale`.

    Example:
      >>> spec = OptimizerSpec("sgd", total_steps=100, learning_rate=0.1)
      >>> state = spec.create().init({"w": jnp.ones((2, 2))})
    """
    scale_schedule = learning_rate_scale_schedule(
        self.warmup_steps, self.total_steps, self.learning_rate_decay, self.final_learning_rate_scale)

    def build(peak_learning_rate, learning_rate_scale):
      return self.transformation(peak_learning_rate * learning_rate_scale, learning_rate_scale)

    return optax.inject_hyperparams(build)(
        peak_learning_rate=float(self.learning_rate), learning_rate_scale=scale_schedule)


def _check_schedule_fields(fields: Mapping[str, Any]) -> None:
  for name, allowed in (("learning_rate_decay", LEARNING_RATE_DECAYS), ("weight_decay_mode", WEIGHT_DECAY_MODES)):
    if fields[name] not in allowed:
      raise ValueError(f"{name}={fields[name]!r} is not one of {', '.join(allowed)}")
  for name in ("learning_rate", "weight_decay", "grad_clip_norm", "final_learning_rate_scale"):
    if not (math.isfinite(fields[name]) and fields[name] >= 0):
      raise ValueError(f"{name}={fields[name]} must be a finite number >= 0")
  if fields["warmup_steps"] < 0:
    raise ValueError(f"warmup_steps={fields['warmup_steps']} must be >= 0")


def check_optimizer_config(config) -> None:
  """Checks the optimizer fields of `config` (over `default_optimizer_config()`) before a run loads data.

  A bad setting fails in a second, not after the corpus and vocabulary are ready. (`warmup_steps <=
  total_steps` is checked when the spec is built, once the run's length is known.)

  Raises:
    ValueError: an unknown optimizer, decay or weight-decay mode; a learning rate, weight decay,
      pre-clipping norm or final learning-rate scale that is negative or not finite; a negative warm-up;
      a field the optimizer's constructor refuses (named as the config spells it); a field another
      optimizer reads with a value that optimizer refuses.
  """
  fields = default_optimizer_config()
  fields.update({name: config[name] for name in fields.keys() if name in config})
  entry = check_optimizer_name(fields.optimizer)
  _check_schedule_fields(fields)
  own = {name: fields[name] for name in entry.fields if fields[name] is not None}
  # The constructor is the one list of rules; building it with one field at a time names the field as
  # the config spells it (gclip calls clip_threshold max_norm), then all of them together.
  for name, value in own.items():
    try:
      entry.constructor(1.0, 0.0, **{name: value})
    except (ValueError, TypeError) as error:
      raise ValueError(f"{name}={value!r} is refused by optimizer {fields.optimizer!r}: {error}") from error
  try:
    entry.constructor(1.0, 0.0, **own)
  except (ValueError, TypeError) as error:
    raise ValueError(f"optimizer {fields.optimizer!r} refuses {own}: {error}") from error
  # A field the chosen optimizer does not read is still checked, by an optimizer that reads it: a value out
  # of range is an error whichever optimizer runs.
  for name in OPTIMIZER_FIELDS:
    if name not in entry.fields and fields[name] is not None:
      reader = next(other for other, found in REGISTRY.items() if name in found.fields)
      try:
        REGISTRY[reader].constructor(1.0, 0.0, **{name: fields[name]})
      except (ValueError, TypeError) as error:
        raise ValueError(f"{name}={fields[name]!r} is out of range (optimizer {reader!r}, which reads it, refuses "
                         f"it: {error}), whichever optimizer runs") from error


def current_learning_rate(opt_state) -> jax.Array:
  """The learning rate lr_k used by the last update (before any update: the one the first will use)."""
  hyperparams = opt_state.hyperparams
  return hyperparams["peak_learning_rate"] * hyperparams["learning_rate_scale"]
