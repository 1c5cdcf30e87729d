"""The SQuAD span head on the BERT encoder, and the span loss.

`BertForQuestionAnswering` holds `experiments.bert.models.BertModel` under the params key ``'bert'``, the key
of the MLM model's encoder, so a pre-training checkpoint's ``params['bert']`` drops in.

For a window with answer tokens ``(s, e)`` (both 0, the [CLS] token, when the answer is not inside it):

    loss = (CE(start_logits, s) + CE(end_logits, e)) / 2,
    correct = [argmax start_logits == s  and  argmax end_logits == e].
"""
from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import optax

from experiments.bert import models as bert_models


class BertForQuestionAnswering(nn.Module):
  """BERT encoder with a linear start/end head: ``[start, end]_logits = hidden @ W + b``, ``W: [H, 2]``.

  Padding positions get logit -1e9 so that neither the loss nor the decoding ever picks them.

  Attributes:
    config: the BERT model config, as taken by `experiments.bert.models.BertModel`.
  """
  config: Any

  @nn.compact
  def __call__(self, input_ids, token_type_ids, attention_mask, *, deterministic: bool):
    hidden = bert_models.BertModel(self.config, name="bert")(
        input_ids, token_type_ids, attention_mask, deterministic=deterministic)
    logits = span_head(self.config)(hidden.astype(jnp.float32))
    logits = jnp.where(attention_mask[..., None] > 0, logits, -1e9)
    return logits[..., 0], logits[..., 1]


def span_head(config) -> nn.Dense:
  """The linear start/end head ``hidden [..., H] -> logits [..., 2]`` (params key ``'qa_outputs'``)."""
  return nn.Dense(2, kernel_init=nn.initializers.normal(config.initializer_range), dtype=jnp.float32,
                  name="qa_outputs")


def init_head(config, key: jax.Array) -> dict[str, Any]:
  """``{'qa_outputs': head params}``: with a pre-trained ``'bert'`` encoder, the model's whole params.

  Cheaper than `BertForQuestionAnswering.init`, which also initialises (and compiles the initialisers of)
  the encoder that a pre-trained one replaces.
  """
  hidden = jnp.zeros((1, config.hidden_size), jnp.float32)
  return {"qa_outputs": span_head(config).init(key, hidden)["params"]}


def span_terms(start_logits, end_logits, start_positions, end_positions) -> dict[str, jax.Array]:
  """Per window ``[B]``: "loss" and "correct" of the module docstring."""
  start_loss = optax.softmax_cross_entropy_with_integer_labels(start_logits, start_positions)
  end_loss = optax.softmax_cross_entropy_with_integer_labels(end_logits, end_positions)
  correct = ((jnp.argmax(start_logits, axis=-1) == start_positions)
             & (jnp.argmax(end_logits, axis=-1) == end_positions))
  return {"loss": (start_loss + end_loss) / 2, "correct": correct.astype(jnp.float32)}


def span_sums(start_logits, end_logits, start_positions, end_positions, weights) -> dict[str, jax.Array]:
  """Weighted sums over the windows: loss_sum = sum_i w_i loss_i, correct_sum, weight_sum = sum_i w_i.

  The names of `experiments.common.classification.weighted_sums`, so its `apply_gradients` applies.
  """
  terms = span_terms(start_logits, end_logits, start_positions, end_positions)
  return {"loss_sum": jnp.sum(terms["loss"] * weights), "correct_sum": jnp.sum(terms["correct"] * weights),
          "weight_sum": jnp.sum(weights)}


def span_loss(start_logits, end_logits, start_positions, end_positions) -> jax.Array:
  """``(CE(start_logits, start) + CE(end_logits, end)) / 2``, averaged over the batch."""
  return jnp.mean(span_terms(start_logits, end_logits, start_positions, end_positions)["loss"])
