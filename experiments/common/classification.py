"""Cross-entropy classification pieces the drivers share: weighted sums, the data-parallel update, eval."""
from __future__ import annotations

from typing import Any, Callable, Iterable

import jax
import jax.numpy as jnp
import optax

from experiments.common import optimizers
from experiments.common import parallel
from experiments.common import training_loop


def weighted_sums(logits: jax.Array, labels: jax.Array, weights: jax.Array) -> dict[str, jax.Array]:
  """Weighted sums of cross-entropy, correct predictions and weights (weight 0 leaves a row out)."""
  cross_entropy = optax.softmax_cross_entropy_with_integer_labels(logits, labels)
  correct = (jnp.argmax(logits, axis=-1) == labels).astype(jnp.float32)
  return {"loss_sum": jnp.sum(cross_entropy * weights), "correct_sum": jnp.sum(correct * weights),
          "weight_sum": jnp.sum(weights)}


def apply_gradients(tx: optax.GradientTransformation, params: Any, opt_state: Any, grads: Any,
                    sums: dict[str, jax.Array], denominator: jax.Array) -> tuple[Any, Any, dict]:
  """Inside a pmapped train step: one update from this device's gradients and `weighted_sums`.

  Each device's loss term is loss_sum_d / denominator with the global denominator, so

      g = psum_d grads_d,   params, opt_state <- tx(g, loss=psum_d loss_sum_d / denominator)

  (identical on every device; the loss is an extra argument of the update, read by `skipstep`).

  Returns:
    (params, opt_state, metrics): metrics holds train_loss = psum loss_sum / denominator, train_accuracy
    (the same for correct_sum), grad_norm (of g) and learning_rate. The clipping statistics are not
    computed here, in every step, but by the training loop at its logging steps (ACClip's clip fraction
    costs a pass over two state buffers: about 20% of a tiny BERT step on CPU).
  """
  grads = jax.lax.psum(grads, parallel.AXIS_NAME)
  sums = jax.lax.psum(sums, parallel.AXIS_NAME)
  loss = sums["loss_sum"] / denominator
  # The loss goes to the update as an extra argument: skip-step tests it, the others ignore it.
  updates, opt_state = tx.update(grads, opt_state, params, loss=loss)
  params = optax.apply_updates(params, updates)
  metrics = {
      "train_loss": loss,
      "train_accuracy": sums["correct_sum"] / denominator,
      "grad_norm": optax.tree.norm(grads),
      "learning_rate": optimizers.current_learning_rate(opt_state),
  }
  return params, opt_state, metrics


def evaluate(eval_step: Callable[[Any, Any], dict], replicated: Any,
             batches: Iterable[Any]) -> dict[str, float]:
  """Weighted mean loss and accuracy over `batches`.

  Args:
    eval_step: the pmapped `(replicated, sharded batch) -> weighted_sums psum-ed over devices`.
    replicated: what eval_step takes first (parameters, or a whole state).
    batches: the sharded evaluation batches.

  Returns:
    {"eval_loss": loss_sum / weight_sum, "eval_accuracy": correct_sum / weight_sum} over all batches
    (the denominator at least 1).
  """
  totals = {"loss_sum": 0.0, "correct_sum": 0.0, "weight_sum": 0.0}
  for batch in batches:
    sums = training_loop.first_device(eval_step(replicated, batch))
    for name in totals:
      totals[name] += float(sums[name])
  weight = max(totals["weight_sum"], 1.0)
  return {"eval_loss": totals["loss_sum"] / weight, "eval_accuracy": totals["correct_sum"] / weight}
