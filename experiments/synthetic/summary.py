"""The synthetic study's summary.md (Markdown tables of the key numbers `study.run` returns)."""
from __future__ import annotations

from experiments.common.results import format_number
from experiments.synthetic import problems


def summary_markdown(results: dict, config) -> str:
  """summary.md of a finished study: its key numbers and tables (`config`: the study's StudyConfig)."""
  lines = ["# Synthetic study (RQ2, RQ3)", "",
           f"Mode: {results['mode']}; wall time {results['wall_s']:.0f} s; "
           f"noise: symmetric alpha-stable, scale {config.noise_scale}, independent per coordinate. "
           f"Seeds: {config.eval_seeds} evaluation, {config.tune_seeds} tuning (separate). "
           "diverged = f(x_K) > f(x_0) or not finite; — = not finite (a blown-up run).", ""]
  lines += ["## Key numbers", ""]
  headline = results["rq2"]
  for problem_name, numbers in headline.items():
    if isinstance(numbers, dict):
      lines.append(
          f"- RQ2, {problem_name}, alpha = {headline['alpha']}: p90 of final f - f*, tuned: "
          + ", ".join(f"{m} {format_number(numbers.get(f'{m}_tuned_p90'), 3)}" for m in config.methods
                      if f"{m}_tuned_p90" in numbers)
          + "; diverged fraction, theory schedules: "
          + ", ".join(f"{m} {format_number(numbers.get(f'{m}_theory_diverged_fraction'), 3)}" for m in config.methods
                      if f"{m}_theory_diverged_fraction" in numbers) + ".")
  for alpha, numbers in results["rq3"].items():
    slopes = ", ".join(f"{k.removesuffix('_slope_vs_d')} {format_number(v, 3)}" for k, v in numbers.items()
                       if k.endswith("_slope_vs_d"))
    lines.append(f"- RQ3, alpha = {alpha}: log-log slope of per-coordinate error vs d: {slopes} "
                 f"(GClip's bound predicts {format_number(numbers['gclip_bound_exponent_2_over_alpha_minus_1'], 3)}).")
  lines.append("")
  for problem_name, by_alpha in results["strongly_convex"].items():
    lines += [f"## {problem_name}, d = {config.dimension}, K = {config.num_steps}: final f - f*", "",
              "| alpha | method | setting | median | p90 | diverged |", "|---|---|---|---|---|---|"]
    for alpha, methods in by_alpha.items():
      for method, settings in methods.items():
        for setting, s in settings.items():
          lines.append(f"| {alpha} | {method} | {setting} | {format_number(s['median'], 3)} | {format_number(s['p90'], 3)} | "
                       f"{format_number(s['diverged_fraction'], 3)} |")
    lines.append("")
  rates = results["rates"]
  lines += [f"## Rates on {rates['problem']}: log-log slope of the median f - f* over k in "
            f"{rates['fit_range']}", "", "| alpha | theory -2(a-1)/a | GClip theory | GClip tuned | "
            "CClip theory | SGD theory |", "|---|---|---|---|---|---|"]
  for alpha, r in rates["by_alpha"].items():
    lines.append(f"| {alpha} | {format_number(r['theory_slope'], 3)} | {format_number(r.get('gclip_theory_slope'), 3)} | "
                 f"{format_number(r.get('gclip_tuned_slope'), 3)} | {format_number(r.get('cclip_theory_slope'), 3)} | "
                 f"{format_number(r.get('sgd_theory_slope'), 3)} |")
  lines += ["", f"## Dimension (RQ3): median per-coordinate f - f* after {config.dim_steps} steps", "",
            "| alpha | method | setting | " + " | ".join(f"d={d}" for d in config.dims)
            + " | slope vs d |", "|---|---|---|" + "---|" * (len(config.dims) + 1)]
  for alpha, methods in results["dimension"].items():
    for method, settings in methods.items():
      for setting, s in settings.items():
        medians = " | ".join(format_number(s["median_by_dimension"][str(d)], 3) for d in config.dims)
        lines.append(f"| {alpha} | {method} | {setting} | {medians} | "
                     f"{format_number(s['loglog_slope_vs_dimension'], 3)} |")
  lines += ["", "The bound-based prediction for GClip's per-coordinate error grows like d^(2/alpha - 1); "
            "CClip's bound does not depend on d.", "",
            f"## Non-convex: Rosenbrock, K = {config.nonconvex_steps}, tuned constant steps: "
            "min_k ||grad f(x_k)||", "", "| alpha | method | median | p90 | diverged | lr | clip x bound |",
            "|---|---|---|---|---|---|---|"]
  for alpha, methods in results["nonconvex"].items():
    for method, s in methods.items():
      lines.append(f"| {alpha} | {method} | {format_number(s['median'], 3)} | {format_number(s['p90'], 3)} | "
                   f"{format_number(s['diverged_fraction'], 3)} | {format_number(s['learning_rate'], 3)} | "
                   f"{format_number(s['clip_multiplier'], 3) if problems.is_clipped(method) else '—'} |")
  lines += ["", "Figures: " + ", ".join(results["files"]["figures"]), ""]
  return "\n".join(lines)
