"""Tests of acclip_optax.noise (stable sampler, tail-index estimators, gradient_noise) and noise_plots."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import stats

from acclip_optax import noise, noise_plots

NUM_SAMPLES = 20_000


@pytest.mark.parametrize("alpha", [0.8, 1.0, 1.3, 1.7, 2.0])
def test_stable_sampler_matches_scipy(alpha):
  ours = np.asarray(noise.sample_symmetric_stable(jax.random.key(1), alpha, (NUM_SAMPLES,)))
  reference = stats.levy_stable.rvs(alpha, 0.0, size=NUM_SAMPLES, random_state=np.random.default_rng(2))
  assert np.all(np.isfinite(ours))
  assert stats.ks_2samp(ours, reference).pvalue > 1e-3


def test_stable_sampler_alpha_two_is_normal_with_variance_two_and_scale_scales():
  x = np.asarray(noise.sample_symmetric_stable(jax.random.key(3), 2.0, (NUM_SAMPLES,), scale=3.0))
  assert stats.kstest(x, stats.norm(0.0, 3.0 * np.sqrt(2.0)).cdf).pvalue > 1e-3


def test_stable_sampler_alpha_one_is_cauchy():
  x = np.asarray(noise.sample_symmetric_stable(jax.random.key(4), 1.0, (NUM_SAMPLES,)))
  assert stats.kstest(x, stats.cauchy.cdf).pvalue > 1e-3


def test_stable_sampler_traced_alpha_under_jit_and_vmap_matches_eager():
  keys = jax.random.split(jax.random.key(5), 3)
  alphas = jnp.array([1.0, 1.5, 2.0])
  sample = jax.jit(jax.vmap(lambda k, a: noise.sample_symmetric_stable(k, a, (64,))))
  batched = sample(keys, alphas)
  assert batched.shape == (3, 64) and bool(jnp.all(jnp.isfinite(batched)))
  for row, key, alpha in zip(batched, keys, [1.0, 1.5, 2.0]):
    np.testing.assert_allclose(row, noise.sample_symmetric_stable(key, alpha, (64,)), rtol=1e-5, atol=1e-6)


def test_stable_sampler_dtype_and_errors():
  assert noise.sample_symmetric_stable(jax.random.key(0), 1.5, (2, 3), dtype=jnp.bfloat16).dtype == jnp.bfloat16
  for bad_alpha in [0.0, -1.0, 2.5]:
    with pytest.raises(ValueError, match="alpha"):
      noise.sample_symmetric_stable(jax.random.key(0), bad_alpha, (3,))
  with pytest.raises(ValueError, match="scale"):
    noise.sample_symmetric_stable(jax.random.key(0), 1.5, (3,), scale=0.0)


@pytest.mark.parametrize("alpha", [1.2, 1.5, 1.8])
def test_mohammadi_recovers_stable_alpha_within_0_1(alpha):
  x = noise.sample_symmetric_stable(jax.random.key(7), alpha, (40_000,))
  assert abs(float(noise.tail_index_mohammadi(x)) - alpha) < 0.1


def test_mohammadi_on_vectors_and_matches_numpy_formula():
  x = np.asarray(noise.sample_symmetric_stable(jax.random.key(8), 1.5, (40_000, 5)), np.float64)
  block = 200
  sums = x.reshape(-1, block, 5).sum(axis=1)
  reference = np.log(block) / (np.mean(np.log(np.linalg.norm(sums, axis=1)))
                               - np.mean(np.log(np.linalg.norm(x, axis=1))))
  estimate = float(noise.tail_index_mohammadi(x, block))
  np.testing.assert_allclose(estimate, reference, rtol=1e-4)
  assert abs(estimate - 1.5) < 0.15


def test_mohammadi_symmetrized_pareto_norms_and_student_t_caveat():
  rng = np.random.default_rng(9)
  pareto_norms = rng.pareto(1.5, 100_000) + 1.0
  # Unsigned norms pull the estimate toward 1 (their block sums grow like the mean); random signs fix it.
  assert abs(float(noise.tail_index_mohammadi(pareto_norms, sign_key=jax.random.key(0))) - 1.5) < 0.2
  assert float(noise.tail_index_mohammadi(pareto_norms)) < 1.2
  # The documented caveat: finite-variance Student-t (df = 3) still reads below 2.
  student_t = rng.standard_t(3, 100_000)
  assert 1.6 < float(noise.tail_index_mohammadi(student_t)) < 1.95


def test_mohammadi_rejects_too_small_samples():
  with pytest.raises(ValueError, match="block_size"):
    noise.tail_index_mohammadi(np.ones(3))
  with pytest.raises(ValueError, match="block_size"):
    noise.tail_index_mohammadi(np.ones(100), block_size=60)
  with pytest.raises(ValueError, match="shape"):
    noise.tail_index_mohammadi(np.ones((4, 4, 4)))


@pytest.mark.parametrize("alpha", [0.8, 1.5])
def test_hill_recovers_pareto_alpha_within_0_1(alpha):
  x = np.random.default_rng(10).pareto(alpha, 100_000) + 1.0
  assert abs(float(noise.tail_index_hill(x, 2_000)) - alpha) < 0.1


def test_hill_matches_numpy_formula_for_every_k_and_uses_magnitudes():
  x = np.random.default_rng(11).standard_cauchy(500)
  ks = np.array([1, 5, 50, 499])
  descending = np.sort(np.abs(x))[::-1]
  reference = [1.0 / np.mean(np.log(descending[:k] / descending[k])) for k in ks]
  np.testing.assert_allclose(noise.tail_index_hill(x, ks), reference, rtol=1e-4)
  np.testing.assert_allclose(noise.tail_index_hill(x, 50), reference[2], rtol=1e-4)


def test_hill_recovers_stable_alpha_far_from_two():
  x = noise.sample_symmetric_stable(jax.random.key(12), 1.2, (100_000,))
  assert abs(float(noise.tail_index_hill(x, 1_000)) - 1.2) < 0.15


def test_hill_rejects_bad_k():
  x = np.arange(1.0, 11.0)
  for bad_k in [0, 10, [1, 12], 2.5, []]:
    with pytest.raises(ValueError, match="k"):
      noise.tail_index_hill(x, bad_k)


def _linear_regression_problem():
  """Pytree params, 7 minibatches, and the float64 per-batch gradients written from the formula."""
  rng = np.random.default_rng(13)
  params = {"w": jnp.asarray(rng.standard_normal(3), jnp.float32), "b": jnp.asarray(0.5, jnp.float32)}
  batches = [(rng.standard_normal((4, 3)).astype(np.float32), rng.standard_normal(4).astype(np.float32))
             for _ in range(7)]

  def loss_fn(p, batch):
    inputs, targets = batch
    return 0.5 * jnp.mean((inputs @ p["w"] + p["b"] - targets) ** 2)

  w, b = np.asarray(params["w"], np.float64), float(params["b"])
  gradients = []
  for inputs, targets in batches:
    residual = inputs.astype(np.float64) @ w + b - targets
    # ravel_pytree orders the dict leaves by key: "b" before "w".
    gradients.append(np.concatenate([[residual.mean()], inputs.T @ residual / len(targets)]))
  return loss_fn, params, batches, np.stack(gradients)


def test_gradient_noise_matches_brute_force_numpy():
  loss_fn, params, batches, gradients = _linear_regression_problem()
  result = noise.gradient_noise(loss_fn, params, batches, num_coordinate_samples=2, key=jax.random.key(0))
  mean = gradients.mean(axis=0)
  np.testing.assert_allclose(result.mean_gradient["b"], mean[0], rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(result.mean_gradient["w"], mean[1:], rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(result.noise_norms, np.linalg.norm(gradients - mean, axis=1), rtol=1e-5)
  running_variance = [np.sum(np.var(gradients[:b], axis=0)) for b in range(1, len(batches) + 1)]
  np.testing.assert_allclose(result.variance_trace, running_variance, rtol=1e-5, atol=1e-7)
  indices = np.asarray(result.coordinate_indices)
  assert indices.shape == (2,) and len(set(indices.tolist())) == 2
  np.testing.assert_allclose(result.noise_coordinates, (gradients - mean)[:, indices], rtol=1e-5, atol=1e-6)


def test_gradient_noise_accepts_a_callable_and_refuses_one_shot_iterators():
  loss_fn, params, batches, _ = _linear_regression_problem()
  from_callable = noise.gradient_noise(loss_fn, params, lambda: iter(batches))
  from_list = noise.gradient_noise(loss_fn, params, batches)
  np.testing.assert_allclose(from_callable.noise_norms, from_list.noise_norms)
  assert from_list.noise_coordinates.shape == (7, 0)
  with pytest.raises(ValueError, match="one-shot iterator"):
    noise.gradient_noise(loss_fn, params, (b for b in batches))
  with pytest.raises(ValueError, match="key"):
    noise.gradient_noise(loss_fn, params, batches, num_coordinate_samples=2)
  with pytest.raises(ValueError, match="exceeds"):
    noise.gradient_noise(loss_fn, params, batches, num_coordinate_samples=5, key=jax.random.key(0))
  with pytest.raises(ValueError, match="no batch"):
    noise.gradient_noise(loss_fn, params, [])


def test_reference_norms_match_scale():
  measured = np.random.default_rng(14).chisquare(50, 2_000) ** 0.5 * 0.1
  gaussian, stable = noise_plots.reference_noise_norms(measured, 50, 1.5, seed=1)
  np.testing.assert_allclose(np.mean(gaussian ** 2), np.mean(measured ** 2), rtol=0.05)
  np.testing.assert_allclose(np.median(stable), np.median(measured), rtol=1e-6)


def test_plots_write_png_files(tmp_path):
  norms = np.abs(np.asarray(noise.sample_symmetric_stable(jax.random.key(15), 1.5, (300,)))) + 1.0
  paths = [tmp_path / "histogram.png", tmp_path / "hill.png", tmp_path / "variance.png"]
  noise_plots.plot_noise_histogram(norms, 20_000, path=paths[0])
  noise_plots.plot_hill(norms, path=paths[1])
  figure = noise_plots.plot_variance_trace(np.cumsum(norms ** 2) / np.arange(1, 301), path=paths[2])
  assert len(figure.axes) == 1
  for path in paths:
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.parametrize("alpha", [0.5, 1.0, 1.2, 1.5, 2.0])
def test_stable_transform_is_finite_at_the_uniforms_edges(alpha):
  # u = 0 happens about once per 1e7 float32 draws; it once gave cos(V) < 0 and NaN noise.
  edge = [np.finfo(np.float32).tiny, 1.0 - 2.0 ** -24]
  uniforms = jnp.asarray(np.array(np.meshgrid(edge, edge)).reshape(2, -1), jnp.float32)
  assert bool(jnp.all(jnp.isfinite(noise._chambers_mallows_stuck(uniforms, alpha))))
  if alpha == 2.0:  # X = 2 sin(V) sqrt(W) with W <= -log(tiny): bounded by 2 sqrt(87.3)
    assert float(jnp.max(jnp.abs(noise._chambers_mallows_stuck(uniforms, alpha)))) < 2 * np.sqrt(88.0)
