"""QK-clip (Kimi Team 2025, the QK-clip of MuonClip): cap the attention logits by rescaling W_q and W_k."""
from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax

from acclip_optax._common import check_floating_leaves, check_in_range, check_same_tree, upcast


AttentionPaths = Mapping[str, tuple[Sequence[Any], Sequence[Any]]]


class QKClipState(NamedTuple):
  """State of `qk_clip`: the `count`, and of the last step given `max_logits` the largest logit over every
  head (`max_logit`: inf or NaN when a head's was, as the model measured it; -inf before any measured step)
  and the number of heads rescaled (`heads_clipped`)."""
  count: jax.Array
  max_logit: jax.Array
  heads_clipped: jax.Array


def _key_name(entry: Any) -> Any:
  return getattr(entry, "key", getattr(entry, "name", getattr(entry, "idx", entry)))


def _per_head(scale: jax.Array, shape: tuple[int, ...], leaf: str) -> jax.Array:
  """The per-head factors [H] laid out over a kernel (in, H, D) or (in, H * D), or a bias (H, D) or (H * D,)."""
  heads = scale.shape[0]
  if leaf == "kernel" and len(shape) == 3 or leaf == "bias" and len(shape) == 2:
    if shape[-2] != heads:
      raise ValueError(f"a {leaf} of shape {shape} has {shape[-2]} heads, but max_logits gives {heads}")
    return scale[:, None]
  if shape[-1] % heads:
    raise ValueError(f"a {leaf} of shape {shape} does not split into the {heads} heads max_logits gives")
  return jnp.repeat(scale, shape[-1] // heads)


def qk_clip(threshold: float | jax.Array = 100.0, *, attention: AttentionPaths,
            balance: float | jax.Array = 0.5) -> optax.GradientTransformationExtraArgs:
  r"""QK-clip (Kimi K2's MuonClip): rescale each head's query and key projections after the step.

  For each attention layer in `attention` and each head h, with :math:`S_h` the head's largest pre-softmax
  logit :math:`q_i \cdot k_j / \sqrt d` over the batch (``max_logits[name][h]``, as the model scales them):

  .. math::
    \gamma_h = \min\Big(1, \frac{\tau}{S_h}\Big), \qquad
    W_q^h \leftarrow \gamma_h^{\beta}\, W_q^h, \quad W_k^h \leftarrow \gamma_h^{1 - \beta}\, W_k^h,

  the same factors on the heads' biases, :math:`\tau` = `threshold`, :math:`\beta` = `balance` (0.5: the
  logits scale by :math:`\gamma_h`). The rescaling acts on the weights after the step: on the projection
  leaves the returned update is :math:`s \odot (x + u) - x`, x the params and u the incoming update, so it
  goes last in a chain, ``optax.chain(optax.adamw(lr), qk_clip(tau, attention=...))``; other leaves pass
  unchanged. A head whose :math:`S_h` is not finite or not positive is left as it is. Values are not touched.
  Without `max_logits` (a step the model did not measure) the weights are left as they are.

  Args:
    threshold: :math:`\tau > 0`, the largest logit allowed (100 at Kimi K2's scale).
    attention: attention layer name -> (query_path, key_path), each a tuple of keys into the params naming
      a module dict with ``'kernel'`` and optionally ``'bias'``; kernels shaped (in, heads, head_dim) (Flax
      `DenseGeneral`, as in `nn.MultiHeadDotProductAttention`) or (in, heads * head_dim) (`nn.Dense`),
      biases (heads, head_dim) or (heads * head_dim,).
    balance: :math:`\beta` in [0, 1], the share of the rescaling on the queries.

  Returns:
    An `optax.GradientTransformationExtraArgs` with a `QKClipState`; its ``update(updates, state, params, *,
    max_logits)`` takes `max_logits`, a mapping from each name of `attention` to the per-head largest logits
    [heads]. `clip_stats` reports ``max_attention_logit`` (NaN or inf when a head's logit was) and
    ``heads_clipped``.

  References:
    Kimi Team, "Kimi K2: Open Agentic Intelligence", arXiv 2507.20534, 2025 (QK-clip, in MuonClip).

  Example:
    >>> import jax.numpy as jnp, optax
    >>> from acclip_optax import qk_clip
    >>> params = {"query": {"kernel": jnp.ones((4, 2, 3))}, "key": {"kernel": jnp.ones((4, 2, 3))}}
    >>> tx = optax.chain(optax.sgd(0.1), qk_clip(10.0, attention={"layer": (("query",), ("key",))}))
    >>> grads = {"query": {"kernel": jnp.zeros((4, 2, 3))}, "key": {"kernel": jnp.zeros((4, 2, 3))}}
    >>> updates, state = tx.update(grads, tx.init(params), params, max_logits={"layer": jnp.array([40.0, 5.0])})
    >>> float(optax.apply_updates(params, updates)["query"]["kernel"][0, 0, 0])  # head 0: sqrt(10 / 40)
    0.5
  """
  check_in_range("threshold", threshold, 0.0, math.inf, low_inclusive=False)
  check_in_range("balance", balance, 0.0, 1.0, high_inclusive=True)
  if not isinstance(attention, Mapping):  # empty: a model without attention, nothing to rescale
    raise ValueError(f"attention={attention!r} must map a name to a (query_path, key_path) pair")
  paths = {}
  for name, pair in attention.items():
    if not (isinstance(pair, (tuple, list)) and len(pair) == 2):
      raise ValueError(f"attention[{name!r}]={pair!r} must be a (query_path, key_path) pair")
    for path, side in zip(pair, ("query", "key")):
      paths[tuple(path)] = (name, side)

  def owner(path: tuple) -> tuple[str, Any, str] | None:
    """(attention name, "query" or "key", "kernel" or "bias") of a leaf's key path; None for other leaves."""
    keys = tuple(_key_name(entry) for entry in path)
    found = paths.get(keys[:-1])
    return (found[0], found[1], keys[-1]) if found and keys[-1] in ("kernel", "bias") else None

  def check_paths(params):
    kernels = {tuple(_key_name(entry) for entry in path[:-1])
               for path, _ in jax.tree_util.tree_flatten_with_path(params)[0] if _key_name(path[-1]) == "kernel"}
    missing = [path for path in paths if path not in kernels]
    if missing:
      raise ValueError(f"qk_clip: the params have no module with a 'kernel' at {missing[0]!r} (attention names "
                       "key paths into the params)")

  def init_fn(params):
    check_floating_leaves("params", params)
    return QKClipState(count=jnp.zeros([], jnp.int32), max_logit=jnp.full([], -jnp.inf, jnp.float32),
                       heads_clipped=jnp.zeros([], jnp.int32))

  def update_fn(updates, state, params=None, *, max_logits=None, **extra_args):
    del extra_args
    check_floating_leaves("updates", updates)
    if params is not None:
      check_same_tree("updates", updates, "the params", params)
    if max_logits is None:
      return updates, state._replace(count=optax.safe_increment(state.count))
    if params is None:
      raise ValueError("qk_clip rescales the weights: pass the params to update (as optax.adamw needs them)")
    check_paths(params)
    if set(max_logits) != set(attention):
      raise ValueError(f"max_logits has the names {sorted(max_logits)}, but attention has {sorted(attention)}")
    logits = {name: jnp.asarray(value, jnp.float32).reshape(-1) for name, value in max_logits.items()}
    valid = {name: jnp.isfinite(value) & (value > 0) for name, value in logits.items()}
    gamma = {name: jnp.where(valid[name], jnp.minimum(1.0, threshold / jnp.where(valid[name], value, 1.0)), 1.0)
             for name, value in logits.items()}

    def rescale(path, u, x):
      found = owner(path)
      if found is None:
        return u
      name, side, leaf = found
      power = balance if side == "query" else 1.0 - balance
      scale = _per_head(gamma[name] ** power, x.shape, leaf)
      x32 = upcast(x)
      return (scale * (x32 + u.astype(x32.dtype)) - x32).astype(u.dtype)

    updates = jax.tree_util.tree_map_with_path(rescale, updates, params)
    # The largest logit as measured, a non-finite one included: a blow-up is reported, not hidden.
    largest = [jnp.max(value) for value in logits.values() if value.size]
    state = QKClipState(count=optax.safe_increment(state.count),
                        max_logit=jnp.max(jnp.stack(largest)) if largest else state.max_logit,
                        heads_clipped=sum((jnp.sum(g < 1, dtype=jnp.int32) for g in gamma.values()),
                                          jnp.zeros([], jnp.int32)))
    return updates, state

  return optax.GradientTransformationExtraArgs(init_fn, update_fn)
