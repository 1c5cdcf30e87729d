"""Tests of the synthetic study: the simulator against a float64 NumPy reference, and the study end to end
on tiny sizes (every output written, the key numbers consistent with the CSV)."""
import csv
import json
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from experiments.common import study_cli

from acclip_optax import noise
from experiments.synthetic import __main__ as cli
from experiments.synthetic.configs import full, quick, tiny
from experiments.synthetic import problems, study


def _numpy_gclip_reference(problem, x0, alpha, lr_multiplier, clip_multiplier, key, num_steps, schedules,
                           noise_scale):
  """GClip from the formulas in float64, fed with the simulator's noise draws."""
  h = np.asarray(problem.curvatures, np.float64)
  bound = schedules.gradient_bound + noise_scale * schedules.noise_dimension ** (1.0 / alpha)
  x = np.asarray(x0, np.float64)
  values, gradient_norms = [], [np.linalg.norm(h * x)]
  for k, step_key in enumerate(jax.random.split(key, num_steps)):
    xi = np.asarray(noise.sample_symmetric_stable(step_key, alpha, x.shape), np.float64)
    gradient = h * x + noise_scale * xi
    eta = lr_multiplier * 4.0 / (schedules.mu * (k + 1 + schedules.offset))
    tau = clip_multiplier * bound * (k + 1) ** (1.0 / alpha)
    x = x - eta * min(1.0, tau / np.linalg.norm(gradient)) * gradient
    values.append(0.5 * np.sum(h * x * x))
    gradient_norms.append(np.linalg.norm(h * x))
  return np.array(values), min(gradient_norms)


def test_simulator_matches_numpy_gclip_with_theory_schedules():
  problem, x0, schedules, _ = study.quadratic_setup(5, 4.0, 0.5, "gclip")
  alphas, lr_multipliers, clip_multipliers = [1.3, 2.0], [0.5, 1.0], [0.05, 1.0]
  keys = jax.random.split(jax.random.key(3), 2)
  lanes = problems.Lanes(jnp.asarray(alphas), jnp.asarray(lr_multipliers), jnp.asarray(clip_multipliers), keys)
  num_steps, checkpoints = 12, (0, 5, 11)
  results = problems.simulate(problem, x0, 0.5, lanes, method="gclip", schedules=schedules,
                              num_steps=num_steps, checkpoints=checkpoints)
  for lane in range(2):
    reference, min_gradient_norm = _numpy_gclip_reference(problem, x0, alphas[lane], lr_multipliers[lane], clip_multipliers[lane],
                                       keys[lane], num_steps, schedules, 0.5)
    np.testing.assert_allclose(results.checkpoint_suboptimality[lane], reference[list(checkpoints)], rtol=2e-4)
    np.testing.assert_allclose(results.final_suboptimality[lane], reference[-1], rtol=2e-4)
    np.testing.assert_allclose(results.min_gradient_norm[lane], min_gradient_norm, rtol=2e-4)


def test_rosenbrock_gradient_matches_autodiff_and_minimum():
  problem = problems.Rosenbrock(jnp.float32(100.0))
  point = jnp.array([-1.2, 1.0])
  np.testing.assert_allclose(problem.gradient(point), jax.grad(problem.value)(point), rtol=1e-6)
  assert float(problem.value(jnp.ones(2))) == 0.0


def test_quantile_treats_nan_as_blow_up_and_stats_count_divergence():
  values = np.array([1.0, np.nan, 3.0, 0.5, np.inf])
  stats = study.seed_quantiles(values, start_value=2.0)
  assert stats["median"] == 3.0 and math.isinf(stats["p90"])  # sorted: 0.5, 1, 3, inf, inf
  assert stats["diverged_fraction"] == pytest.approx(3 / 5)


def test_loglog_slope_recovers_a_power_law():
  steps = np.arange(10, 1000, 10.0)
  assert study.loglog_slope(steps, 3.0 * steps ** -0.7) == pytest.approx(-0.7)
  assert study.loglog_slope(steps, np.where(steps > 500, np.inf, steps)) is None


def quick_with(**overrides):
  config = quick.get_config()
  config.update(overrides)
  return config


def test_config_validation_and_cli_overrides():
  with pytest.raises(ValueError, match="clip_multipliers"):
    study.StudyConfig.from_config(quick_with(clip_multipliers=(0.1, 10.0)))
  with pytest.raises(ValueError, match="alpha"):
    study.StudyConfig.from_config(quick_with(alphas=(0.9,)))
  with pytest.raises(ValueError, match="unknown methods"):
    study.StudyConfig.from_config(quick_with(dim_methods=("lion",)))
  with pytest.raises(ValueError, match="has no config 'huge'; choose one of full, quick, tiny"):
    study_cli.study_config("experiments.synthetic", "huge")
  with pytest.raises(SystemExit):  # --config lists the study's own configs
    cli.parse_args(["--out", "x", "--config", "huge"])
  config = cli.config_from_args(cli.parse_args(["--out", "x", "--quick", "--seeds", "12", "--steps", "30",
                                                "--dims", "4", "8"]))
  assert (config.eval_seeds, config.tune_seeds, config.num_steps, config.dims) == (12, 3, 30, (4, 8))
  assert config.mode == "quick" and config.clip_multipliers == quick.get_config().clip_multipliers
  assert quick.get_config().eval_seeds >= 100 and full.get_config().eval_seeds >= 100
  config = cli.config_from_args(cli.parse_args(["--out", "x", "--methods", "sgd, gclip,stable_spam"]))
  assert (config.methods, config.dim_methods, config.nonconvex_methods) == (
      ("sgd", "gclip", "stable_spam"), ("gclip", "stable_spam"), ("sgd", "gclip"))
  with pytest.raises(ValueError, match="lion"):
    cli.config_from_args(cli.parse_args(["--out", "x", "--methods", "sgd,lion"]))


def test_study_end_to_end_on_tiny_sizes(tmp_path):
  config = tiny.get_config()
  config.alphas = (1.5, 2.0)
  results = study.run(str(tmp_path), config)
  json.dumps(results)  # JSON-able
  assert results["mode"] == "tiny" and results["config"]["alphas"] == [1.5, 2.0]
  for name in ["results.csv", "summary.md", "summary.json", *results["files"]["figures"]]:
    assert (tmp_path / name).stat().st_size > 0
  sgd = results["strongly_convex"]["quadratic_kappa2"]["1.5"]["sgd"]
  assert set(sgd) == {"theory", "tuned"} and sgd["theory"]["num_seeds"] == 4
  assert 0.0 <= sgd["theory"]["diverged_fraction"] <= 1.0
  assert results["rates"]["by_alpha"]["2"]["theory_slope"] == pytest.approx(-1.0)
  assert results["rq3"]["1.5"]["gclip_bound_exponent_2_over_alpha_minus_1"] == pytest.approx(2 / 1.5 - 1)
  assert set(results["dimension"]["1.5"]["cclip"]["theory"]["median_by_dimension"]) == {"4", "8"}
  with open(tmp_path / "results.csv") as f:
    rows = list(csv.DictReader(f))
  row = next(r for r in rows if r["study"] == "strongly_convex" and r["method"] == "sgd"
             and r["setting"] == "theory" and r["alpha"] == "1.5" and r["problem"] == "quadratic_kappa2")
  assert float(row["median"]) == pytest.approx(sgd["theory"]["median"])
  assert {r["study"] for r in rows} == {"strongly_convex", "rates", "dimension", "nonconvex"}
  assert "## Dimension (RQ3)" in (tmp_path / "summary.md").read_text()
