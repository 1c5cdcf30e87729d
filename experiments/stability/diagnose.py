"""What a run's final model looks like: the measurements behind the study's account of a collapse.

For a run that kept its checkpoint (`checkpoint_runs`), on the held-out batches the runs are evaluated on:

- `context_dependence`: the mean KL divergence (nats) between the model's prediction at each masked position
  and its average prediction over all of them; 0 means the same distribution whatever the input;
- `majority_prediction_share`: the share of masked positions whose most likely token is the most frequent one;
- `max_attention_logit`: the largest pre-softmax attention logit over every layer, head and batch (what
  QK-clip caps);
- `position_spread` per encoder layer's output (and the embeddings'): the mean over real tokens of
  ||h_i - h_mean|| / ||h_mean||, h_mean the mean hidden vector of the batch; near 0: every token the same vector;

and from the parameters:

- `attention_logit_bound` per layer: ||W_q||_2 ||W_k||_2 / sqrt(head size), the largest factor by which the
  attention logits can scale a pair of unit-norm inputs (spectral norms of the per-head kernels, the largest
  head's);
- `layer_norm_scale`: the mean |gamma| of each LayerNorm;
- `word_embedding_rms` and `word_embedding_top_share` (the share of the squared Frobenius norm in the top
  singular direction: near 1 means every token embeds along one line);
- `output_bias_entropy` (nats; of the softmax of the MLM output bias) and `output_bias_argmax`.
"""
from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from experiments.bert import input_pipeline
from experiments.bert import models
from experiments.common import checkpoint


def final_params(workdir: str, step: int | None = None) -> tuple[int, Any] | None:
  """(step, params) of the newest checkpoint under `workdir/checkpoints` (or of the one at `step`), restored
  without a template; None when the run kept none."""
  import orbax.checkpoint as ocp  # pylint: disable=g-import-not-at-top
  directory = os.path.join(workdir, "checkpoints")
  step = checkpoint.newest_step(directory) if step is None else step
  if step is None:
    return None
  state = ocp.StandardCheckpointer().restore(os.path.abspath(os.path.join(directory, str(step), "state")))
  return step, state["params"]


def _kl_to_mean(log_probs: np.ndarray, weights: np.ndarray) -> float:
  probs = np.exp(log_probs)
  mean = (probs * weights[:, None]).sum(0) / weights.sum()
  kl = (probs * (log_probs - np.log(np.maximum(mean, 1e-30)))).sum(-1)
  return float((kl * weights).sum() / weights.sum())


def parameter_measures(params: Mapping[str, Any], num_heads: int) -> dict[str, Any]:
  """The parameter measurements of the module docstring."""
  bert = params["bert"]
  measures: dict[str, Any] = {"attention_logit_bound": [], "layer_norm_scale": {}}
  layers = sorted((name for name in bert if name.startswith("layer_")), key=lambda name: int(name.split("_")[1]))
  for name in layers:
    attention = bert[name]["attention"]
    query, key = (np.asarray(attention[part]["kernel"], np.float64) for part in ("query", "key"))  # [H, heads, d]
    head_size = query.shape[-1]
    bounds = [np.linalg.norm(query[:, h, :], 2) * np.linalg.norm(key[:, h, :], 2) / np.sqrt(head_size)
              for h in range(query.shape[1])]
    measures["attention_logit_bound"].append(float(max(bounds)))
    for norm in ("attention_layer_norm", "output_layer_norm"):
      measures["layer_norm_scale"][f"{name}/{norm}"] = float(np.mean(np.abs(bert[name][norm]["scale"])))
  measures["layer_norm_scale"]["embeddings_layer_norm"] = float(np.mean(np.abs(bert["embeddings_layer_norm"]["scale"])))
  measures["layer_norm_scale"]["mlm_layer_norm"] = float(np.mean(np.abs(params["mlm_layer_norm"]["scale"])))
  embeddings = np.asarray(bert["word_embeddings"]["embedding"], np.float64)
  singular = np.linalg.svd(embeddings, compute_uv=False)
  measures["word_embedding_rms"] = float(np.sqrt(np.mean(embeddings ** 2)))
  measures["word_embedding_top_share"] = float(singular[0] ** 2 / np.sum(singular ** 2))
  bias = np.asarray(params["mlm_output_bias"], np.float64)
  log_softmax = bias - bias.max() - np.log(np.sum(np.exp(bias - bias.max())))
  measures["output_bias_entropy"] = float(-(np.exp(log_softmax) * log_softmax).sum())
  measures["output_bias_argmax"] = int(np.argmax(bias))
  del num_heads
  return measures


def activation_measures(params: Any, model_config: Any, batches: Sequence[Mapping[str, np.ndarray]],
                        majority_token: int) -> dict[str, Any]:
  """The measurements on held-out batches of the module docstring."""
  model = models.BertForMaskedLM(model_config)

  @jax.jit
  def forward(params, batch):
    logits, state = model.apply({"params": params}, batch["input_ids"], batch["token_type_ids"],
                                batch["attention_mask"], batch["masked_positions"], deterministic=True,
                                capture_intermediates=True, mutable=["intermediates"])
    bert = state["intermediates"]["bert"]
    hidden = [bert["embeddings_layer_norm"]["__call__"][0]] + [
        bert[f"layer_{i}"]["__call__"][0] for i in range(model_config.num_layers)]
    largest = jnp.max(jnp.stack([jnp.max(v) for v in models.max_attention_logits(state["intermediates"]).values()]))
    return jax.nn.log_softmax(logits), hidden, largest

  log_probs, weights, spreads, largest_logits = [], [], [], []
  for batch in batches:
    batch = {k: jnp.asarray(v) for k, v in batch.items()}
    batch_log_probs, hidden, largest = forward(params, batch)
    largest_logits.append(float(largest))
    log_probs.append(np.asarray(batch_log_probs).reshape(-1, model_config.vocab_size))
    weights.append(np.asarray(batch["masked_weights"]).reshape(-1))
    real = np.asarray(batch["attention_mask"]).astype(bool)
    batch_spreads = []
    for layer_output in hidden:
      vectors = np.asarray(layer_output, np.float64)[real]
      mean = vectors.mean(0)
      batch_spreads.append(float(np.mean(np.linalg.norm(vectors - mean, axis=-1)) / max(np.linalg.norm(mean), 1e-12)))
    spreads.append(batch_spreads)
  log_probs, weights = np.concatenate(log_probs), np.concatenate(weights).astype(np.float64)
  predicted = log_probs.argmax(-1)
  return {"context_dependence": _kl_to_mean(log_probs, weights),
          "majority_prediction_share": float(((predicted == majority_token) * weights).sum() / weights.sum()),
          "distinct_predictions": int(len(np.unique(predicted[weights > 0]))),
          "position_spread": [float(v) for v in np.mean(spreads, axis=0)],
          "max_attention_logit": max(largest_logits)}


def held_out_batches(config: Any, out_dir: str) -> tuple[list[dict[str, np.ndarray]], Any]:
  """The held-out batches every run of a study is evaluated on, and the BERT model config of `config` (a
  run's config), from the data prepared under `out_dir/baselines`."""
  data = input_pipeline.create_datasets(config, os.path.join(out_dir, "baselines"))
  model_config = models.BertConfig(vocab_size=data.vocab_size, **config.model)
  return list(data.eval_batches(config.eval_batch_size, split="eval")), model_config


def diagnose_params(params: Any, model_config: Any, batches: Sequence[Mapping[str, np.ndarray]],
                    majority_token: int) -> dict[str, Any]:
  """Every measurement of the module docstring, of one model's parameters."""
  return {**parameter_measures(params, model_config.num_heads),
          **activation_measures(params, model_config, batches, majority_token)}


def diagnose_runs(out_dir: str, runs: Mapping[str, Mapping[str, Any]], run_config: Any,
                  majority_token: int) -> dict[str, dict[str, Any]]:
  """run key -> the measurements of each run in `runs` that kept a checkpoint (others are left out).

  `run_config(method, learning_rate)` gives a run's BERT config (for the model and the held-out batches).
  """
  diagnosed, held_out = {}, None
  for key, run in runs.items():
    restored = final_params(os.path.join(out_dir, run["workdir"]))
    if restored is None:
      continue
    step, params = restored
    if held_out is None:  # every run of a study evaluates on the same held-out batches
      held_out = held_out_batches(run_config(run["method"], run["learning_rate"]), out_dir)
    batches, model_config = held_out
    diagnosed[key] = {"step": step, **diagnose_params(params, model_config, batches, majority_token)}
  return diagnosed
