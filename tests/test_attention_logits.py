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
