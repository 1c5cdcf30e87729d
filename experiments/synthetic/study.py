"""The synthetic study of the paper's theory (RQ2: clipping under heavy-tailed noise; RQ3: dimension).

    python -m experiments.synthetic --out DIR [--quick | --config full|quick|tiny]

Four experiments, all with additive symmetric alpha-stable gradient noise, independent per coordinate:

1. Strongly convex quadratics (well- and ill-conditioned), alpha in {1.1, 1.3, 1.5, 1.7, 2.0}; SGD, SGD
   with momentum, GClip, CClip, ACClip (paper), ACClip (ports), Adam. "theory": the analysis' schedules
   (SGD, GClip, CClip only); "tuned": the multipliers of those schedules picked from a small grid on
   separate tuning seeds (lowest 90th percentile of the final suboptimality), then reported on the
   evaluation seeds. Median and 90th percentile of f(x_K) - f*, fraction diverged (f(x_K) > f(x_0) or
   not finite).
2. Rates: the log-log slope of the median suboptimality against k (last 90% of the run), beside the
   theory's -2(alpha-1)/alpha for GClip.
3. Dimension (RQ3): the well-conditioned quadratic for d in `dims`; the per-coordinate suboptimality
   (f(x_K) - f*)/d of GClip, CClip and ACClip, theory and tuned, and its log-log slope against d.
4. Non-convex: Rosenbrock's function with constant steps (and thresholds) tuned on separate seeds;
   min over k of ||grad f(x_k)||.

`run(out_dir, config)` (configs/full.py, quick.py, tiny.py) writes results.csv, summary.md, summary.json and
PNG plots, and returns the key numbers as a JSON-able dict.

Cost: each method (and, in the dimension study, each d) is one compiled program (about 2.5 s of CPU to
compile); the runs themselves cost about 80 ns of CPU per noise coordinate and step. Measured on the 2-core
CPU machine while other jobs kept its load average at 6-13: --quick about 51 s of CPU time (2.5-4 min
wall at that load, about 1 min on idle cores); the full run's time is in configs/full.py.
"""
from __future__ import annotations

import dataclasses
import math
import os
import time
from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np

from experiments.common import figures as figures_lib
from experiments.common import results as results_lib
from experiments.common import study_cli
from experiments.common import workdir_lock
from experiments.synthetic import plots, problems, summary


@dataclasses.dataclass(frozen=True)
class StudyConfig:
  """The study's sizes, grids and seeds, checked: `from_config` of configs/full.py, quick.py or tiny.py
  (whose docstrings explain the grids). `mode` is the config's name."""
  methods: tuple[str, ...]
  alphas: tuple[float, ...]
  dimension: int
  condition_numbers: tuple[float, ...]
  num_steps: int
  tune_seeds: int
  eval_seeds: int
  noise_scale: float
  sgd_lr_multipliers: tuple[float, ...]
  adam_lr_multipliers: tuple[float, ...]
  clip_lr_multipliers: tuple[float, ...]
  clip_multipliers: tuple[float, ...]
  dims: tuple[int, ...]
  dim_alphas: tuple[float, ...]
  dim_methods: tuple[str, ...]
  dim_steps: int
  dim_tune_seeds: int
  dim_eval_seeds: int
  dim_lr_multipliers: tuple[float, ...]
  dim_adam_lr_multipliers: tuple[float, ...]
  dim_clip_multipliers: tuple[float, ...]
  nonconvex_methods: tuple[str, ...]
  nonconvex_alphas: tuple[float, ...]
  nonconvex_steps: int
  nonconvex_sgd_lrs: tuple[float, ...]
  nonconvex_adam_lrs: tuple[float, ...]
  nonconvex_clip_multipliers: tuple[float, ...]
  seed: int
  mode: str = "custom"

  @classmethod
  def from_config(cls, config) -> "StudyConfig":
    """The checked settings of a config (a ConfigDict, or the dict a summary.json recorded)."""
    return study_cli.dataclass_from_config(cls, config, "synthetic")

  def validate(self) -> None:
    for name in ("sgd_lr_multipliers", "clip_lr_multipliers", "clip_multipliers", "dim_clip_multipliers"):
      if 1.0 not in getattr(self, name):
        raise ValueError(f"StudyConfig.{name}={getattr(self, name)} must contain 1.0 (the theory's value).")
    for name in ("num_steps", "dim_steps", "nonconvex_steps"):
      if getattr(self, name) < 10:
        raise ValueError(f"StudyConfig.{name}={getattr(self, name)} must be >= 10.")
    for name in ("tune_seeds", "eval_seeds", "dim_tune_seeds", "dim_eval_seeds"):
      if getattr(self, name) < 2:
        raise ValueError(f"StudyConfig.{name}={getattr(self, name)} must be >= 2.")
    bad = [a for a in self.alphas + self.dim_alphas + self.nonconvex_alphas if not 1.0 < a <= 2.0]
    if bad:
      raise ValueError(f"StudyConfig: every alpha must lie in (1, 2], got {bad}.")
    for name in ("methods", "dim_methods", "nonconvex_methods"):
      unknown = [m for m in getattr(self, name) if m not in problems.METHODS]
      if unknown:
        raise ValueError(f"StudyConfig.{name} has unknown methods {unknown}; known: {', '.join(problems.METHODS)}.")


# ---------------------------------------------------------------------------------------------------------
# Statistics over seeds.

def seed_quantiles(values: np.ndarray, start_value: float | None) -> dict[str, float]:
  """Median and 90th percentile over seeds (NaN counts as +inf), the seed count and, given the starting
  value, the fraction diverged (not finite or above it)."""
  stats = {"median": results_lib.quantile(values, 0.5), "p90": results_lib.quantile(values, 0.9),
           "num_seeds": int(values.size)}
  if start_value is not None:
    stats["diverged_fraction"] = float(np.mean(~np.isfinite(values) | (values > start_value)))
  return stats


def loglog_slope(steps: np.ndarray, values: np.ndarray) -> float | None:
  """Least-squares slope of log(values) against log(steps); None if a value is not finite and positive."""
  if not np.all(np.isfinite(values) & (values > 0)):
    return None
  return float(np.polyfit(np.log(steps), np.log(values), 1)[0])


# ---------------------------------------------------------------------------------------------------------
# Sweeps.

@dataclasses.dataclass(frozen=True)
class _Sweep:
  """One method on one problem: a grid of multipliers x alphas x (tuning + evaluation) seeds."""
  method: str
  alphas: tuple[float, ...]
  lr_multipliers: tuple[float, ...]
  clip_multipliers: tuple[float, ...]
  tune_seeds: int
  eval_seeds: int


def _grid(sweep: _Sweep) -> list[tuple[float, float]]:
  clips = sweep.clip_multipliers if problems.is_clipped(sweep.method) else (1.0,)
  return [(lr, clip) for lr in sweep.lr_multipliers for clip in clips]


def _run_sweep(sweep: _Sweep, problem, x0, schedules: problems.Schedules, *, noise_scale: float,
               num_steps: int, checkpoints: tuple[int, ...], seed: int, criterion: str):
  """Runs every (alpha, grid point, seed) lane at once; returns per alpha and grid point the tuning and
  evaluation results as `LaneResults` slices (arrays indexed [seed] or [seed, checkpoint])."""
  grid = _grid(sweep)
  root = jax.random.key(seed)
  # Common random numbers: every method, grid point and alpha sees the same seeds.
  tune_keys = jax.random.split(jax.random.fold_in(root, 0), sweep.tune_seeds)
  eval_keys = jax.random.split(jax.random.fold_in(root, 1), sweep.eval_seeds)
  keys = jnp.concatenate([tune_keys, eval_keys])
  num_seeds = keys.shape[0]
  alpha_ids, grid_ids, seed_ids = np.meshgrid(np.arange(len(sweep.alphas)), np.arange(len(grid)),
                                              np.arange(num_seeds), indexing="ij")
  alpha_ids, grid_ids, seed_ids = alpha_ids.ravel(), grid_ids.ravel(), seed_ids.ravel()
  grid_array = np.asarray(grid, np.float32)
  lanes = problems.Lanes(alpha=jnp.asarray(np.asarray(sweep.alphas, np.float32)[alpha_ids]),
                         lr_multiplier=jnp.asarray(grid_array[grid_ids, 0]),
                         clip_multiplier=jnp.asarray(grid_array[grid_ids, 1]),
                         key=keys[jnp.asarray(seed_ids)])
  results = problems.simulate(problem, x0, noise_scale, lanes, method=sweep.method, schedules=schedules,
                              num_steps=num_steps, checkpoints=checkpoints)
  shape = (len(sweep.alphas), len(grid), num_seeds)
  shaped = problems.LaneResults(*(r.reshape(shape + r.shape[1:]) for r in results))
  measure = shaped.final_suboptimality if criterion == "final" else shaped.min_gradient_norm
  out = {}
  for a, alpha in enumerate(sweep.alphas):
    tune_scores = [results_lib.quantile(measure[a, g, :sweep.tune_seeds], 0.9) for g in range(len(grid))]
    best = int(np.argmin(tune_scores))
    per_grid = {grid[g]: problems.LaneResults(*(r[a, g, sweep.tune_seeds:] for r in shaped))
                for g in range(len(grid))}
    out[alpha] = {"grid": per_grid, "tuned": grid[best], "tune_scores": dict(zip(grid, tune_scores))}
  return out


def _log_checkpoints(num_steps: int, count: int = 40) -> tuple[int, ...]:
  """0-based step indices, log-spaced from the first to the last step."""
  return tuple(int(i) for i in np.unique(np.geomspace(1, num_steps, count).astype(int)) - 1)


def quadratic_setup(dimension: int, condition_number: float, noise_scale: float, method: str):
  """(problem, x0, the theory's schedules, f(x0)) of the quadratic runs of `method` (CClip's threshold is
  per coordinate, the others' global)."""
  problem = problems.quadratic(dimension, condition_number)
  x0 = np.ones(dimension, np.float32)
  gradient0 = np.asarray(problem.gradient(jnp.asarray(x0)), np.float64)
  coordinatewise = method == "cclip"
  schedules = problems.Schedules(
      decaying=True, mu=1.0, offset=int(math.ceil(2 * condition_number)),
      gradient_bound=float(np.max(np.abs(gradient0)) if coordinatewise else np.linalg.norm(gradient0)),
      noise_scale=noise_scale, noise_dimension=1 if coordinatewise else dimension)
  return problem, x0, schedules, float(problem.value(jnp.asarray(x0)))


def _lr_multipliers(method: str, sgd_scale: Sequence[float], adam_scale: Sequence[float]):
  return tuple(adam_scale if problems.learning_rate_scale(method) == "adam" else sgd_scale)


# ---------------------------------------------------------------------------------------------------------
# The four experiments. Each returns (key numbers, CSV rows, data for the plots).

def _strongly_convex(config: StudyConfig):
  checkpoints = _log_checkpoints(config.num_steps)
  steps = np.asarray(checkpoints) + 1
  key_numbers, rows, curves = {}, [], {}
  for condition_number in config.condition_numbers:
    problem_name = f"quadratic_kappa{condition_number:g}"
    key_numbers[problem_name] = {}
    for method in config.methods:
      problem, x0, schedules, start_value = quadratic_setup(
          config.dimension, condition_number, config.noise_scale, method)
      lr_multipliers = (config.clip_lr_multipliers if problems.is_clipped(method) else
                        _lr_multipliers(method, config.sgd_lr_multipliers, config.adam_lr_multipliers))
      sweep = _Sweep(method, config.alphas, lr_multipliers, config.clip_multipliers, config.tune_seeds,
                     config.eval_seeds)
      swept = _run_sweep(sweep, problem, x0, schedules, noise_scale=config.noise_scale,
                         num_steps=config.num_steps, checkpoints=checkpoints, seed=config.seed,
                         criterion="final")
      for alpha, result in swept.items():
        settings = {"tuned": result["tuned"]}
        if method in problems.THEORY_METHODS:
          settings["theory"] = (1.0, 1.0)
        entry = key_numbers[problem_name].setdefault(f"{alpha:g}", {}).setdefault(method, {})
        for setting, (lr, clip) in settings.items():
          lanes = result["grid"][(lr, clip)]
          stats = seed_quantiles(lanes.final_suboptimality, start_value)
          median_curve = np.array([results_lib.quantile(lanes.checkpoint_suboptimality[:, c], 0.5)
                                   for c in range(len(checkpoints))])
          fit = steps >= max(2, config.num_steps // 10)
          stats["loglog_slope_of_median"] = loglog_slope(steps[fit], median_curve[fit])
          stats["lr_multiplier"], stats["clip_multiplier"] = lr, clip
          entry[setting] = stats
          curves[(problem_name, alpha, method, setting)] = (steps, median_curve)
          rows.append({"study": "strongly_convex", "problem": problem_name, "dimension": config.dimension,
                       "alpha": alpha, "method": method, "setting": setting,
                       "metric": "final_suboptimality", **stats})
  return key_numbers, rows, curves


def _rates(strongly_convex: dict, config: StudyConfig) -> tuple[dict, list[dict]]:
  """GClip's (and, for context, CClip's and SGD's) measured slopes beside the theory's."""
  problem_name = f"quadratic_kappa{min(config.condition_numbers):g}"
  rates, rows = {}, []
  for alpha in config.alphas:
    by_method = strongly_convex[problem_name][f"{alpha:g}"]
    theory_slope = -2.0 * (alpha - 1.0) / alpha
    rates[f"{alpha:g}"] = {
        "theory_slope": theory_slope,
        **{f"{m}_{s}_slope": stats["loglog_slope_of_median"]
           for m, settings in by_method.items() for s, stats in settings.items()}}
    rows.append({"study": "rates", "problem": problem_name, "dimension": config.dimension, "alpha": alpha,
                 "method": "gclip", "setting": "theory_prediction", "metric": "loglog_slope",
                 "median": theory_slope})
  return {"problem": problem_name, "fit_range": [max(2, config.num_steps // 10), config.num_steps],
          "by_alpha": rates}, rows


def _dimension(config: StudyConfig):
  """Clipped methods: theory step sizes, thresholds tuned over `dim_clip_multipliers`; the others: step
  sizes tuned over `dim_lr_multipliers` (Adam-scale methods: `dim_adam_lr_multipliers`). "theory" rows for
  SGD, GClip and CClip only."""
  key_numbers = {f"{alpha:g}": {} for alpha in config.dim_alphas}
  rows = []
  checkpoints = (config.dim_steps - 1,)
  for method in config.dim_methods:
    settings = ("theory", "tuned") if method in problems.THEORY_METHODS else ("tuned",)
    per_alpha = {alpha: {setting: {} for setting in settings} for alpha in config.dim_alphas}
    lr_multipliers = ((1.0,) if problems.is_clipped(method) else
                      _lr_multipliers(method, config.dim_lr_multipliers, config.dim_adam_lr_multipliers))
    for dimension in config.dims:
      problem, x0, schedules, start_value = quadratic_setup(
          dimension, min(config.condition_numbers), config.noise_scale, method)
      sweep = _Sweep(method, config.dim_alphas, lr_multipliers, config.dim_clip_multipliers,
                     config.dim_tune_seeds, config.dim_eval_seeds)
      swept = _run_sweep(sweep, problem, x0, schedules, noise_scale=config.noise_scale,
                         num_steps=config.dim_steps, checkpoints=checkpoints, seed=config.seed,
                         criterion="final")
      for alpha, result in swept.items():
        points = {"theory": (1.0, 1.0), "tuned": result["tuned"]}
        for setting in settings:
          per_coordinate = result["grid"][points[setting]].final_suboptimality / dimension
          stats = seed_quantiles(per_coordinate, start_value / dimension)
          stats["lr_multiplier"], stats["clip_multiplier"] = points[setting]
          per_alpha[alpha][setting][dimension] = stats
          rows.append({"study": "dimension", "problem": "quadratic_per_coordinate", "dimension": dimension,
                       "alpha": alpha, "method": method, "setting": setting,
                       "metric": "final_suboptimality_per_coordinate", **stats})
    for alpha in config.dim_alphas:
      entry = {}
      for setting in settings:
        by_dimension = per_alpha[alpha][setting]
        medians = np.array([by_dimension[d]["median"] for d in config.dims])
        entry[setting] = {
            "median_by_dimension": {str(d): by_dimension[d]["median"] for d in config.dims},
            "p90_by_dimension": {str(d): by_dimension[d]["p90"] for d in config.dims},
            "diverged_by_dimension": {str(d): by_dimension[d]["diverged_fraction"] for d in config.dims},
            "loglog_slope_vs_dimension": loglog_slope(np.asarray(config.dims, float), medians),
            "growth_largest_over_smallest_d": float(medians[-1] / medians[0]) if medians[0] > 0 else None,
        }
      key_numbers[f"{alpha:g}"][method] = entry
  return key_numbers, rows


def _nonconvex(config: StudyConfig):
  problem = problems.Rosenbrock(jnp.float32(100.0))
  x0 = np.array([-1.2, 1.0], np.float32)
  start_value = float(problem.value(jnp.asarray(x0)))
  gradient0 = np.asarray(problem.gradient(jnp.asarray(x0)), np.float64)
  key_numbers, rows = {}, []
  for method in config.nonconvex_methods:
    coordinatewise = method == "cclip"
    schedules = problems.Schedules(
        decaying=False,
        gradient_bound=float(np.max(np.abs(gradient0)) if coordinatewise else np.linalg.norm(gradient0)),
        noise_scale=config.noise_scale, noise_dimension=1 if coordinatewise else 2)
    sweep = _Sweep(method, config.nonconvex_alphas,
                   _lr_multipliers(method, config.nonconvex_sgd_lrs, config.nonconvex_adam_lrs),
                   config.nonconvex_clip_multipliers, config.tune_seeds, config.eval_seeds)
    swept = _run_sweep(sweep, problem, x0, schedules, noise_scale=config.noise_scale,
                       num_steps=config.nonconvex_steps, checkpoints=(config.nonconvex_steps - 1,),
                       seed=config.seed, criterion="min_gradient_norm")
    for alpha, result in swept.items():
      lanes = result["grid"][result["tuned"]]
      stats = seed_quantiles(lanes.min_gradient_norm, None)
      stats["diverged_fraction"] = float(np.mean(~np.isfinite(lanes.final_suboptimality)
                                                 | (lanes.final_suboptimality > start_value)))
      stats["learning_rate"], stats["clip_multiplier"] = result["tuned"]
      key_numbers.setdefault(f"{alpha:g}", {})[method] = stats
      rows.append({"study": "nonconvex", "problem": "rosenbrock", "dimension": 2, "alpha": alpha,
                   "method": method, "setting": "tuned", "metric": "min_gradient_norm", **stats})
  return key_numbers, rows


# ---------------------------------------------------------------------------------------------------------
# Verdict-relevant numbers, outputs.

def _rq2_headline(strongly_convex: dict, config: StudyConfig) -> dict:
  """At the heaviest tail, per quadratic: median, p90 and diverged fraction of each method and setting."""
  alpha = f"{min(config.alphas):g}"
  headline = {"alpha": min(config.alphas)}
  for problem_name, by_alpha in strongly_convex.items():
    headline[problem_name] = {f"{method}_{setting}_{q}": stats[q]
                              for method, settings in by_alpha[alpha].items()
                              for setting, stats in settings.items()
                              for q in ("median", "p90", "diverged_fraction")}
  return headline


def _rq3_headline(dimension: dict, config: StudyConfig) -> dict:
  """Per alpha: the log-log slope of the per-coordinate error against d, per method and setting, and the
  theory's GClip exponent 2/alpha - 1 (G^2/d with G = d^(1/alpha) sigma)."""
  return {f"{alpha:g}": {
      "gclip_bound_exponent_2_over_alpha_minus_1": 2.0 / alpha - 1.0,
      **{f"{m}_{s}_slope_vs_d": entry["loglog_slope_vs_dimension"]
         for m in config.dim_methods for s, entry in dimension[f"{alpha:g}"][m].items()}}
      for alpha in config.dim_alphas}


CSV_FIELDS = ("study", "problem", "dimension", "alpha", "method", "setting", "metric", "median", "p90",
              "diverged_fraction", "num_seeds", "lr_multiplier", "learning_rate", "clip_multiplier",
              "loglog_slope_of_median")


@workdir_lock.owns_output_folder
def run(out_dir: str, config) -> dict:
  """Runs the study, writes results.csv, summary.md, summary.json and PNGs to `out_dir`.

  Args:
    out_dir: output folder (created).
    config: configs/quick.py, full.py or tiny.py's `get_config()` (or a StudyConfig); recorded with the
      results, mode included.

  Returns:
    JSON-able key numbers: "strongly_convex" (per problem, alpha, method, setting: median, p90,
    diverged_fraction, slope), "rq2" (the heaviest-tail comparison of SGD, GClip and CClip), "rates"
    (measured slopes vs -2(alpha-1)/alpha), "dimension" and "rq3" (per-coordinate error vs d, slopes),
    "nonconvex" (min_k ||grad f||), "wall_s", "config", "files".
  """
  config = config if isinstance(config, StudyConfig) else StudyConfig.from_config(config)
  os.makedirs(out_dir, exist_ok=True)
  start = time.perf_counter()
  phase_seconds = {}

  def timed(name, fn):
    phase_start = time.perf_counter()
    result = fn(config)
    phase_seconds[name] = time.perf_counter() - phase_start
    return result

  strongly_convex, rows, curves = timed("strongly_convex", _strongly_convex)
  rates, rate_rows = _rates(strongly_convex, config)
  dimension, dimension_rows = timed("dimension", _dimension)
  nonconvex, nonconvex_rows = timed("nonconvex", _nonconvex)
  rows += rate_rows + dimension_rows + nonconvex_rows

  figure_names = ("final_suboptimality.png", "rates.png", "dimension.png", "nonconvex.png")
  results_lib.write_rows_csv(os.path.join(out_dir, "results.csv"), rows, CSV_FIELDS)
  results = {
      "mode": config.mode,
      "config": dataclasses.asdict(config),
      "strongly_convex": strongly_convex,
      "rq2": _rq2_headline(strongly_convex, config),
      "rates": rates,
      "dimension": dimension,
      "rq3": _rq3_headline(dimension, config),
      "nonconvex": nonconvex,
      "files": {"csv": "results.csv", "summary": "summary.md", "json": "summary.json",
                "figures": list(figure_names)},
      "phase_wall_s": phase_seconds,
  }
  results["wall_s"] = time.perf_counter() - start
  results = results_lib.to_jsonable(results)
  # The numbers are written before the figures, so a plotting failure cannot lose a long run.
  results_lib.write_json(os.path.join(out_dir, "summary.json"), results)
  results_lib.write_text(os.path.join(out_dir, "summary.md"), summary.summary_markdown(results, config))
  figures = (plots.plot_final_suboptimality(strongly_convex), plots.plot_rates(curves, rates, config.alphas),
             plots.plot_dimension(dimension, config.dims), plots.plot_nonconvex(nonconvex))
  for name, figure in zip(figure_names, figures):
    figures_lib.save_figure(figure, os.path.join(out_dir, name), dpi=110)
  return results
