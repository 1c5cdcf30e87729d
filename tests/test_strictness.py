"""Bad input is refused with an error that names it; complex updates follow the modulus-and-phase rule."""
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import acclip_optax
from acclip_optax import (
    acclip, acclip_ports, cclip, clip_by_coordinate, clip_by_scheduled_global_norm, gclip, scale_by_acclip,
    scale_by_acclip_ports)


# ---- hyperparameters, at construction -------------------------------------------------------------

@pytest.mark.parametrize("make, error, message", [
    (lambda: acclip(0.1, mu_dtype=jnp.int32), TypeError, "mu_dtype has dtype int32"),
    (lambda: scale_by_acclip_ports(mu_dtype=jnp.uint8), TypeError, "mu_dtype has dtype uint8"),
    (lambda: acclip(0.1, weight_decay=float("nan")), ValueError, "weight_decay=nan"),
    (lambda: acclip_ports(0.1, weight_decay=-1.0), ValueError, "weight_decay=-1.0"),
    (lambda: gclip(0.1, 1.0, momentum=1.0), ValueError, "momentum=1.0"),
    (lambda: cclip(0.1, 1.0, momentum=-0.5), ValueError, "momentum=-0.5"),
    (lambda: scale_by_acclip(b1="0.9"), TypeError, "b1='0.9' must be a real number"),
    (lambda: scale_by_acclip(b1=None), TypeError, "b1=None must be a real number"),
    (lambda: scale_by_acclip_ports(b2=True), TypeError, "b2=True must be a real number"),
    (lambda: scale_by_acclip(eps=1j), TypeError, "eps=1j must be a real number"),
    (lambda: scale_by_acclip(b1=float("nan")), ValueError, "b1=nan must lie in"),
])
def test_bad_hyperparameters_are_refused_at_construction(make, error, message):
  with pytest.raises(error, match=message.replace("(", r"\(").replace(".", r"\.")):
    make()


# ---- dtypes and trees, at init and update ---------------------------------------------------------

def test_threshold_pytree_of_another_structure_names_both():
  tx = clip_by_coordinate({"a": 1.0, "b": 2.0})
  with pytest.raises(ValueError, match=r"threshold has the tree structure .*'a'.*'b'.* but the updates "
                                       r"have .*'w'"):
    tx.update({"w": jnp.ones(3)}, tx.init({"w": jnp.ones(3)}))


@pytest.mark.parametrize("threshold_shape", [(3, 1), (2,)])
def test_threshold_must_broadcast_to_its_leaf_without_changing_its_shape(threshold_shape):
  tx = clip_by_coordinate({"w": jnp.ones(threshold_shape)})
  with pytest.raises(ValueError, match=rf"threshold\['w'\] has shape \({threshold_shape[0]},"):
    tx.update({"w": jnp.ones(3)}, tx.init({"w": jnp.ones(3)}))


def test_threshold_that_broadcasts_keeps_the_leaf_shape():
  tx = clip_by_coordinate({"w": jnp.array([[0.5], [2.0]])})  # one threshold per row
  updates, _ = tx.update({"w": jnp.full((2, 3), 1.5)}, tx.init({"w": jnp.ones((2, 3))}))
  np.testing.assert_array_equal(updates["w"], [[0.5] * 3, [1.5] * 3])


def test_ports_rule_with_eps_zero_gives_zero_where_the_gradient_was_always_zero():
  grads = jnp.array([0.0, 1.0, -2.0])
  outputs = {}
  for eps in (0.0, 1e-30):
    tx = scale_by_acclip_ports(eps=eps)
    state = tx.init(jnp.zeros(3))
    for _ in range(3):
      outputs[eps], state = tx.update(grads, state)
  assert outputs[0.0][0] == 0.0  # an unused embedding row stays still (it was 0/0 = NaN)
  np.testing.assert_allclose(outputs[0.0][1:], outputs[1e-30][1:], rtol=1e-6)  # elsewhere eps = 0 is eps = 0


# ---- complex updates: clip the modulus, keep the phase ---------------------------------------------

def complex_grads(seed, num_steps=30, size=7):
  rng = np.random.default_rng(seed)
  spikes = np.where(rng.random((num_steps, size)) < 0.1, 100.0, 1.0)
  return [spikes[k] * (rng.standard_cauchy(size) + 1j * rng.standard_normal(size))
          for k in range(num_steps)]


def acclip_complex_reference(grads, b1, b2, alpha, eps):
  """The paper's rule on complex numbers: m complex, t from |g|, the clip caps |m| (float64)."""
  m, t, directions = 0j, 0.0, []
  for g in grads:
    m = b1 * m + (1 - b1) * g
    t = b2 * t + (1 - b2) * np.abs(g) ** alpha
    tau = t ** (1 / alpha)
    directions.append(np.minimum(tau / (np.abs(m) + eps), 1.0) * m)
  return directions


def ports_complex_reference(grads, b1, b2, eps):
  """The ports' rule (bias-corrected, alpha = 1) with v the EMA of |g|^2 (float64)."""
  m, t, v, directions = 0j, 0.0, 0.0, []
  for k, g in enumerate(grads, start=1):
    m = b1 * m + (1 - b1) * g
    t = b2 * t + (1 - b2) * np.abs(g)
    v = b2 * v + (1 - b2) * np.abs(g) ** 2
    clipped = np.minimum(t / (np.abs(m) + eps), 1.0) * m
    directions.append(clipped / (1 - b1 ** k) / (np.sqrt(b2 * v / (1 - b2 ** k)) + eps))
  return directions


@pytest.mark.parametrize("make, reference", [
    (lambda: scale_by_acclip(0.9, 0.99, 1.0, 1e-5),
     lambda g: acclip_complex_reference(g, 0.9, 0.99, 1.0, 1e-5)),
    (lambda: scale_by_acclip(0.8, 0.95, 1.5, 1e-3),
     lambda g: acclip_complex_reference(g, 0.8, 0.95, 1.5, 1e-3)),
    (lambda: scale_by_acclip_ports(), lambda g: ports_complex_reference(g, 0.9, 0.99, 1e-5)),
    (lambda: clip_by_coordinate(2.0),
     lambda g: [x * np.minimum(1.0, 2.0 / np.abs(x)) for x in g]),
    (lambda: clip_by_scheduled_global_norm(5.0),
     lambda g: [x * min(1.0, 5.0 / np.linalg.norm(x)) for x in g]),
], ids=["acclip_alpha1", "acclip_alpha1.5", "ports", "cclip", "gclip"])
def test_complex_updates_match_a_complex_reference(make, reference):
  grads = complex_grads(seed=3)
  tx = make()
  state = tx.init(jnp.zeros(7, jnp.complex64))
  update = jax.jit(tx.update)
  for step, (g, want) in enumerate(zip(grads, reference(grads)), start=1):
    out, state = update(jnp.asarray(g, jnp.complex64), state)
    assert out.dtype == jnp.complex64
    np.testing.assert_allclose(np.asarray(out), want, rtol=2e-5, atol=1e-6 * np.max(np.abs(want)),
                               err_msg=f"step {step}")


def test_complex_clip_keeps_the_phase():
  g = jnp.array([30.0 + 40.0j, 0.3 - 0.4j])
  tx = clip_by_coordinate(1.0)
  out, state = tx.update(g, tx.init(g))
  np.testing.assert_allclose(np.asarray(out), [0.6 + 0.8j, 0.3 - 0.4j], rtol=1e-6)
  assert float(state.clip_fraction) == 0.5


def test_complex_acclip_state_keeps_its_threshold_ema_real():
  state = scale_by_acclip().init({"w": jnp.zeros(3, jnp.complex64)})
  assert state.mu["w"].dtype == jnp.complex64 and state.nu["w"].dtype == jnp.float32
  with pytest.raises(TypeError, match="cannot hold the complex momentum"):
    scale_by_acclip(mu_dtype=jnp.bfloat16).init({"w": jnp.zeros(3, jnp.complex64)})


def test_complex_ports_rule_converges_on_a_complex_quadratic():
  target = jnp.array([1.0 + 2.0j, -3.0 + 0.5j])
  loss = lambda x: jnp.sum(jnp.abs(x - target) ** 2)
  tx = optax.chain(scale_by_acclip_ports(), optax.scale(-0.05))
  params = jnp.zeros(2, jnp.complex64)
  state = tx.init(params)
  for _ in range(400):
    grads = jnp.conj(jax.grad(loss, holomorphic=False)(params))  # the descent direction, as optax's
    updates, state = tx.update(grads, state)
    params = optax.apply_updates(params, updates)
  assert float(loss(params)) < 1e-2


def test_clip_stats_of_complex_acclip_counts_by_modulus():
  tx = scale_by_acclip(b1=0.0, b2=0.0, eps=0.0)  # m = g, tau = |g|: nothing clipped
  _, state = tx.update(jnp.array([3.0 + 4.0j, -1.0j]), tx.init(jnp.zeros(2, jnp.complex64)))
  assert float(acclip_optax.clip_stats(state)["clip_fraction"]) == 0.0


def test_bfloat16_hyperparameters_from_inject_hyperparams_are_accepted():
  """inject_hyperparams gives every numeric default the params' dtype, bfloat16 included."""
  tx = optax.inject_hyperparams(acclip)(learning_rate=0.1)
  params = jnp.ones(3, jnp.bfloat16)
  updates, _ = tx.update(jnp.ones(3, jnp.bfloat16), tx.init(params), params)
  assert updates.dtype == jnp.bfloat16
