"""QK-clip: the rule against a float64 NumPy reference written from its formula, its placement in a chain,
its statistics and its errors."""
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import acclip_optax
from acclip_optax import qk_clip

HEADS, HEAD_DIM, WIDTH = 4, 3, 5


def layer_params(rng, fused):
  """One attention layer's query, key and value projections: DenseGeneral (in, H, D) or Dense (in, H * D)."""
  kernel = (WIDTH, HEADS * HEAD_DIM) if fused else (WIDTH, HEADS, HEAD_DIM)
  bias = (HEADS * HEAD_DIM,) if fused else (HEADS, HEAD_DIM)
  return {name: {"kernel": rng.normal(size=kernel), "bias": rng.normal(size=bias)}
          for name in ("query", "key", "value")}


def reference(params, updates, max_logits, threshold, balance, attention):
  """x + u, then W_q^h and its bias times gamma_h^balance, W_k^h times gamma_h^(1 - balance) (float64)."""
  stepped = jax.tree.map(lambda x, u: np.asarray(x, np.float64) + np.asarray(u, np.float64), params, updates)
  for name, (query_path, key_path) in attention.items():
    logits = np.asarray(max_logits[name], np.float64)
    gamma = np.ones_like(logits)
    for h, s in enumerate(logits):
      if np.isfinite(s) and s > 0:
        gamma[h] = min(1.0, threshold / s)
    for path, power in ((query_path, balance), (key_path, 1 - balance)):
      module = stepped
      for key in path:
        module = module[key]
      for leaf, value in module.items():
        fused = value.shape[-1] == HEADS * HEAD_DIM  # (in, H * D) kernel or (H * D,) bias
        per_head = value.reshape(value.shape[:-1] + (HEADS, HEAD_DIM)) if fused else value
        module[leaf] = (per_head * (gamma ** power)[:, None]).reshape(value.shape)
  return stepped


@pytest.mark.parametrize("fused", [False, True])
@pytest.mark.parametrize("balance", [0.5, 0.3, 0.0, 1.0])
def test_qk_clip_matches_its_float64_reference(fused, balance):
  rng = np.random.default_rng(0)
  params = {"encoder": {f"layer_{i}": {"attention": layer_params(rng, fused)} for i in range(2)},
            "head": {"kernel": rng.normal(size=(5, 2))}}
  updates = jax.tree.map(lambda x: 0.01 * rng.normal(size=x.shape), params)
  attention = {f"layer_{i}": (("encoder", f"layer_{i}", "attention", "query"),
                              ("encoder", f"layer_{i}", "attention", "key")) for i in range(2)}
  # Heads: clipped (250 > 100), below the threshold, not finite, not positive; then inf, zero, clipped
  # (120 > 100) and just below.
  max_logits = {"layer_0": np.array([250.0, 40.0, np.nan, -3.0]), "layer_1": np.array([np.inf, 0.0, 120.0, 99.0])}
  tx = qk_clip(100.0, attention=attention, balance=balance)
  as32 = lambda tree: jax.tree.map(lambda x: jnp.asarray(x, jnp.float32), tree)
  out, state = jax.jit(tx.update)(as32(updates), tx.init(as32(params)), as32(params), max_logits=as32(max_logits))
  got = optax.apply_updates(as32(params), out)
  expected = reference(params, updates, max_logits, 100.0, balance, attention)
  for (path, a), b in zip(jax.tree_util.tree_leaves_with_path(got), jax.tree.leaves(expected)):
    np.testing.assert_allclose(a, b, rtol=2e-6, atol=2e-6, err_msg=jax.tree_util.keystr(path))
  # Values and other layers pass unchanged; the clipped head of the query is scaled by (100 / 250)^balance.
  value = got["encoder"]["layer_0"]["attention"]["value"]["kernel"]
  np.testing.assert_allclose(value, params["encoder"]["layer_0"]["attention"]["value"]["kernel"]
                             + updates["encoder"]["layer_0"]["attention"]["value"]["kernel"], rtol=1e-6)
  # The largest logit as measured: NaN here (layer 0's third head), not the largest finite one.
  assert int(state.heads_clipped) == 2 and np.isnan(float(state.max_logit))
  stats = acclip_optax.clip_stats(state)
  assert np.isnan(float(stats["max_attention_logit"])) and float(stats["heads_clipped"]) == 2.0
  _, state = tx.update(as32(updates), state, as32(params), max_logits=as32(
      {"layer_0": np.array([250.0, 40.0, 7.0, -3.0]), "layer_1": np.array([np.inf, 0.0, 120.0, 99.0])}))
  assert float(state.max_logit) == np.inf and int(state.count) == 2
  _, state = tx.update(as32(updates), state, as32(params), max_logits=as32(
      {"layer_0": np.array([250.0, 40.0, 7.0, -3.0]), "layer_1": np.array([1.0, 0.0, 120.0, 99.0])}))
  assert float(state.max_logit) == 250.0 and int(state.heads_clipped) == 2


@pytest.mark.parametrize("axis_type", [jax.sharding.AxisType.Explicit, jax.sharding.AxisType.Auto],
                         ids=["explicit", "auto"])
@pytest.mark.parametrize("fused", [False, True])
def test_rescaled_updates_keep_the_params_sharding_and_equal_the_unsharded_ones(fused, axis_type):
  """Kernels and biases sharded over 4 devices (by the heads, or by the fused heads * head_dim axis): the
  rescaled updates keep each leaf's sharding and equal the single-device result."""
  from jax.sharding import NamedSharding, PartitionSpec as P  # pylint: disable=g-import-not-at-top
  rng = np.random.default_rng(1)
  params = jax.tree.map(lambda x: jnp.asarray(x, jnp.float32), {"attention": layer_params(rng, fused)})
  updates = jax.tree.map(lambda x: 0.01 * jnp.ones_like(x), params)
  tx = qk_clip(100.0, attention={"layer": (("attention", "query"), ("attention", "key"))})
  max_logits = {"layer": jnp.asarray([250.0, 40.0, 400.0, 90.0])}
  expected, _ = tx.update(updates, tx.init(params), params, max_logits=max_logits)
  mesh = jax.make_mesh((4,), ("x",), axis_types=(axis_type,))
  # Kernels (in, H, D) or (in, H * D) by their second axis, biases (H, D) or (H * D,) by their first: the heads.
  spec = lambda path: P(None, "x") if jax.tree_util.keystr(path).endswith("['kernel']") else P("x")
  with jax.set_mesh(mesh):
    place = lambda tree: jax.tree_util.tree_map_with_path(
        lambda path, x: jax.device_put(x, NamedSharding(mesh, spec(path))), tree)
    sharded_params = place(params)
    out, state = jax.jit(tx.update)(place(updates), tx.init(sharded_params), sharded_params,
                                    max_logits=max_logits)
  assert int(state.heads_clipped) == 2
  for (path, got), param, want in zip(jax.tree_util.tree_leaves_with_path(out), jax.tree.leaves(sharded_params),
                                      jax.tree.leaves(expected)):
    assert got.sharding.is_equivalent_to(param.sharding, got.ndim), (jax.tree_util.keystr(path), got.sharding)
    np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-7, err_msg=jax.tree_util.keystr(path))


def test_a_capped_head_has_its_logits_at_the_threshold():
  """q.k/sqrt(d) of the rescaled weights: the clipped head's logit lands on tau (balance 0.5 or not)."""
  rng = np.random.default_rng(1)
  x = rng.normal(size=(6, WIDTH)).astype(np.float32)
  params = {"q": {"kernel": jnp.asarray(rng.normal(size=(WIDTH, 2, 8)), jnp.float32)},
            "k": {"kernel": jnp.asarray(rng.normal(size=(WIDTH, 2, 8)), jnp.float32)}}

  def head_max(params):
    q = jnp.einsum("li,ihd->lhd", x, params["q"]["kernel"])
    k = jnp.einsum("li,ihd->lhd", x, params["k"]["kernel"])
    return jnp.max(jnp.einsum("lhd,mhd->hlm", q, k) / jnp.sqrt(8.0), axis=(1, 2))

  before = head_max(params)
  threshold = float(before[0]) / 2  # head 0 must halve; head 1 may already lie below
  for balance in (0.5, 0.8):
    tx = qk_clip(threshold, attention={"attn": (("q",), ("k",))}, balance=balance)
    zeros = jax.tree.map(jnp.zeros_like, params)
    updates, _ = tx.update(zeros, tx.init(params), params, max_logits={"attn": before})
    after = head_max(optax.apply_updates(params, updates))
    np.testing.assert_allclose(after, np.minimum(before, threshold), rtol=1e-5)


def test_qk_clip_goes_last_in_a_chain_and_leaves_unmeasured_steps_alone():
  rng = np.random.default_rng(2)
  params = jax.tree.map(lambda x: jnp.asarray(x, jnp.float32), {"attn": layer_params(rng, False)})
  grads = jax.tree.map(lambda x: jnp.ones_like(x) * 0.1, params)
  attention = {"attn": (("attn", "query"), ("attn", "key"))}
  tx = optax.chain(optax.adamw(1e-2), qk_clip(5.0, attention=attention))
  plain = optax.adamw(1e-2)
  ours, _ = tx.update(grads, tx.init(params), params, max_logits={"attn": jnp.full(HEADS, 20.0)})
  reference_updates, _ = plain.update(grads, plain.init(params), params)
  stepped = optax.apply_updates(params, reference_updates)
  np.testing.assert_allclose(optax.apply_updates(params, ours)["attn"]["query"]["kernel"],
                             stepped["attn"]["query"]["kernel"] * 0.5, rtol=1e-6)  # sqrt(5 / 20)
  unmeasured, state = tx.update(grads, tx.init(params), params)  # no max_logits: nothing rescaled
  for a, b in zip(jax.tree.leaves(unmeasured), jax.tree.leaves(reference_updates)):
    np.testing.assert_array_equal(a, b)
  assert float(acclip_optax.clip_stats(state)["max_attention_logit"]) == -np.inf


@pytest.mark.parametrize("make, kwargs, message", [
    (lambda: qk_clip(0.0, attention={"a": (("q",), ("k",))}), {}, "threshold=0.0"),
    (lambda: qk_clip(1.0, attention={"a": (("q",), ("k",))}, balance=1.5), {}, "balance=1.5"),
    (lambda: qk_clip(1.0, attention=[("q", "k")]), {}, r"attention=\[\('q', 'k'\)\] must map"),
    (lambda: qk_clip(1.0, attention={"a": ("q",)}), {}, "must be a \\(query_path, key_path\\) pair"),
    (lambda: qk_clip(1.0, attention={"a": (("nope",), ("k",))}), {"a": jnp.ones(2)}, "no module with a 'kernel' at \\('nope',\\)"),
    (lambda: qk_clip(1.0, attention={"a": (("q",), ("k",))}), {"b": jnp.ones(2)}, "max_logits has the names \\['b'\\]"),
    (lambda: qk_clip(1.0, attention={"a": (("q",), ("k",))}), {"a": jnp.ones(5)}, "has 2 heads, but max_logits gives 5"),
])
def test_bad_settings_and_logits_are_named(make, kwargs, message):
  params = {"q": {"kernel": jnp.ones((3, 2, 4))}, "k": {"kernel": jnp.ones((3, 2, 4))}}
  with pytest.raises(ValueError, match=message):
    tx = make()
    tx.update(jax.tree.map(jnp.zeros_like, params), tx.init(params), params, max_logits=kwargs)
