"""Specification of the transformations: float64 NumPy references, invariants, edge cases, composition."""
import functools

import chex
import jax
import jax.numpy as jnp
import ml_dtypes
import numpy as np
import optax
import pytest

import acclip_optax
from acclip_optax import (
    clip_by_coordinate, clip_by_scheduled_global_norm, clip_stats, scale_by_acclip, scale_by_acclip_ports)

NUM_STEPS = 20
SHAPES = {"kernel": (3, 4), "bias": (5,), "scalar": (), "conv": (2, 2, 3)}
BF16_LEAF = "conv"


def cauchy_grads(seed, num_steps=NUM_STEPS, shapes=SHAPES, dtypes=None, scale=1.0):
  """A list of gradient pytrees with standard Cauchy coordinates (heavy-tailed: no finite mean)."""
  rng = np.random.default_rng(seed)
  dtypes = dtypes or {}
  return [{name: jnp.asarray(scale * rng.standard_cauchy(shape), dtypes.get(name, jnp.float32))
           for name, shape in shapes.items()} for _ in range(num_steps)]


def as_f64(tree):
  return jax.tree.map(lambda x: np.asarray(x, np.float64), tree)


def round_like(value, dtype):
  """value rounded to `dtype` (bf16 via ml_dtypes) and back to float64, as the JAX state stores it."""
  return np.asarray(np.asarray(value, dtype=dtype), np.float64)


# ---- float64 NumPy references, written from the formulas ------------------------------------------

def acclip_reference(grads, b1, b2, alpha, eps, bias_correction, state_dtype=np.float32):
  """Algorithm 1 per leaf: returns the list of directions; state rounded to `state_dtype` per step."""
  m = t = 0.0
  directions = []
  for k, g in enumerate(grads, start=1):
    m_new = b1 * m + (1 - b1) * g
    t_new = b2 * t + (1 - b2) * np.abs(g) ** alpha
    m_hat = m_new / (1 - b1 ** k) if bias_correction else m_new
    t_hat = t_new / (1 - b2 ** k) if bias_correction else t_new
    tau = t_hat ** (1 / alpha)
    with np.errstate(divide="ignore", invalid="ignore"):
      factor = np.where(tau < np.abs(m_hat) + eps, tau / (np.abs(m_hat) + eps), 1.0)
    directions.append(factor * m_hat)
    m, t = round_like(m_new, state_dtype), round_like(t_new, state_dtype)
  return directions


def acclip_ports_reference(grads, b1, b2, alpha, eps, bias_correction, state_dtype=np.float32):
  """rivercold mod=1 / MLPerf: clip with raw m, t; divide by sqrt(b2 v / c2) + eps; step / c1."""
  m = t = v = 0.0
  directions = []
  for k, g in enumerate(grads, start=1):
    m_new = b1 * m + (1 - b1) * g
    t_new = b2 * t + (1 - b2) * np.abs(g) ** alpha
    v_new = b2 * v + (1 - b2) * g ** 2
    c1, c2 = (1 - b1 ** k, 1 - b2 ** k) if bias_correction else (1.0, 1.0)
    factor = np.minimum(t_new ** (1 / alpha) / (np.abs(m_new) + eps), 1.0)
    directions.append(factor * m_new / c1 / (np.sqrt(b2 * v_new / c2) + eps))
    m, t, v = (round_like(x, state_dtype) for x in (m_new, t_new, v_new))
  return directions


def run_transform(tx, grads, params=None):
  """The updates of `tx` over the gradient sequence (one jit-compiled update) and the final state."""
  params = grads[0] if params is None else params
  state = tx.init(params)
  update = jax.jit(tx.update)
  outputs = []
  for g in grads:
    u, state = update(g, state, params)
    outputs.append(u)
  return outputs, state


def per_leaf(grads):
  return {name: [as_f64(g[name]) for g in grads] for name in grads[0]}


def assert_matches_reference(outputs, expected_by_leaf, rtol=2e-5, bf16_rtol=3e-2):
  for name, expected in expected_by_leaf.items():
    bf16 = outputs[0][name].dtype == jnp.bfloat16
    tolerance = bf16_rtol if bf16 else rtol
    # Momentum can cancel to near zero; float32 rounding is relative to the leaf's typical size there.
    leaf_scale = max(np.max(np.abs(want)) for want in expected)
    for step, (out, want) in enumerate(zip(outputs, expected)):
      np.testing.assert_allclose(as_f64(out[name]), want, rtol=tolerance, atol=tolerance * 1e-2 * leaf_scale,
                                 err_msg=f"leaf {name}, step {step + 1}")


# ---- ACClip ---------------------------------------------------------------------------------------

@pytest.mark.parametrize("alpha", [1.0, 1.5, 2.0])
@pytest.mark.parametrize("bias_correction", [False, True])
def test_acclip_matches_float64_reference(alpha, bias_correction):
  grads = cauchy_grads(seed=int(alpha * 10) + bias_correction, dtypes={BF16_LEAF: jnp.bfloat16})
  b1, b2, eps = 0.8, 0.95, 1e-3
  outputs, state = run_transform(
      scale_by_acclip(b1, b2, alpha, eps, bias_correction=bias_correction), grads)
  expected = {}
  for name, leaf_grads in per_leaf(grads).items():
    state_dtype = ml_dtypes.bfloat16 if name == BF16_LEAF else np.float32
    expected[name] = acclip_reference(leaf_grads, b1, b2, alpha, eps, bias_correction, state_dtype)
  assert_matches_reference(outputs, expected)
  assert int(state.count) == NUM_STEPS
  assert outputs[0][BF16_LEAF].dtype == jnp.bfloat16 and state.mu[BF16_LEAF].dtype == jnp.bfloat16


@pytest.mark.parametrize("bias_correction", [False, True])
def test_acclip_ports_matches_float64_reference(bias_correction):
  grads = cauchy_grads(seed=7 + bias_correction)
  b1, b2, alpha, eps = 0.9, 0.99, 1.0, 1e-5
  outputs, _ = run_transform(
      scale_by_acclip_ports(b1, b2, alpha, eps, bias_correction=bias_correction), grads)
  expected = {name: acclip_ports_reference(g, b1, b2, alpha, eps, bias_correction)
              for name, g in per_leaf(grads).items()}
  assert_matches_reference(outputs, expected)


@pytest.mark.parametrize("make, reference", [
    (lambda: scale_by_acclip(0.8, 0.95, 1.0, 1e-3, bias_correction=True),
     functools.partial(acclip_reference, b1=0.8, b2=0.95, alpha=1.0, eps=1e-3, bias_correction=True)),
    (lambda: acclip_optax.acclip(-1.0, 0.8, 0.95, 1.5, 1e-3, bias_correction=True),
     functools.partial(acclip_reference, b1=0.8, b2=0.95, alpha=1.5, eps=1e-3, bias_correction=True)),
    (lambda: scale_by_acclip_ports(0.9, 0.99, 1.0, 1e-5, bias_correction=True),
     functools.partial(acclip_ports_reference, b1=0.9, b2=0.99, alpha=1.0, eps=1e-5, bias_correction=True)),
    (lambda: scale_by_acclip_ports(0.9, 0.99, 2.0, 1e-5, bias_correction=False),
     functools.partial(acclip_ports_reference, b1=0.9, b2=0.99, alpha=2.0, eps=1e-5, bias_correction=False)),
    (lambda: acclip_optax.acclip_ports(-1.0),
     functools.partial(acclip_ports_reference, b1=0.9, b2=0.99, alpha=1.0, eps=1e-5, bias_correction=True)),
], ids=["scale_by_acclip", "acclip", "scale_by_acclip_ports", "ports_no_correction", "acclip_ports"])
def test_float64_params_match_the_float64_reference_exactly(x64, make, reference):
  del x64
  grads = [{name: jnp.asarray(g, jnp.float64) for name, g in as_f64(step).items()}
           for step in cauchy_grads(seed=11)]
  outputs, state = run_transform(make(), grads)
  assert all(leaf.dtype == jnp.float64 for leaf in jax.tree.leaves(outputs))
  for name, leaf_grads in per_leaf(grads).items():
    expected = reference(leaf_grads, state_dtype=np.float64)
    for step, (out, want) in enumerate(zip(outputs, expected)):
      np.testing.assert_allclose(np.asarray(out[name]), want, rtol=1e-12, atol=1e-300,
                                 err_msg=f"leaf {name}, step {step + 1}")
  del state


def test_acclip_ports_general_alpha_matches_reference():
  grads = cauchy_grads(seed=9)
  outputs, _ = run_transform(scale_by_acclip_ports(alpha=1.5), grads)
  expected = {name: acclip_ports_reference(g, 0.9, 0.99, 1.5, 1e-5, True)
              for name, g in per_leaf(grads).items()}
  assert_matches_reference(outputs, expected)


def test_acclip_clips_the_momentum_not_the_gradient():
  # One spike after small gradients: a gradient clip would bound the spike by tau; the paper's rule
  # bounds the momentum's magnitude instead (with b1 = 0.5 the momentum is half the spike).
  grads = [jnp.array([1.0])] * 5 + [jnp.array([100.0])]
  outputs, state = run_transform(scale_by_acclip(b1=0.5, b2=0.5, eps=0.0), grads)
  m = 0.5 * 1.0 + 0.5 * 100.0
  tau = float(state.nu[0])
  np.testing.assert_allclose(float(outputs[-1][0]), min(tau, m), rtol=1e-6)
  assert tau < m  # it did clip


# ---- invariants -----------------------------------------------------------------------------------

@pytest.mark.parametrize("alpha", [1.0, 1.5, 2.0])
def test_acclip_invariants(alpha):
  eps = 1e-2
  grads = cauchy_grads(seed=11, shapes={"x": (400,)})
  tx = scale_by_acclip(alpha=alpha, eps=eps)
  state = tx.init(grads[0])
  update = jax.jit(tx.update)
  for g in grads:
    u, state = update(g, state)
    m = as_f64(state.mu["x"])
    tau = as_f64(state.nu["x"]) ** (1 / alpha)
    direction = as_f64(u["x"])
    assert np.all(np.abs(direction) <= tau * (1 + 1e-5) + 1e-12)                 # |ĝ| <= tau
    assert np.all(np.abs(direction) <= np.abs(m) * (1 + 1e-6))                    # never grows
    assert np.all(np.sign(direction) * np.sign(m) >= 0)                            # keeps the sign
    unclipped = np.abs(m) + eps <= tau
    np.testing.assert_allclose(direction[unclipped], m[unclipped], rtol=1e-6)     # ĝ = m there
  assert 0 < unclipped.sum() < unclipped.size  # both branches were exercised


@pytest.mark.parametrize("alpha", [1.0, 1.5, 2.0])
def test_acclip_is_positively_homogeneous_without_eps(alpha):
  grads = cauchy_grads(seed=12)
  scaled = [jax.tree.map(lambda x: 3.7 * x, g) for g in grads]
  tx = scale_by_acclip(alpha=alpha, eps=0.0, bias_correction=True)
  outputs, _ = run_transform(tx, grads)
  scaled_outputs, _ = run_transform(tx, scaled)
  for out, scaled_out in zip(outputs, scaled_outputs):
    chex.assert_trees_all_close(jax.tree.map(lambda x: 3.7 * x, out), scaled_out, rtol=1e-4, atol=1e-6)


def test_cclip_invariants_and_reference():
  grads = cauchy_grads(seed=13)
  outputs, state = run_transform(clip_by_coordinate(1.5), grads)
  for g, u in zip(grads, outputs):
    for name in g:
      np.testing.assert_array_equal(np.asarray(u[name]), np.clip(np.asarray(g[name]), -1.5, 1.5))
      assert np.all(np.abs(np.asarray(u[name])) <= np.abs(np.asarray(g[name])))
  last = np.concatenate([np.ravel(x) for x in jax.tree.leaves(grads[-1])])
  np.testing.assert_allclose(float(state.clip_fraction), np.mean(np.abs(last) > 1.5), rtol=1e-6)


def test_cclip_per_leaf_and_per_coordinate_thresholds():
  grads = cauchy_grads(seed=14, num_steps=3)
  rng = np.random.default_rng(0)
  thresholds = {"kernel": 0.5, "bias": jnp.asarray(rng.uniform(0.1, 2.0, 5), jnp.float32),
                "scalar": 2.0, "conv": jnp.full((2, 2, 3), 0.25)}
  outputs, _ = run_transform(clip_by_coordinate(thresholds), grads)
  for g, u in zip(grads, outputs):
    for name, tau in thresholds.items():
      tau = np.asarray(tau)
      np.testing.assert_allclose(np.asarray(u[name]), np.clip(np.asarray(g[name]), -tau, tau))


def test_cclip_schedule_is_evaluated_at_the_step_count():
  schedule = acclip_optax.clip_threshold_schedule(0.5, alpha=1.5)
  grads = [jnp.full((3,), 100.0)] * 4
  outputs, _ = run_transform(clip_by_coordinate(schedule), grads)
  for k, u in enumerate(outputs):
    np.testing.assert_allclose(np.asarray(u), 0.5 * (k + 1) ** (1 / 1.5), rtol=1e-6)


def test_gclip_reference_and_norm_in_state():
  grads = cauchy_grads(seed=15)
  outputs, state = run_transform(clip_by_scheduled_global_norm(2.0), grads)
  for g, u in zip(grads, outputs):
    norm = np.sqrt(sum(np.sum(as_f64(x) ** 2) for x in jax.tree.leaves(g)))
    scale = min(1.0, 2.0 / norm)
    chex.assert_trees_all_close(u, jax.tree.map(lambda x: x * scale, g), rtol=1e-5)
    assert optax.tree.norm(u) <= min(norm, 2.0) * (1 + 1e-5)
  np.testing.assert_allclose(float(state.global_norm), norm, rtol=1e-5)
  assert int(state.count) == NUM_STEPS


def test_gclip_schedule():
  schedule = acclip_optax.clip_threshold_schedule(1.0, alpha=2.0)
  grads = [jnp.array([30.0, 40.0])] * 3
  outputs, _ = run_transform(clip_by_scheduled_global_norm(schedule), grads)
  for k, u in enumerate(outputs):
    np.testing.assert_allclose(float(jnp.linalg.norm(u)), np.sqrt(k + 1), rtol=1e-6)


@pytest.mark.parametrize("tx", [clip_by_coordinate(float("inf")), clip_by_scheduled_global_norm(float("inf"))],
                         ids=["cclip", "gclip"])
def test_infinite_threshold_is_identity(tx):
  grads = cauchy_grads(seed=16, num_steps=3, scale=1e6)
  outputs, _ = run_transform(tx, grads)
  for g, u in zip(grads, outputs):
    chex.assert_trees_all_equal(u, g)


# ---- edge cases -----------------------------------------------------------------------------------

def test_mask_nodes_pass_through():
  params = {"w": jnp.ones(3), "b": jnp.ones(2)}
  tx = optax.masked(scale_by_acclip(), {"w": True, "b": False})
  updates, state = tx.update({"w": jnp.ones(3), "b": jnp.full(2, 7.0)}, tx.init(params), params)
  np.testing.assert_array_equal(np.asarray(updates["b"]), 7.0)  # the masked-out leaf is untouched
  assert isinstance(state.inner_state.mu["b"], optax.MaskedNode)
  assert set(clip_stats(state)) == {"clip_fraction"}


# ---- clip statistics ------------------------------------------------------------------------------

@pytest.mark.parametrize("alpha, bias_correction", [(1.0, True), (1.5, False), (2.0, False)])
def test_acclip_clip_fraction_matches_reference(alpha, bias_correction):
  eps = 1e-3
  grads = cauchy_grads(seed=21, shapes={"x": (300,), "y": (5, 7)})
  # A last gradient 30x larger: the momentum moves 10% of the way, the clip threshold about 1%.
  grads[-1] = jax.tree.map(lambda g: 30 * g, grads[-1])
  _, state = run_transform(scale_by_acclip(alpha=alpha, eps=eps, bias_correction=bias_correction),
                           grads)
  k = NUM_STEPS
  m = np.concatenate([np.ravel(as_f64(x)) for x in jax.tree.leaves(state.mu)])
  t = np.concatenate([np.ravel(as_f64(x)) for x in jax.tree.leaves(state.nu)])
  if bias_correction:
    m, t = m / (1 - 0.9 ** k), t / (1 - 0.99 ** k)
  expected = np.mean(t ** (1 / alpha) < np.abs(m) + eps)
  assert 0.05 < expected < 0.95
  np.testing.assert_allclose(float(acclip_optax.clip_stats(state)["clip_fraction"]), expected,
                             atol=1.5 / m.size)


def test_clip_stats_sees_through_wrappers():
  params = {"w": jnp.ones((4, 3)), "b": jnp.ones(3)}
  grads = cauchy_grads(seed=22, num_steps=1, shapes={"w": (4, 3), "b": (3,)})[0]
  inner = optax.chain(clip_by_scheduled_global_norm(1.0), acclip_optax.acclip(0.1))
  tx = optax.MultiSteps(optax.masked(
      optax.inject_hyperparams(lambda learning_rate: optax.chain(
          inner, optax.scale_by_learning_rate(learning_rate)))(learning_rate=0.1),
      {"w": True, "b": True}), every_k_schedule=1)
  state = tx.init(params)
  _, state = jax.jit(tx.update)(grads, state, params)
  stats = jax.jit(clip_stats)(state)
  assert set(stats) == {"clip_fraction", "global_norm"}
  np.testing.assert_allclose(float(stats["global_norm"]), float(optax.tree.norm(grads)), rtol=1e-6)
  assert float(stats["clip_fraction"]) == 1.0  # step 1 without bias correction: tau = 0.01 |g| < |m|
  assert clip_stats(optax.adam(1e-3).init(params)) == {}
  two = optax.chain(clip_by_coordinate(1.0), clip_by_coordinate(2.0))
  assert set(clip_stats(two.init(params))) == {"clip_fraction", "clip_fraction/1"}


# ---- composition ----------------------------------------------------------------------------------

def test_jit_compiles_once_and_inject_hyperparams_matches_static():
  traces = []

  @functools.partial(jax.jit, donate_argnums=(1,))
  def step(grads, state, params):
    traces.append(1)
    return tx_injected.update(grads, state, params)

  hyper = dict(b1=0.8, b2=0.95, alpha=1.5, eps=1e-3, weight_decay=0.1)
  tx_injected = optax.inject_hyperparams(acclip_optax.acclip)(learning_rate=0.1, **hyper)
  tx_static = acclip_optax.acclip(0.1, **hyper)
  grads = cauchy_grads(seed=31, num_steps=5)
  params = jax.tree.map(jnp.ones_like, grads[0])
  state, static_state = tx_injected.init(params), tx_static.init(params)
  for g in grads:
    updates, state = step(g, state, params)
    static_updates, static_state = tx_static.update(g, static_state, params)
    chex.assert_trees_all_close(updates, static_updates, rtol=1e-5, atol=1e-7)
  state.hyperparams["learning_rate"] = jnp.asarray(0.5, jnp.float32)  # a new value, same type: no retrace
  step(grads[0], state, params)
  assert len(traces) == 1


def test_inject_hyperparams_traced_b1_changes_the_update():
  tx = optax.inject_hyperparams(scale_by_acclip)(b1=0.9)
  grads = cauchy_grads(seed=32, num_steps=3)
  state = tx.init(grads[0])
  for g in grads[:2]:
    _, state = tx.update(g, state)
  state.hyperparams["b1"] = jnp.asarray(0.0)
  _, state = tx.update(grads[2], state)
  chex.assert_trees_all_close(state.inner_state.mu, grads[2])  # b1 = 0: the momentum is g itself


def test_multisteps_averages_gradients():
  grads = cauchy_grads(seed=33, num_steps=4)
  tx = optax.MultiSteps(scale_by_acclip(), every_k_schedule=2)
  state = tx.init(grads[0])
  update = jax.jit(tx.update)
  outputs = []
  for g in grads:
    u, state = update(g, state)
    outputs.append(u)
  mean_grads = [jax.tree.map(lambda a, b: (a + b) / 2, grads[0], grads[1]),
                jax.tree.map(lambda a, b: (a + b) / 2, grads[2], grads[3])]
  expected, _ = run_transform(scale_by_acclip(), mean_grads)
  chex.assert_trees_all_equal(outputs[0], jax.tree.map(jnp.zeros_like, grads[0]))
  chex.assert_trees_all_close(outputs[1], expected[0], rtol=1e-5)
  chex.assert_trees_all_close(outputs[3], expected[1], rtol=1e-5)


@pytest.mark.parametrize("mu_dtype", [None, jnp.bfloat16])
def test_bf16_params_keep_bf16_and_mu_dtype(mu_dtype):
  params = {"w": jnp.ones((4, 4), jnp.bfloat16), "b": jnp.ones(4, jnp.float32)}
  opt = acclip_optax.acclip(0.1, mu_dtype=mu_dtype, weight_decay=0.01)
  state = opt.init(params)
  grads = jax.tree.map(lambda p: jnp.full(p.shape, 0.5, p.dtype), params)
  updates, state = jax.jit(opt.update)(grads, state, params)
  new_params = optax.apply_updates(params, updates)
  assert updates["w"].dtype == new_params["w"].dtype == jnp.bfloat16
  assert new_params["b"].dtype == jnp.float32
  acclip_state = state[0]
  expected_mu = mu_dtype or jnp.float32
  assert acclip_state.mu["b"].dtype == expected_mu
  assert acclip_state.mu["w"].dtype == (mu_dtype or jnp.bfloat16)


def test_pmap_with_pmean_matches_single_device():
  num_devices = 4
  assert jax.local_device_count() >= num_devices, "tests/conftest.py sets 4 fake CPU devices"
  tx = acclip_optax.acclip(0.1, alpha=1.5, weight_decay=0.01, bias_correction=True)
  per_device = cauchy_grads(seed=41, num_steps=3 * num_devices, shapes={"w": (3, 2), "b": (2,)})
  params = {"w": jnp.ones((3, 2)), "b": jnp.zeros(2)}

  def step(params, state, grads):
    grads = jax.lax.pmean(grads, "devices")
    updates, state = tx.update(grads, state, params)
    return optax.apply_updates(params, updates), state

  p_step = jax.pmap(step, axis_name="devices")
  single_step = jax.jit(_single_device(tx))
  replicate = lambda tree: jax.tree.map(lambda x: jnp.stack([x] * num_devices), tree)
  rep_params, rep_state = replicate(params), replicate(tx.init(params))
  single_params, single_state = params, tx.init(params)
  for k in range(3):
    shard = per_device[k * num_devices:(k + 1) * num_devices]
    rep_params, rep_state = p_step(rep_params, rep_state, jax.tree.map(lambda *x: jnp.stack(x), *shard))
    mean = jax.tree.map(lambda *x: sum(x) / num_devices, *shard)
    single_params, single_state = single_step(single_params, single_state, mean)
  for replica in range(num_devices):
    chex.assert_trees_all_close(jax.tree.map(lambda x: x[replica], rep_params), single_params,
                                rtol=1e-5, atol=1e-6)
    chex.assert_trees_all_equal(jax.tree.map(lambda x: x[replica], rep_state),
                                jax.tree.map(lambda x: x[0], rep_state))


def _single_device(tx):
  def step(params, state, grads):
    updates, state = tx.update(grads, state, params)
    return optax.apply_updates(params, updates), state
  return step


# ---- validation -----------------------------------------------------------------------------------

@pytest.mark.parametrize("make, message", [
    (lambda: scale_by_acclip(b1=1.0), "b1=1.0"),
    (lambda: scale_by_acclip(b2=-0.1), "b2=-0.1"),
    (lambda: scale_by_acclip(alpha=0.0), "alpha=0.0"),
    (lambda: scale_by_acclip(eps=-1e-3), "eps=-0.001"),
    (lambda: scale_by_acclip_ports(b1=1.5), "b1=1.5"),
    (lambda: acclip_optax.acclip(0.1, alpha=-1.0), "alpha=-1.0"),
    (lambda: clip_by_coordinate(0.0), "threshold=0.0"),
    (lambda: clip_by_coordinate({"w": -1.0}), "threshold="),
    (lambda: clip_by_scheduled_global_norm(-2.0), "max_norm=-2.0"),
    (lambda: acclip_optax.gclip(0.1, 0.0), "max_norm=0.0"),
    (lambda: acclip_optax.clip_threshold_schedule(0.0, 1.5), "bound=0.0"),
    (lambda: acclip_optax.strongly_convex_lr_schedule(0.0), "mu=0.0"),
])
def test_bad_hyperparameters_raise_named_value_error(make, message):
  with pytest.raises(ValueError, match=message.replace(".", r"\.").replace("-", r"\-")):
    make()


def test_traced_hyperparameters_are_not_validated():
  @jax.jit
  def build_and_run(b1):
    tx = scale_by_acclip(b1=b1)
    return tx.update(jnp.ones(2), tx.init(jnp.ones(2)))[0]
  chex.assert_tree_all_finite(build_and_run(jnp.asarray(0.5)))


def test_the_names_that_shadowed_optax_are_deprecated_aliases():
  import warnings  # pylint: disable=g-import-not-at-top
  import acclip_optax  # pylint: disable=g-import-not-at-top
  for old, new in (("clip_by_global_norm", "clip_by_scheduled_global_norm"),
                   ("ClipByGlobalNormState", "ClipByScheduledGlobalNormState")):
    assert old not in acclip_optax.__all__ and new in acclip_optax.__all__
    with warnings.catch_warnings(record=True) as caught:
      warnings.simplefilter("always")
      assert getattr(acclip_optax, old) is getattr(acclip_optax, new)
    assert caught and issubclass(caught[0].category, DeprecationWarning) and new in str(caught[0].message)
  with pytest.raises(AttributeError, match="no attribute 'clip_by_norm'"):
    acclip_optax.clip_by_norm  # pylint: disable=pointless-statement
