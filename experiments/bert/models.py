"""BERT in Flax linen, as in Devlin et al. (2019): the encoder and the masked-language-model head.

* Embeddings: word + learned absolute position + token type, then LayerNorm and dropout.
* Each layer (post-LayerNorm, as the original):
      h = LayerNorm(x + Dropout(SelfAttention(x)))
      y = LayerNorm(h + Dropout(W2 GELU(W1 h + b1) + b2))        (exact erf GELU)
* MLM head: LayerNorm(GELU(W h + b)) @ E^T + b_vocab, with E the word-embedding matrix (tied weights).

The pre-training model keeps the encoder under the parameter key `'bert'`, so a fine-tuning model that
holds `BertModel(config, name='bert')` loads `params['bert']` from a pre-training checkpoint directly.
There is no pooler and no next-sentence head: pre-training here is MLM only (as RoBERTa), and SQuAD uses the
sequence output.
"""
from __future__ import annotations

import dataclasses
import math
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp


@dataclasses.dataclass(frozen=True)
class BertConfig:
  """Architecture hyperparameters (frozen, so it is hashable and can key compiled-function caches)."""
  vocab_size: int
  hidden_size: int = 768
  num_layers: int = 12
  num_heads: int = 12
  intermediate_size: int = 3072
  max_position_embeddings: int = 512
  type_vocab_size: int = 2
  dropout_rate: float = 0.1
  attention_dropout_rate: float = 0.1
  layer_norm_eps: float = 1e-12
  initializer_range: float = 0.02
  dtype: str = "float32"  # the computation dtype (e.g. "bfloat16" on TPU/GPU); parameters stay float32

  def __post_init__(self):
    if self.hidden_size % self.num_heads:
      raise ValueError(
          f"hidden_size={self.hidden_size} must be divisible by num_heads={self.num_heads}")
    for name in ("vocab_size", "hidden_size", "num_layers", "num_heads", "intermediate_size",
                 "max_position_embeddings", "type_vocab_size"):
      if getattr(self, name) < 1:
        raise ValueError(f"{name}={getattr(self, name)} must be >= 1")
    for name in ("dropout_rate", "attention_dropout_rate"):
      if not 0 <= getattr(self, name) < 1:
        raise ValueError(f"{name}={getattr(self, name)} must lie in [0, 1)")
    for name in ("layer_norm_eps", "initializer_range"):
      if not getattr(self, name) > 0:
        raise ValueError(f"{name}={getattr(self, name)} must be > 0")
    try:
      floating = jnp.issubdtype(jnp.dtype(self.dtype), jnp.floating)
    except TypeError:
      floating = False
    if not floating:
      raise ValueError(f"dtype={self.dtype!r} is not a floating-point dtype (float32, bfloat16, float16)")


def _dense(config: BertConfig, features: int, name: str) -> nn.Dense:
  return nn.Dense(features, dtype=jnp.dtype(config.dtype), name=name,
                  kernel_init=nn.initializers.normal(config.initializer_range))


def _layer_norm(config: BertConfig, name: str) -> nn.LayerNorm:
  return nn.LayerNorm(epsilon=config.layer_norm_eps, dtype=jnp.dtype(config.dtype), name=name)


MAX_LOGITS = "max_logits"  # the name under which each attention module sows its per-head largest logit


def attention_with_max_logit(query, key, value, bias=None, mask=None, broadcast_dropout=True, dropout_rng=None,
                             dropout_rate=0.0, deterministic=False, dtype=None, precision=None, module=None,
                             force_fp32_for_softmax=False, qk_attn_weights_einsum=None,
                             attn_weights_value_einsum=None):
  """`nn.dot_product_attention`, which also sows each head's largest pre-softmax logit q.k / sqrt(d) over the
  (unmasked) positions of the batch as ``intermediates/.../MAX_LOGITS`` [heads] on the attention `module`.

  The logits are those the softmax sees (the query scaled by 1 / sqrt(d) first, as flax does); collecting
  them costs a reduction in the same forward pass: the einsum below is the one flax's attention computes, and
  XLA merges the two (a compiled step has the same matrix products with or without the measurement, tested).
  The `intermediates` collection is kept only when the caller asks for it: ``apply(...,
  mutable=["intermediates"])``. The attention itself is flax's, unchanged.
  """
  if module is not None:
    scaled = query / jnp.sqrt(query.shape[-1]).astype(query.dtype)
    logits = jax.lax.stop_gradient(jnp.einsum("...qhd,...khd->...hqk", scaled, key).astype(jnp.float32))
    if mask is not None:
      logits = jnp.where(mask, logits, -jnp.inf)
    heads_last = jnp.moveaxis(logits, -3, -1).reshape(-1, logits.shape[-3])
    module.sow("intermediates", MAX_LOGITS, jnp.max(heads_last, axis=0))
  return nn.dot_product_attention(
      query, key, value, bias=bias, mask=mask, broadcast_dropout=broadcast_dropout, dropout_rng=dropout_rng,
      dropout_rate=dropout_rate, deterministic=deterministic, dtype=dtype, precision=precision,
      force_fp32_for_softmax=force_fp32_for_softmax, qk_attn_weights_einsum=qk_attn_weights_einsum,
      attn_weights_value_einsum=attn_weights_value_einsum)


def apply_with_max_attention_logits(model: nn.Module, params: Any, *args, **kwargs) -> tuple[Any, dict[str, jax.Array]]:
  """(`model.apply({"params": params}, *args, **kwargs)`, {attention module: its heads' largest pre-softmax
  logit on this batch}), from the same forward pass (the sown `intermediates`)."""
  output, collections = model.apply({"params": params}, *args, mutable=["intermediates"], **kwargs)
  return output, max_attention_logits(collections["intermediates"])


def max_attention_logits(intermediates: Any) -> dict[str, jax.Array]:
  """{attention module path "bert/layer_0/attention": its heads' largest logits [heads]} from the sown
  `intermediates` collection (empty when nothing was sown)."""
  found = {}
  for path, leaf in jax.tree_util.tree_flatten_with_path(intermediates)[0]:
    keys = [str(getattr(entry, "key", getattr(entry, "idx", entry))) for entry in path]
    if MAX_LOGITS in keys:
      found["/".join(keys[:keys.index(MAX_LOGITS)])] = leaf
  return found


class BertLayer(nn.Module):
  """One post-LayerNorm transformer encoder layer."""
  config: BertConfig

  @nn.compact
  def __call__(self, hidden, attention_bias_mask, *, deterministic: bool):
    config = self.config
    attention = nn.MultiHeadDotProductAttention(
        num_heads=config.num_heads, dtype=jnp.dtype(config.dtype),
        dropout_rate=config.attention_dropout_rate,
        kernel_init=nn.initializers.normal(config.initializer_range), attention_fn=attention_with_max_logit,
        name="attention")(hidden, hidden, mask=attention_bias_mask, deterministic=deterministic, sow_weights=True)
    attention = nn.Dropout(config.dropout_rate)(attention, deterministic=deterministic)
    hidden = _layer_norm(config, "attention_layer_norm")(hidden + attention)
    feed_forward = _dense(config, config.intermediate_size, "intermediate")(hidden)
    feed_forward = nn.gelu(feed_forward, approximate=False)
    feed_forward = _dense(config, config.hidden_size, "output")(feed_forward)
    feed_forward = nn.Dropout(config.dropout_rate)(feed_forward, deterministic=deterministic)
    return _layer_norm(config, "output_layer_norm")(hidden + feed_forward)


class BertModel(nn.Module):
  """The BERT encoder: `(input_ids, token_type_ids, attention_mask) -> sequence_output [B, L, H]`.

  Args (call):
    input_ids: int [B, L] token ids.
    token_type_ids: int [B, L] segment ids (0 or 1).
    attention_mask: [B, L], 1 for real tokens and 0 for padding.
    deterministic: True disables dropout; False needs a `'dropout'` RNG.
  """
  config: BertConfig

  def setup(self):
    config = self.config
    embedding_init = nn.initializers.normal(config.initializer_range)
    self.word_embeddings = nn.Embed(config.vocab_size, config.hidden_size, embedding_init=embedding_init,
                                    dtype=jnp.dtype(config.dtype), name="word_embeddings")
    self.position_embeddings = nn.Embed(config.max_position_embeddings, config.hidden_size,
                                        embedding_init=embedding_init, dtype=jnp.dtype(config.dtype),
                                        name="position_embeddings")
    self.token_type_embeddings = nn.Embed(config.type_vocab_size, config.hidden_size,
                                          embedding_init=embedding_init, dtype=jnp.dtype(config.dtype),
                                          name="token_type_embeddings")
    self.embeddings_layer_norm = _layer_norm(config, "embeddings_layer_norm")
    self.embeddings_dropout = nn.Dropout(config.dropout_rate)
    self.layers = [BertLayer(config, name=f"layer_{i}") for i in range(config.num_layers)]

  def __call__(self, input_ids, token_type_ids, attention_mask, *, deterministic: bool):
    sequence_length = input_ids.shape[-1]
    if sequence_length > self.config.max_position_embeddings:
      raise ValueError(f"sequence length {sequence_length} exceeds max_position_embeddings="
                       f"{self.config.max_position_embeddings}")
    positions = jnp.arange(sequence_length)[None, :]
    hidden = (self.word_embeddings(input_ids) + self.position_embeddings(positions)
              + self.token_type_embeddings(token_type_ids))
    hidden = self.embeddings_dropout(self.embeddings_layer_norm(hidden), deterministic=deterministic)
    attention_bias_mask = nn.make_attention_mask(attention_mask > 0, attention_mask > 0)
    for layer in self.layers:
      hidden = layer(hidden, attention_bias_mask, deterministic=deterministic)
    return hidden

  def attend_word_embeddings(self, hidden):
    """hidden @ E^T: logits over the vocabulary with the (tied) word-embedding matrix E."""
    return self.word_embeddings.attend(hidden)


class BertForMaskedLM(nn.Module):
  """BERT with the MLM head; returns vocabulary logits at the requested positions.

  Args (call):
    input_ids, token_type_ids, attention_mask, deterministic: as `BertModel`.
    masked_positions: int [B, P] positions whose tokens are predicted.

  Returns:
    float32 logits [B, P, vocab_size].
  """
  config: BertConfig

  def setup(self):
    self.bert = BertModel(self.config, name="bert")
    self.transform = _dense(self.config, self.config.hidden_size, "mlm_transform")
    self.transform_layer_norm = _layer_norm(self.config, "mlm_layer_norm")
    self.output_bias = self.param("mlm_output_bias", nn.initializers.zeros, (self.config.vocab_size,))

  def __call__(self, input_ids, token_type_ids, attention_mask, masked_positions, *,
               deterministic: bool):
    sequence_output = self.bert(input_ids, token_type_ids, attention_mask, deterministic=deterministic)
    masked_output = jnp.take_along_axis(sequence_output, masked_positions[..., None], axis=1)
    hidden = self.transform_layer_norm(nn.gelu(self.transform(masked_output), approximate=False))
    logits = self.bert.attend_word_embeddings(hidden)
    return logits.astype(jnp.float32) + self.output_bias


def count_params(params: Any) -> int:
  """The number of scalars in a parameter tree (works on `jax.eval_shape` outputs too)."""
  return sum(math.prod(leaf.shape) for leaf in jax.tree.leaves(params))


def abstract_params(config: BertConfig, sequence_length: int = 8) -> Any:
  """The MLM model's parameter shapes without allocating them (`jax.eval_shape` of `init`)."""
  model = BertForMaskedLM(config)
  tokens = jnp.zeros((1, sequence_length), jnp.int32)
  return jax.eval_shape(
      lambda: model.init(jax.random.key(0), tokens, tokens, tokens, tokens[:, :1], deterministic=True)
  )["params"]


class BertForQuestionAnswering(nn.Module):
  """BERT encoder with a linear start/end head: ``[start, end]_logits = hidden @ W + b``, ``W: [H, 2]``.

  Padding positions get logit -1e9 so that neither the loss nor the decoding ever picks them.

  Attributes:
    config: the BERT model config, as taken by `experiments.bert.models.BertModel`.
  """
  config: Any

  @nn.compact
  def __call__(self, input_ids, token_type_ids, attention_mask, *, deterministic: bool):
    hidden = BertModel(self.config, name="bert")(
        input_ids, token_type_ids, attention_mask, deterministic=deterministic)
    logits = span_head(self.config)(hidden.astype(jnp.float32))
    logits = jnp.where(attention_mask[..., None] > 0, logits, -1e9)
    return logits[..., 0], logits[..., 1]


def span_head(config) -> nn.Dense:
  """The linear start/end head ``hidden [..., H] -> logits [..., 2]`` (params key ``'qa_outputs'``)."""
  return nn.Dense(2, kernel_init=nn.initializers.normal(config.initializer_range), dtype=jnp.float32,
                  name="qa_outputs")
