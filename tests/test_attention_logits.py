"""Flax BERT measures its attention logits in the training step (no second pass), logs them, and trains with
the optimizers that read them (QK-clip) or that the large trainers pair them with (Muon)."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from experiments.bert import models
from experiments.bert import train
from experiments.common import metrics as metrics_lib
from test_bert import micro_config


def test_measuring_the_logits_adds_no_matrix_product_to_the_compiled_step():
  """The sown logits are the einsum flax's attention computes anyway: XLA merges the two (common-subexpression
  elimination), so a gradient step with the measurement has exactly the matrix products of one without."""
  config = models.BertConfig(vocab_size=64, hidden_size=16, num_layers=1, num_heads=2, intermediate_size=32,
                             max_position_embeddings=16)
  model = models.BertForMaskedLM(config)
  tokens, positions = jnp.zeros((2, 8), jnp.int32), jnp.zeros((2, 3), jnp.int32)
  params = model.init(jax.random.key(0), tokens, tokens, tokens + 1, positions, deterministic=True)["params"]
  batch = {"input_ids": tokens, "token_type_ids": tokens, "attention_mask": tokens + 1, "masked_positions": positions}

  def products(with_max_logits):
    def loss(p):
      out = train.apply_model(model, p, batch, deterministic=True, with_max_logits=with_max_logits)
      return (jnp.sum(out[0]), out[1]) if with_max_logits else (jnp.sum(out), {})
    return jax.jit(jax.grad(loss, has_aux=True)).lower(params).compile().as_text().count(" dot(")

  assert products(True) == products(False) > 0


def test_the_sown_maximum_is_each_heads_largest_unmasked_logit():
  config = models.BertConfig(vocab_size=40, hidden_size=16, num_layers=2, num_heads=2, intermediate_size=32,
                             max_position_embeddings=16)
  model = models.BertForMaskedLM(config)
  rng = np.random.default_rng(0)
  tokens = jnp.asarray(rng.integers(0, 40, size=(3, 8)), jnp.int32)
  mask = jnp.ones((3, 8), jnp.int32).at[:, 6:].set(0)  # two padded positions: never attended
  variables = model.init(jax.random.key(1), tokens, tokens * 0, mask, tokens[:, :2], deterministic=True)
  logits, found = train.apply_model(model, variables["params"], {
      "input_ids": tokens, "token_type_ids": tokens * 0, "attention_mask": mask,
      "masked_positions": tokens[:, :2]}, deterministic=True, with_max_logits=True)
  plain = train.apply_model(model, variables["params"], {
      "input_ids": tokens, "token_type_ids": tokens * 0, "attention_mask": mask,
      "masked_positions": tokens[:, :2]}, deterministic=True)
  np.testing.assert_array_equal(logits, plain)  # the same pass, the same logits
  # The first layer's by hand: its input is the embeddings' LayerNorm; q.k / sqrt(d) over unmasked pairs.
  _, state = model.apply(variables, tokens, tokens * 0, mask, tokens[:, :2], deterministic=True,
                         capture_intermediates=lambda module, name: module.name == "embeddings_layer_norm")
  hidden = np.asarray(jax.tree.leaves(state["intermediates"])[0], np.float64)
  attention = variables["params"]["bert"]["layer_0"]["attention"]
  project = lambda p: np.einsum("bli,ihd->blhd", hidden, np.asarray(p["kernel"], np.float64)) + np.asarray(p["bias"])
  q, k = project(attention["query"]), project(attention["key"])
  scores = np.einsum("bqhd,bkhd->bhqk", q, k) / np.sqrt(q.shape[-1])
  valid = (np.asarray(mask)[:, None, :, None] > 0) & (np.asarray(mask)[:, None, None, :] > 0)
  expected = np.where(valid, scores, -np.inf).max(axis=(0, 2, 3))
  np.testing.assert_allclose(found["bert/layer_0/attention"], expected, rtol=1e-5)
  assert sorted(found) == ["bert/layer_0/attention", "bert/layer_1/attention"]


@pytest.mark.parametrize("optimizer, fields", [
    ("muon", {}), ("adamw_qkclip", {"qk_clip_threshold": 0.01}), ("muon_qkclip", {"qk_clip_threshold": 0.01})])
def test_bert_logs_its_largest_attention_logit_and_trains_with_muon_and_qk_clip(tmp_path, optimizer, fields):
  result = train.train_and_evaluate(micro_config(optimizer=optimizer, num_train_steps=4, warmup_steps=1,
                                                 learning_rate=0.01, **fields), str(tmp_path))
  records = metrics_lib.read_metrics(result["metrics_path"])
  steps = [r for r in records if "train_loss" in r]
  assert len(steps) == 4 and all(np.isfinite(r["train_loss"]) for r in steps)
  assert all(r["max_attention_logit"] > 0 for r in steps)
  logged = [r for r in steps if "heads_clipped" in r]
  if optimizer.endswith("qkclip"):  # the micro model's logits are about 0.01-0.06: heads pass 0.01 and are capped
    assert logged and any(r["heads_clipped"] >= 1 for r in logged)
  else:
    assert not logged


def test_muon_orthogonalises_the_matrices_and_leaves_the_rest_to_adam():
  from experiments.common import optimizers  # pylint: disable=g-import-not-at-top
  config = models.BertConfig(vocab_size=40, hidden_size=16, num_layers=1, num_heads=2, intermediate_size=32,
                             max_position_embeddings=16)
  tokens = jnp.zeros((1, 4), jnp.int32)
  params = models.BertForMaskedLM(config).init(jax.random.key(0), tokens, tokens, tokens + 1, tokens[:, :1],
                                               deterministic=True)["params"]
  numbers = optimizers.muon_dimension_numbers(params)
  flat = {"/".join(str(getattr(k, "key", k)) for k in path): value for path, value in
          jax.tree_util.tree_flatten_with_path(numbers, is_leaf=lambda x: x is None or hasattr(x, "reduction_axis"))[0]}
  attention = "bert/layer_0/attention"
  for name in ("query", "key", "value"):  # (in, heads, head_dim): one (in, heads * head_dim) matrix
    assert flat[f"{attention}/{name}/kernel"].reduction_axis == 0
    assert flat[f"{attention}/{name}/kernel"].output_axis == (1, 2)
    assert flat[f"{attention}/{name}/bias"] is None
  assert flat[f"{attention}/out/kernel"].reduction_axis == (0, 1) and flat[f"{attention}/out/kernel"].output_axis == 2
  matrices = {name for name, value in flat.items() if value is not None}
  assert all(name.endswith("kernel") for name in matrices)
  # Embeddings, LayerNorm, biases and the output bias go to Muon's Adam branch.
  for name, value in flat.items():
    if "embeddings" in name or "layer_norm" in name.lower() or name.endswith("bias"):
      assert value is None, name
  assert len(matrices) >= 6  # q, k, v, out and the feed-forward pair


def test_qk_clip_comes_after_independent_weight_decay():
  """QK-clip rescales the weights the step leaves, decay included: with a head far past the threshold, the
  query kernel ends at gamma ** 0.5 times (x + the AdamW step - the independent shrink)."""
  from experiments.common import optimizers  # pylint: disable=g-import-not-at-top
  x = jnp.asarray(np.random.default_rng(0).normal(size=(4, 2, 3)), jnp.float32)
  params = {"attention": {"query": {"kernel": x}, "key": {"kernel": x + 1.0}}}
  grads = jax.tree.map(jnp.ones_like, params)
  common = dict(total_steps=10, learning_rate=0.1, warmup_steps=0, learning_rate_decay="constant", weight_decay=0.5,
                weight_decay_mode="independent")
  capped = optimizers.OptimizerSpec("adamw_qkclip", **common).replace(qk_clip_threshold=1.0).create()
  plain = optimizers.OptimizerSpec("adamw", **common).create()
  max_logits = {"attention": jnp.asarray([4.0, 0.5])}  # head 0: gamma = 1/4; head 1 below the threshold
  updates, _ = capped.update(grads, capped.init(params), params, max_logits=max_logits)
  reference, _ = plain.update(grads, plain.init(params), params)
  stepped = np.asarray(x + reference["attention"]["query"]["kernel"], np.float64)
  scale = np.asarray([0.25 ** 0.5, 1.0])[None, :, None]
  np.testing.assert_allclose(x + updates["attention"]["query"]["kernel"], scale * stepped, rtol=1e-6, atol=1e-7)


def test_qk_clip_is_refused_for_a_model_without_attention():
  """ResNet has no attention layer: QK-clip there would never act, so the optimizer refuses the params."""
  from experiments.common import optimizers  # pylint: disable=g-import-not-at-top
  spec = optimizers.OptimizerSpec("adamw_qkclip", total_steps=10, learning_rate=0.1, warmup_steps=0)
  with pytest.raises(ValueError, match="no module holding a 'query' kernel"):
    spec.create().init({"conv": {"kernel": jnp.ones((3, 3, 1, 4))}})
