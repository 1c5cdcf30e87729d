"""ZClip, AdaGC, AutoClip, SPAM, Stable-SPAM and skip-step: float64 NumPy references written from the
formulas, invariants, and (marker `oracle`, run with `pytest -m oracle` when torch, zclip and
pytorch-optimizer are installed) the reference implementations themselves. The checks every public
transformation gets (composition, donation, inject_hyperparams, ...) are in `test_shared_checks.py`."""
import math
import warnings

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import acclip_optax
from acclip_optax import (
    adagc, autoclip, scale_by_spam, scale_by_stable_spam, skip_step_on_spikes, spam, stable_spam, zclip)

SHAPES = {"kernel": (4, 3), "bias": (5,)}
NUM_STEPS = 60


def spiky_grads(seed, num_steps=NUM_STEPS, spike_steps=(30, 41, 47), spike=100.0):
  """Gaussian gradients (float64 NumPy) with 100x spikes at `spike_steps` (0-based), one leaf at a time."""
  rng = np.random.default_rng(seed)
  grads = []
  for k in range(num_steps):
    step = {name: rng.normal(size=shape) for name, shape in SHAPES.items()}
    if k in spike_steps:
      name = sorted(SHAPES)[k % 2]
      step[name] = step[name] * spike
    grads.append(step)
  return grads


def global_norm(tree):
  return math.sqrt(sum(float(np.sum(np.square(x))) for x in tree.values()))


def run(tx, grads, params=None, apply_updates=False):
  """(per step: the updates, or with `apply_updates` the parameters after the step; the final state).

  Without `apply_updates` the params stay fixed (zeros by default), which the clipping rules ignore.
  """
  params = params if params is not None else {k: jnp.zeros_like(jnp.asarray(v)) for k, v in grads[0].items()}
  params = jax.tree.map(jnp.asarray, params)
  state = tx.init(params)
  update = jax.jit(tx.update)
  outputs = []
  for g in grads:
    u, state = update(jax.tree.map(jnp.asarray, g), state, params)
    if apply_updates:
      params = optax.apply_updates(params, u)
    outputs.append(jax.tree.map(np.asarray, params if apply_updates else u))
  return outputs, state


def assert_close(outputs, expected, rtol):
  for step, (got, want) in enumerate(zip(outputs, expected), start=1):
    for name in want:
      np.testing.assert_allclose(got[name], want[name], rtol=rtol, atol=rtol * 1e-6,
                                 err_msg=f"step {step}, leaf {name}")


# ---- float64 references, from the formulas -------------------------------------------------------

def zclip_reference(grads, norm_decay=0.97, z_threshold=2.5, warmup_steps=25, max_norm=None, eps=1e-6):
  buffer, mean, var, outputs = [], None, None, []
  for g in grads:
    n = global_norm(g)
    if mean is None:
      buffer.append(n)
      if len(buffer) == warmup_steps:
        mean = sum(buffer) / len(buffer)
        var = sum((x - mean) ** 2 for x in buffer) / len(buffer)
      scale = min(1.0, max_norm / (n + 1e-6)) if max_norm is not None else 1.0
      outputs.append({k: v * scale for k, v in g.items()})
      continue
    std = math.sqrt(var)
    z = (n - mean) / (std + eps)
    c = mean + z_threshold * std / (z / z_threshold) if z > z_threshold else n
    threshold = min(c, max_norm) if max_norm is not None else c
    scale = threshold / (n + 1e-6) if n > threshold else 1.0
    outputs.append({k: v * scale for k, v in g.items()})
    alpha = norm_decay  # the paper's alpha
    mean = alpha * mean + (1 - alpha) * c
    var = alpha * var + (1 - alpha) * (c - mean) ** 2
  return outputs


def adagc_reference(grads, lambda_abs=1.0, lambda_rel=1.05, norm_decay=0.98, warmup_steps=100, eps=1e-8):
  beta = norm_decay  # the paper's beta
  gamma, outputs = {}, []
  for k, g in enumerate(grads, start=1):
    n = global_norm(g)
    out = {}
    for name, leaf in g.items():
      leaf_norm = float(np.linalg.norm(leaf))
      if name not in gamma or k < warmup_steps:
        clipped = leaf * min(lambda_abs / (n + eps), 1.0)
        clipped_norm = float(np.linalg.norm(clipped))
        gamma[name] = clipped_norm if name not in gamma else min(gamma[name], clipped_norm)
      else:
        clipped = leaf * min(lambda_rel * max(gamma[name], eps) / max(leaf_norm, eps), 1.0)
        gamma[name] = beta * gamma[name] + (1 - beta) * float(np.linalg.norm(clipped))
      out[name] = clipped
    outputs.append(out)
  return outputs


def autoclip_reference(grads, percentile=10.0, history=1000):
  norms, outputs = [], []
  for g in grads:
    n = global_norm(g)
    norms.append(n)
    threshold = float(np.percentile(norms[-history:], percentile))
    scale = min(1.0, threshold / (n + 1e-6))
    outputs.append({k: v * scale for k, v in g.items()})
  return outputs


def spam_reference(grads, b1=0.9, b2=0.999, eps=1e-6, theta=5000.0, reset_interval=500, warmup_steps=50,
                   grad_accu_steps=20):
  m = {name: 0.0 for name in grads[0]}
  v = {name: 0.0 for name in grads[0]}
  outputs = []
  for k, g in enumerate(grads, start=1):
    if k % reset_interval == 0:
      m = {name: 0.0 for name in g}
      v = {name: 0.0 for name in g}
    since = k % reset_interval
    scale = 1.0
    if k >= reset_interval and since < warmup_steps:
      scale = 1.0 - 0.99 * (1 + math.cos(math.pi * (since + 1) / (warmup_steps + 1))) / 2
    out = {}
    for name, leaf in g.items():
      leaf = leaf.copy()
      if theta != 0 and k >= grad_accu_steps and since >= grad_accu_steps:
        spike = leaf ** 2 > theta * v[name]
        leaf[spike] = np.sign(leaf[spike]) * np.sqrt(theta * np.broadcast_to(v[name], leaf.shape)[spike])
      m[name] = b1 * m[name] + (1 - b1) * leaf
      v[name] = b2 * v[name] + (1 - b2) * leaf ** 2
      out[name] = scale * math.sqrt(1 - b2 ** k) / (1 - b1 ** k) * m[name] / (np.sqrt(v[name]) + eps)
    outputs.append(out)
  return outputs


def stable_spam_reference(grads, b1=0.9, b2=0.999, norm_decay=0.7, norm_sq_decay=0.9, max_decay=0.999,
                          reset_interval=1000, eps=1e-8, momentum_decay_steps=None, momentum_decay_floor=0.5):
  gamma1 = b1 if norm_decay is None else norm_decay  # the paper's gamma_1 and gamma_2
  gamma2 = norm_sq_decay
  names = list(grads[0])
  m, v = {n: 0.0 for n in names}, {n: 0.0 for n in names}
  max_ema, norm_ema, norm_sq_ema = {n: 0.0 for n in names}, {n: 0.0 for n in names}, {n: 0.0 for n in names}
  k, outputs = 0, []
  for t, g in enumerate(grads, start=1):
    scale = 1.0
    if momentum_decay_steps is not None:
      period = momentum_decay_steps + 1
      c = lambda j: 1 + math.cos(math.pi * j / period)
      f = momentum_decay_floor
      scale = f + (1 - f) * c(t + 1) / c(1) if t < momentum_decay_steps else f
    beta1, gamma = b1 * scale, gamma1 * scale
    if t % reset_interval == 0:
      m, v, k = {n: 0.0 for n in names}, {n: 0.0 for n in names}, 1
    else:
      k += 1
    out = {}
    for name in names:
      leaf = g[name].copy()
      largest = float(np.max(np.abs(leaf)))
      max_ema[name] = max_decay * max_ema[name] + (1 - max_decay) * largest
      threshold = max_ema[name] / (1 - max_decay ** t)
      spike = np.abs(leaf) > threshold
      leaf[spike] = leaf[spike] / largest * threshold
      norm = float(np.linalg.norm(leaf))
      if norm == 0:
        out[name] = np.zeros_like(leaf)
        continue
      norm_ema[name] = gamma * norm_ema[name] + (1 - gamma) * norm
      norm_sq_ema[name] = gamma2 * norm_sq_ema[name] + (1 - gamma2) * norm ** 2
      leaf = leaf / norm * (norm_ema[name] / (1 - gamma ** t)) / (
          math.sqrt(norm_sq_ema[name] / (1 - gamma2 ** t)) + eps)
      m[name] = beta1 * m[name] + (1 - beta1) * leaf
      v[name] = b2 * v[name] + (1 - b2) * leaf ** 2
      out[name] = (m[name] / (1 - beta1 ** k)) / (np.sqrt(v[name] / (1 - b2 ** k)) + eps)
    outputs.append(out)
  return outputs


def skip_step_reference(grads, losses=None, window=128, sigma=6.0):
  """Which steps skip_step_on_spikes skips: each norm (and loss) against the mean and sample std of the last
  `window` finite ones before it, once there are max(2, window // 2 - 1) of them; a non-finite one always."""
  history, skipped = [], []
  for k, g in enumerate(grads):
    values = [global_norm(g)] + ([] if losses is None else [losses[k]])
    recent = history[-window:]
    skip = not all(math.isfinite(x) for x in values)
    if len(recent) >= max(2, window // 2 - 1):
      for i, value in enumerate(values):
        column = np.array([h[i] for h in recent])
        skip |= not value - column.mean() <= sigma * column.std(ddof=1)
    skipped.append(skip)
    if all(math.isfinite(x) for x in values):
      history.append(values)
  return skipped


@pytest.mark.parametrize("kwargs", [dict(warmup_steps=10), dict(warmup_steps=5, max_norm=15.0, z_threshold=2.0)])
def test_zclip_matches_its_float64_reference(x64, kwargs):
  del x64
  grads = spiky_grads(seed=0)
  outputs, state = run(zclip(**kwargs), grads)
  assert_close(outputs, zclip_reference(grads, **kwargs), rtol=1e-10)
  assert int(state.count) == NUM_STEPS


@pytest.mark.parametrize("kwargs", [dict(warmup_steps=10), dict(warmup_steps=0, lambda_rel=1.2, norm_decay=0.9)])
def test_adagc_matches_its_float64_reference(x64, kwargs):
  del x64
  grads = spiky_grads(seed=1)
  outputs, _ = run(adagc(**kwargs), grads)
  assert_close(outputs, adagc_reference(grads, **kwargs), rtol=1e-10)


@pytest.mark.parametrize("kwargs", [dict(), dict(percentile=50.0, history=7), dict(percentile=100.0, history=1)])
def test_autoclip_matches_its_float64_reference(x64, kwargs):
  del x64
  grads = spiky_grads(seed=2)
  outputs, _ = run(autoclip(**kwargs), grads)
  assert_close(outputs, autoclip_reference(grads, **kwargs), rtol=1e-10)


@pytest.mark.parametrize("kwargs", [dict(theta=50.0, reset_interval=25, warmup_steps=8, grad_accu_steps=5),
                                    dict()])
def test_spam_matches_its_float64_reference(x64, kwargs):
  del x64
  grads = spiky_grads(seed=3)
  outputs, state = run(scale_by_spam(**kwargs), grads)
  assert_close(outputs, spam_reference(grads, **kwargs), rtol=1e-10)
  assert float(acclip_optax.clip_stats(state)["clip_fraction"]) >= 0.0


@pytest.mark.parametrize("kwargs", [dict(), dict(reset_interval=25, norm_decay=None, max_decay=0.9, momentum_decay_steps=40,
                                                  momentum_decay_floor=0.3)])
def test_stable_spam_matches_its_float64_reference(x64, kwargs):
  del x64
  grads = spiky_grads(seed=10)
  grads[12]["bias"] = np.zeros_like(grads[12]["bias"])  # an all-zero tensor keeps its statistics
  outputs, state = run(scale_by_stable_spam(**kwargs), grads)
  assert_close(outputs, stable_spam_reference(grads, **kwargs), rtol=1e-10)
  assert int(state.count) == NUM_STEPS


@pytest.mark.parametrize("window, sigma, with_loss", [(16, 3.0, False), (10, 2.0, True), (4, 1.0, True)])
def test_skip_step_skips_the_steps_of_its_float64_reference(x64, window, sigma, with_loss):
  del x64
  grads = spiky_grads(seed=11)
  grads[2] = {name: np.full_like(g, np.nan) for name, g in grads[2].items()}  # before the test starts
  losses = list(np.random.default_rng(12).normal(3.0, 0.1, size=NUM_STEPS))
  losses[50] = 30.0  # a loss spike on a step whose gradient is quiet
  losses[55] = float("nan")
  losses[1] = float("inf")  # before the test starts: skipped all the same
  tx = skip_step_on_spikes(optax.adam(0.1), window=window, sigma=sigma)
  params = {k: jnp.zeros(v.shape) for k, v in grads[0].items()}
  state, update = tx.init(params), jax.jit(tx.update)
  skipped = []
  for g, loss in zip(grads, losses):
    extra = dict(loss=jnp.asarray(loss)) if with_loss else {}
    _, state = update(jax.tree.map(jnp.asarray, g), state, params, **extra)
    skipped.append(bool(state.skipped))
  expected = skip_step_reference(grads, losses if with_loss else None, window, sigma)
  assert skipped == expected and expected[2] and (expected[1] if with_loss else not expected[1])
  assert any(expected) and int(state.skip_count) == sum(expected)
  assert all(np.isfinite(x).all() for x in jax.tree.leaves(state.inner_state))  # no NaN reached Adam's moments
  assert float(acclip_optax.clip_stats(state)["skip_count"]) == sum(expected)


# ---- invariants -----------------------------------------------------------------------------------

def steady(num_steps=80):
  """A constant gradient of global norm 0.57 (below AdaGC's warm-up bound lambda_abs = 1)."""
  return [{"w": np.full(6, 0.2), "b": np.full(2, -0.2)} for _ in range(num_steps)]


@pytest.mark.parametrize("name, tx", [("zclip", zclip(warmup_steps=10)), ("adagc", adagc(warmup_steps=10)),
                                      ("autoclip", autoclip(percentile=10.0))])
def test_a_steady_gradient_passes_unchanged_after_warmup(name, tx):
  grads = steady()
  outputs, state = run(tx, grads)
  for got, g in zip(outputs[20:], grads[20:]):
    for leaf in g:  # AutoClip clips at the norm itself: torch's n / (n + 1e-6) is all it costs
      np.testing.assert_allclose(got[leaf], g[leaf], rtol=2e-6, err_msg=name)
  stats = acclip_optax.clip_stats(state)
  assert float(stats.get("clipped", 0.0)) == 0.0 and float(stats.get("clip_fraction", 0.0)) == 0.0


@pytest.mark.parametrize("name, tx", [("zclip", zclip(warmup_steps=10)), ("adagc", adagc(warmup_steps=10)),
                                      ("autoclip", autoclip(percentile=50.0))])
def test_a_100x_spike_is_cut(name, tx):
  grads = steady(40)
  grads[30] = {k: 100 * v for k, v in grads[30].items()}
  outputs, _ = run(tx, grads)
  spike_norm = global_norm(outputs[30])
  assert spike_norm < 2.0 * global_norm(grads[29]), name  # back to about the steady norm (0.57)


def varied(num_steps=30):
  """Gradients that change every step (a steady one would hide a state that a bad step moved)."""
  rng = np.random.default_rng(3)
  return [{"w": rng.normal(size=6), "b": rng.normal(size=2)} for _ in range(num_steps)]


@pytest.mark.parametrize("name, tx", [
    ("zclip", zclip(warmup_steps=3)), ("adagc", adagc(warmup_steps=3)), ("autoclip", autoclip(history=8)),
    ("spam", acclip_optax.scale_by_spam(reset_interval=12, warmup_steps=2, grad_accu_steps=2)),
    ("stable_spam", acclip_optax.scale_by_stable_spam(reset_interval=12))])
@pytest.mark.parametrize("bad", [np.nan, np.inf])
def test_a_nonfinite_gradient_is_a_zero_step_that_leaves_the_statistics_alone(name, tx, bad):
  """A NaN or inf anywhere: zero update, state as before (but the count of such steps), and the run after it
  equal to the run without that step."""
  grads = varied()
  poisoned = list(grads[:8]) + [{"w": grads[8]["w"].copy(), "b": grads[8]["b"]}] + list(grads[8:])
  poisoned[8]["w"][3] = bad
  outputs, state = run(tx, poisoned)
  reference, reference_state = run(tx, grads)
  assert all(np.all(np.asarray(leaf) == 0) for leaf in outputs[8].values()), name
  for got, expected in zip(outputs[9:], reference[8:]):
    for leaf in expected:
      np.testing.assert_array_equal(got[leaf], expected[leaf], err_msg=name)
  assert int(state.nonfinite_count) == 1 and float(acclip_optax.clip_stats(state)["nonfinite_steps"]) == 1.0
  for got, expected in zip(jax.tree.leaves(state._replace(nonfinite_count=reference_state.nonfinite_count)),
                           jax.tree.leaves(reference_state)):
    np.testing.assert_array_equal(got, expected, err_msg=name)


def test_spam_cuts_a_coordinate_spike_to_sqrt_theta_v():
  grads = [{"w": np.full(4, 1.0)} for _ in range(40)]
  grads[30] = {"w": np.array([1.0, 1000.0, 1.0, 1.0])}
  theta = 5000.0  # v is not bias-corrected: after 30 steps of 1, theta v = 148, so only the spike is cut
  tx = scale_by_spam(theta=theta, grad_accu_steps=5)
  _, before = run(tx, grads[:30])
  outputs, after = run(tx, grads[:31])
  v_before = float(np.asarray(before.nu["w"])[1])
  clipped = math.sqrt(theta * v_before)  # the spike enters v as this, not as 1000
  assert float(np.asarray(after.nu["w"])[1]) == pytest.approx(0.999 * v_before + 0.001 * clipped ** 2, rel=1e-5)
  assert float(acclip_optax.clip_stats(after)["clip_fraction"]) == pytest.approx(0.25)


def test_adagc_thresholds_are_per_tensor():
  grads = steady(40)
  grads[30] = {"w": 100 * grads[30]["w"], "b": grads[30]["b"]}
  outputs, state = run(adagc(warmup_steps=10), grads[:31])
  np.testing.assert_allclose(outputs[30]["b"], grads[30]["b"], rtol=1e-6)  # the quiet tensor is untouched
  assert np.linalg.norm(outputs[30]["w"]) == pytest.approx(1.05 * np.linalg.norm(grads[29]["w"]), rel=1e-4)
  assert float(acclip_optax.clip_stats(state)["clip_fraction"]) == 0.5


def test_spam_resets_its_moments_and_warms_up():
  grads = [{"w": np.full(3, 1.0)} for _ in range(12)]
  outputs, state = run(scale_by_spam(reset_interval=5, warmup_steps=3, grad_accu_steps=0, theta=0.0), grads)
  sizes = [float(np.abs(o["w"][0])) for o in outputs]
  assert sizes[4] < 0.1 * sizes[3] and sizes[9] < 0.1 * sizes[8]  # steps 5 and 10 restart from m = 0
  assert sizes[5] > sizes[4]  # the warm-up after the reset grows the step back


def test_stable_spam_ignores_the_gradient_scale():
  """AdaClip's threshold and AdaGN's norm statistics scale with the gradient, and Adam undoes what is left:
  at eps = 0, gradients x1000 give the same updates."""
  grads = spiky_grads(seed=13)
  outputs, _ = run(scale_by_stable_spam(eps=0.0), grads)
  scaled, _ = run(scale_by_stable_spam(eps=0.0), [{k: 1000.0 * v for k, v in g.items()} for g in grads])
  assert_close(scaled, outputs, rtol=1e-4)


def test_stable_spam_cuts_a_spike_to_its_running_maximum():
  grads = steady(40)
  grads[30] = {"w": np.array([0.2, 0.2, 100.0, 0.2, 0.2, 0.2]), "b": grads[30]["b"]}
  _, before = run(scale_by_stable_spam(), grads[:30])
  _, state = run(scale_by_stable_spam(), grads[:31])
  assert float(acclip_optax.clip_stats(state)["clip_fraction"]) == pytest.approx(1 / 8)
  # the spike enters the norm statistics at the bias-corrected running maximum (about 3.4), not at 100
  running_max = float(state.max_ema["w"]) / (1 - 0.999 ** 31)
  assert running_max < 4.0
  clipped_norm = math.sqrt(5 * 0.2 ** 2 + running_max ** 2)
  assert float(state.norm_ema["w"]) == pytest.approx(0.7 * float(before.norm_ema["w"]) + 0.3 * clipped_norm, rel=1e-5)


def test_stable_spam_resets_its_moments():
  grads = [{"w": np.full(3, 1.0) * (1 + 0.1 * (k % 3))} for k in range(12)]
  _, before = run(scale_by_stable_spam(reset_interval=5), grads[:9])
  _, after = run(scale_by_stable_spam(reset_interval=5), grads[:10])
  single, _ = run(scale_by_stable_spam(reset_interval=5), grads[:10])
  assert float(np.asarray(before.mu["w"])[0]) > 0
  # step 10 restarts Adam from m = v = 0: its direction is the bias-corrected first step, +-1
  np.testing.assert_allclose(single[9]["w"], np.ones(3), rtol=1e-5)
  assert float(np.asarray(after.nu["w"])[0]) == pytest.approx(0.001 * float(np.asarray(after.mu["w"])[0] / 0.1) ** 2,
                                                              rel=1e-4)


def test_skip_step_leaves_the_inner_state_and_the_params_alone():
  grads = steady(40)
  grads[30] = {k: 100 * v for k, v in grads[30].items()}
  tx = skip_step_on_spikes(optax.adam(0.1), window=16)
  outputs, state = run(tx, grads[:30])
  spike_outputs, spike_state = run(tx, grads[:31])
  assert all(np.all(u == 0) for u in spike_outputs[30].values())
  chex_equal = lambda a, b: all(np.array_equal(x, y) for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)))
  assert chex_equal(spike_state.inner_state, state.inner_state)
  assert int(spike_state.skip_count) == 1 and float(spike_state.skipped) == 1.0
  # the steps before the spike are Adam's own
  adam_outputs, _ = run(optax.adam(0.1), grads[:30])
  assert_close(outputs, adam_outputs, rtol=1e-6)


def test_clip_stats_sees_through_a_skip_step():
  tx = skip_step_on_spikes(optax.chain(zclip(warmup_steps=2), optax.adamw(1e-3)), window=4)
  _, state = run(tx, steady(5))
  assert sorted(acclip_optax.clip_stats(state)) == ["clip_threshold", "clipped", "global_norm", "nonfinite_steps",
                                                     "skip_count", "skipped"]


@pytest.mark.parametrize("make, message", [
    (lambda: zclip(norm_decay=1.0), "norm_decay=1.0"), (lambda: zclip(warmup_steps=0), "warmup_steps=0"),
    (lambda: zclip(max_norm=0.0), "max_norm=0.0"), (lambda: adagc(lambda_rel=0.0), "lambda_rel=0.0"),
    (lambda: adagc(norm_decay=float("nan")), "norm_decay=nan"), (lambda: autoclip(percentile=101.0), "percentile=101.0"),
    (lambda: autoclip(history=0), "history=0"), (lambda: spam(1e-3, reset_interval=0), "reset_interval=0"),
    (lambda: spam(1e-3, theta=-1.0), "theta=-1.0"), (lambda: spam(1e-3, weight_decay=-0.1), "weight_decay=-0.1"),
    (lambda: stable_spam(1e-3, norm_sq_decay=1.0), "norm_sq_decay=1.0"), (lambda: stable_spam(1e-3, max_decay=-0.5), "max_decay=-0.5"),
    (lambda: stable_spam(1e-3, reset_interval=0), "reset_interval=0"),
    (lambda: stable_spam(1e-3, momentum_decay_steps=0), "momentum_decay_steps=0"),
    (lambda: skip_step_on_spikes(optax.sgd(0.1), window=1), "window=1"),
    (lambda: skip_step_on_spikes(optax.sgd(0.1), sigma=-1.0), "sigma=-1.0"),
])
def test_bad_hyperparameters_name_themselves(make, message):
  with pytest.raises(ValueError, match=message.replace(".", r"\.")):
    make()


# ---- the reference implementations as oracles (pytest -m oracle) ----------------------------------

def _torch_model(params):
  torch = pytest.importorskip("torch")
  return {name: torch.nn.Parameter(torch.tensor(value, dtype=torch.float64)) for name, value in params.items()}


def _torch_trajectory(params, grads, make_optimizer, before_step=None):
  torch = pytest.importorskip("torch")
  tensors = _torch_model(params)
  module = torch.nn.Module()
  for name, tensor in tensors.items():
    module.register_parameter(name, tensor)
  optimizer = make_optimizer(list(tensors.values()))
  trajectory = []
  for g in grads:
    for name, tensor in tensors.items():
      tensor.grad = torch.tensor(g[name], dtype=torch.float64)
    if before_step is not None:
      before_step(module)
    optimizer.step()
    trajectory.append({name: tensor.detach().numpy().copy() for name, tensor in tensors.items()})
  return trajectory


def _largest_relative_difference(ours, theirs):
  return max(float(np.max(np.abs(a[k] - b[k]) / (np.abs(b[k]) + 1e-12))) for a, b in zip(ours, theirs) for k in b)


def _initial_params():
  rng = np.random.default_rng(9)
  return {name: rng.normal(size=shape) for name, shape in SHAPES.items()}


@pytest.mark.oracle
@pytest.mark.parametrize("max_norm", [None, 1.0])
def test_oracle_zclip(x64, max_norm):
  del x64
  pytest.importorskip("zclip")
  torch = pytest.importorskip("torch")
  from zclip import ZClip  # pylint: disable=g-import-not-at-top
  grads, params = spiky_grads(seed=4, num_steps=80), _initial_params()
  clipper = ZClip(max_grad_norm=max_norm)
  theirs = _torch_trajectory(params, grads, lambda p: torch.optim.SGD(p, lr=0.1), before_step=clipper.step)
  ours, _ = run(optax.chain(zclip(max_norm=max_norm), optax.sgd(0.1)), grads, params, apply_updates=True)
  difference = _largest_relative_difference(ours, theirs)
  print(f"zclip (max_norm={max_norm}): largest relative difference {difference:.2e}")
  assert difference < 1e-10


@pytest.mark.oracle
@pytest.mark.parametrize("warmup_scale, tolerance", [(0.1, 1e-10), (1.0, 1e-4)])
def test_oracle_adagc(x64, warmup_scale, tolerance):
  """pytorch_optimizer computes the warm-up's global norm in float32 (get_global_gradient_norm), so where
  the warm-up clips (gradients of norm about 4 > lambda_abs = 1) the two trajectories part at float32's
  1e-7 and drift to about 1e-5; where it does not clip (the gradients scaled by 0.1 during the warm-up)
  they agree to float64's precision."""
  del x64
  pytest.importorskip("pytorch_optimizer")
  from pytorch_optimizer import AdaGC  # pylint: disable=g-import-not-at-top
  grads, params = spiky_grads(seed=5, num_steps=150), _initial_params()
  grads = [{k: v * (warmup_scale if step < 20 else 1.0) for k, v in g.items()} for step, g in enumerate(grads)]
  theirs = _torch_trajectory(params, grads, lambda p: AdaGC(p, lr=1e-2, warmup_steps=20, weight_decay=0.1))
  ours, _ = run(optax.chain(adagc(warmup_steps=20), optax.adamw(1e-2, eps=1e-8, weight_decay=0.1)), grads,
                params, apply_updates=True)
  difference = _largest_relative_difference(ours, theirs)
  print(f"adagc (warm-up gradients x{warmup_scale}): largest relative difference {difference:.2e}")
  assert difference < tolerance


@pytest.mark.oracle
@pytest.mark.parametrize("kwargs", [dict(), dict(threshold=50, update_proj_gap=40, warmup_epoch=10, weight_decay=0.1)])
def test_oracle_spam(x64, kwargs):
  del x64
  pytest.importorskip("pytorch_optimizer")
  from pytorch_optimizer import SPAM  # pylint: disable=g-import-not-at-top
  grads, params = spiky_grads(seed=6, num_steps=130), _initial_params()
  theirs = _torch_trajectory(params, grads, lambda p: SPAM(p, lr=1e-2, density=1.0, **kwargs))
  ours_kwargs = dict(theta=float(kwargs.get("threshold", 5000)), reset_interval=kwargs.get("update_proj_gap", 500),
                     warmup_steps=kwargs.get("warmup_epoch", 50), weight_decay=kwargs.get("weight_decay", 0.0))
  ours, _ = run(spam(1e-2, **ours_kwargs), grads, params, apply_updates=True)
  difference = _largest_relative_difference(ours, theirs)
  print(f"spam ({kwargs or 'defaults'}): largest relative difference {difference:.2e}")
  assert difference < 1e-10


@pytest.mark.oracle
@pytest.mark.parametrize("kwargs", [dict(), dict(update_proj_gap=40, weight_decay=0.1, t_max=60, eta_min=0.3,
                                             gamma1=-1.0, theta=0.99)])
def test_oracle_stable_spam(x64, kwargs):
  """The reference in its default (non-foreach) path, with an all-zero tensor at two steps."""
  del x64
  pytest.importorskip("pytorch_optimizer")
  from pytorch_optimizer import StableSPAM  # pylint: disable=g-import-not-at-top
  grads, params = spiky_grads(seed=7, num_steps=130), _initial_params()
  for step in (12, 70):
    grads[step]["bias"] = np.zeros_like(grads[step]["bias"])
  theirs = _torch_trajectory(params, grads, lambda p: StableSPAM(p, lr=1e-2, **kwargs))
  ours_kwargs = dict(reset_interval=kwargs.get("update_proj_gap", 1000), weight_decay=kwargs.get("weight_decay", 0.0),
                     momentum_decay_steps=kwargs.get("t_max"), momentum_decay_floor=kwargs.get("eta_min", 0.5),
                     norm_decay=None if kwargs.get("gamma1") == -1.0 else 0.7, max_decay=kwargs.get("theta", 0.999))
  ours, _ = run(stable_spam(1e-2, **ours_kwargs), grads, params, apply_updates=True)
  difference = _largest_relative_difference(ours, theirs)
  print(f"stable_spam ({kwargs or 'defaults'}): largest relative difference {difference:.2e}")
  assert difference < 1e-10


def test_adagc_with_eps_zero_leaves_a_zero_tensor_at_zero():
  grads = [{"w": np.ones(3), "b": np.zeros(2)} for _ in range(6)]
  outputs, _ = run(adagc(warmup_steps=2, eps=0.0), grads)
  assert np.all(outputs[-1]["b"] == 0) and np.all(np.isfinite(outputs[-1]["w"]))


@pytest.mark.parametrize("make, old, new", [
    (zclip, dict(alpha=0.9), dict(norm_decay=0.9)), (adagc, dict(beta=0.9, warmup_steps=2), dict(norm_decay=0.9, warmup_steps=2)),
    (scale_by_stable_spam, dict(gamma1=0.5, gamma2=0.8), dict(norm_decay=0.5, norm_sq_decay=0.8))])
def test_the_old_names_of_the_ema_decays_warn_and_give_the_same_rule(make, old, new):
  grads = spiky_grads(seed=4)[:12]
  with warnings.catch_warnings(record=True) as caught:
    warnings.simplefilter("always")
    before = make(**old)
  messages = sorted(str(w.message) for w in caught if w.category is DeprecationWarning)
  assert [m.split(" is deprecated")[0] for m in messages] == sorted(
      f"{make.__name__}({name}=...)" for name in old if name not in new), messages
  assert_close(run(before, grads)[0], run(make(**new), grads)[0], rtol=0)
  with pytest.raises(TypeError, match="got both"):
    make(**{next(iter(old)): 0.9, next(iter(new)): 0.9})
