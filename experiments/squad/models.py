"""The SQuAD span head on the BERT encoder, and the span loss.

`BertForQuestionAnswering` (`experiments.bert.models`) holds `experiments.bert.models.BertModel` under the params key ``'bert'``, the key
of the MLM model's encoder, so a pre-training checkpoint's ``params['bert']`` drops in.

For a window with answer tokens ``(s, e)`` (both 0, the [CLS] token, when the answer is not inside it):

    loss = (CE(start_logits, s) + CE(end_logits, e)) / 2,
    correct = [argmax start_logits == s  and  argmax end_logits == e].
"""
from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import optax

# The model and its head live with the other BERT models (the Hugging Face import and export read them too).
from experiments.bert.models import BertForQuestionAnswering, span_head


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
