"""Cross-entropy classification pieces the drivers share: weighted sums, the data-parallel update, eval."""
from __future__ import annotations

from typing import Any, Callable, Iterable

import jax
import jax.numpy as jnp
import optax

from experiments.common import optimizers


def weighted_sums(logits: jax.Array, labels: jax.Array, weights: jax.Array) -> dict[str, jax.Array]:
  """Weighted sums of cross-entropy, correct predictions and weights (weight 0 leaves a row out)."""
  cross_entropy = optax.softmax_cross_entropy_with_integer_labels(logits, labels)
  correct = (jnp.argmax(logits, axis=-1) == labels).astype(jnp.float32)
  return {"loss_sum": jnp.sum(cross_entropy * weights), "correct_sum": jnp.sum(correct * weights),
          "weight_sum": jnp.sum(weights)}


def sum_over_devices(grads: Any, sums: dict[str, jax.Array], denominator: jax.Array, axis_name: Any,
                     max_logits: dict[str, jax.Array] | None = None,
                     **state_updates: Any) -> tuple[Any, dict[str, Any]]:
  """The end of a per-device gradient step: the gradients and `weighted_sums` summed over `axis_name`.

  Each device's loss term is loss_sum_d / denominator with the global denominator, so g = psum_d grads_d is
  the gradient of the global batch's mean, the same on every device. `max_logits` (attention module -> its
  heads' largest pre-softmax logit on this device's rows) becomes the maximum over all devices.

  Returns:
    (g, aux) for `apply_gradients`: aux holds the summed sums, the denominator, the global max_logits (when
    given) and `state_updates` (state fields other than params and opt_state that the step changes, e.g.
    BatchNorm statistics).
  """
  aux = {"sums": jax.lax.psum(sums, axis_name), "denominator": denominator, "state_updates": state_updates}
  if max_logits:
    aux["max_logits"] = jax.lax.pmax(max_logits, axis_name)
  return jax.lax.psum(grads, axis_name), aux


def apply_gradients(tx: optax.GradientTransformation, state: Any, grads: Any,
                    aux: dict[str, Any]) -> tuple[Any, dict[str, jax.Array]]:
  """One update of `state` (a struct with step, params and opt_state) from `sum_over_devices`' output.

  The update gets the batch's mean loss as an extra argument (``tx.update(g, opt_state, params, loss=...)``,
  read by `skip_step_on_spikes`).

  Returns:
    (state, metrics): metrics holds train_loss = loss_sum / denominator, train_accuracy (the same for
    correct_sum), grad_norm (of g), learning_rate and, for an attention model (aux holds max_logits),
    max_attention_logit. The clipping statistics are not computed here, in
    every step, but by the training loop at its logging steps (ACClip's clip fraction costs a pass over two
    state buffers: about 20% of a tiny BERT step on CPU).
  """
  sums, denominator = aux["sums"], aux["denominator"]
  loss = sums["loss_sum"] / denominator
  # Extra arguments of the update: skip-step tests the loss, QK-clip reads the attention logits; the others
  # ignore them.
  extra = {"max_logits": aux["max_logits"]} if "max_logits" in aux else {}
  updates, opt_state = tx.update(grads, state.opt_state, state.params, loss=loss, **extra)
  params = optax.apply_updates(state.params, updates)
  metrics = {
      "train_loss": loss,
      "train_accuracy": sums["correct_sum"] / denominator,
      "grad_norm": optax.tree.norm(grads),
      "learning_rate": optimizers.current_learning_rate(opt_state),
  }
  if "max_logits" in aux:  # the largest pre-softmax attention logit of the step, over every layer and head
    metrics["max_attention_logit"] = jnp.max(jnp.stack([jnp.max(v) for v in aux["max_logits"].values()]))
  return state.replace(step=state.step + 1, params=params, opt_state=opt_state, **aux["state_updates"]), metrics


def evaluate(eval_step: Callable[[Any, Any], dict], placed: Any, batches: Iterable[Any],
             to_host: Callable[[Any], Any]) -> dict[str, float]:
  """Weighted mean loss and accuracy over `batches`.

  Args:
    eval_step: the compiled `(placed, placed batch) -> weighted_sums summed over devices`.
    placed: what eval_step takes first (parameters, or a whole state), placed on the devices.
    batches: the placed evaluation batches.
    to_host: the parallelism's fetch of device values.

  Returns:
    {"eval_loss": loss_sum / weight_sum, "eval_accuracy": correct_sum / weight_sum} over all batches
    (the denominator at least 1).
  """
  totals = {"loss_sum": 0.0, "correct_sum": 0.0, "weight_sum": 0.0}
  for batch in batches:
    sums = to_host(eval_step(placed, batch))
    for name in totals:
      totals[name] += float(sums[name])
  weight = max(totals["weight_sum"], 1.0)
  return {"eval_loss": totals["loss_sum"] / weight, "eval_accuracy": totals["correct_sum"] / weight}
