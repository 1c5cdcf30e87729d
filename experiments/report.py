"""The reproduction report: verdict rules, environment capture and the Markdown/JSON/CSV writers.

Every verdict is computed from measured numbers by one of the rules below; the rule's text is printed in the
report beside the verdict so that a reader can recheck it. Three outcomes only:

- ``supported``: the measured effect goes the paper's way by more than the stated margin;
- ``not supported``: it goes the other way by more than the margin;
- ``inconclusive at this scale``: anything else, including a missing number or a failed part.
"""
from __future__ import annotations

import csv
import datetime
import importlib.metadata
import json
import math
import os
import platform
import subprocess
import sys
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

SUPPORTED = "supported"
NOT_SUPPORTED = "not supported"
INCONCLUSIVE = "inconclusive at this scale"

# Packages whose versions decide the numbers (jaxlib holds XLA; the rest build the models and data).
_PACKAGES = ("jax", "jaxlib", "optax", "flax", "chex", "orbax-checkpoint", "numpy", "scipy",
             "tokenizers", "ml_collections", "matplotlib")


def is_finite_number(value: Any) -> bool:
  """True for a real, finite int or float (bools excluded)."""
  return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def verdict_from_margin(effect: float | None, margin: float | None) -> str:
  """Verdict for a signed effect measured in the paper's favour (positive = the paper's way).

  supported if ``effect > margin``, not supported if ``effect < -margin``, inconclusive otherwise or when
  either number is missing, NaN, or the margin is infinite. An infinite effect is a valid, decisive one
  (e.g. the log-ratio of a blown-up run's error to a finite one). ``margin`` must be >= 0.
  """
  effect_is_number = isinstance(effect, (int, float)) and not isinstance(effect, bool) and not math.isnan(effect)
  if not (effect_is_number and is_finite_number(margin)):
    return INCONCLUSIVE
  if margin < 0:
    raise ValueError(f"margin must be >= 0, got {margin}")
  if effect > margin:
    return SUPPORTED
  if effect < -margin:
    return NOT_SUPPORTED
  return INCONCLUSIVE


def combine_verdicts(verdicts: Sequence[str]) -> str:
  """Overall verdict of several sub-claims: unanimous, or inconclusive."""
  if verdicts and all(v == SUPPORTED for v in verdicts):
    return SUPPORTED
  if verdicts and all(v == NOT_SUPPORTED for v in verdicts):
    return NOT_SUPPORTED
  return INCONCLUSIVE


def format_number(value: Any, digits: int = 4) -> str:
  """Compact text for a table cell: 4 significant digits, '—' for missing, 'nan'/'inf' kept visible."""
  if value is None:
    return "—"
  if isinstance(value, bool):
    return str(value)
  if isinstance(value, int):
    return str(value)
  if isinstance(value, float):
    if not math.isfinite(value):
      return str(value)
    return f"{value:.{digits}g}"
  return str(value)


def markdown_table(headers: Sequence[str], rows: Iterable[Sequence[Any]]) -> str:
  """A GitHub-flavoured Markdown table; cells go through `format_number`, pipes are escaped."""
  def cell(value):
    return format_number(value).replace("|", "\\|").replace("\n", " ")
  lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
  lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in rows]
  return "\n".join(lines)


def _git_commit() -> str | None:
  repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
  try:
    commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=repo, capture_output=True, text=True,
                            timeout=10, check=True).stdout.strip()
    dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=repo,
                           capture_output=True, text=True, timeout=10, check=True).stdout.strip()
  except (OSError, subprocess.SubprocessError):
    return None
  return commit + (" (with uncommitted changes)" if dirty else "")


def environment() -> dict[str, Any]:
  """Versions, devices and host facts that the numbers depend on (JSON-able)."""
  import jax  # Imported here so that the report's rules stay importable without initialising a backend.
  versions = {}
  for name in _PACKAGES:
    try:
      versions[name] = importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
      versions[name] = None
  devices = jax.devices()
  return {
      "python": sys.version.split()[0],
      "platform": platform.platform(),
      "cpu_count": os.cpu_count(),
      "cpu_affinity": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
      "jax_backend": jax.default_backend(),
      "devices": [f"{d.platform}:{getattr(d, 'device_kind', '?')}" for d in devices],
      "device_count": len(devices),
      "process_count": jax.process_count(),
      "xla_flags": os.environ.get("XLA_FLAGS", ""),
      "packages": versions,
      "git_commit": _git_commit(),
      "utc_time": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC"),
  }


def to_jsonable(value: Any) -> Any:
  """Numbers, arrays and NamedTuples to plain JSON types; non-finite floats become strings ('nan')."""
  if isinstance(value, Mapping):
    return {str(k): to_jsonable(v) for k, v in value.items()}
  if isinstance(value, (list, tuple)):
    return [to_jsonable(v) for v in value]
  if hasattr(value, "tolist"):  # numpy / jax arrays and scalars
    return to_jsonable(value.tolist())
  if isinstance(value, float) and not math.isfinite(value):
    return str(value)
  if value is None or isinstance(value, (str, bool, int, float)):
    return value
  return str(value)


def flatten(tree: Any, prefix: str = "") -> list[tuple[str, Any]]:
  """(dotted key, leaf) pairs of a nested dict/list, for the CSV."""
  if isinstance(tree, Mapping):
    pairs = []
    for key, value in tree.items():
      pairs += flatten(value, f"{prefix}.{key}" if prefix else str(key))
    return pairs
  if isinstance(tree, (list, tuple)) and tree and all(isinstance(v, (Mapping, list, tuple)) for v in tree):
    pairs = []
    for index, value in enumerate(tree):
      pairs += flatten(value, f"{prefix}[{index}]")
    return pairs
  return [(prefix, tree)]


def write_json(path: str, value: Any) -> None:
  with open(path, "w") as f:
    json.dump(to_jsonable(value), f, indent=2, sort_keys=False)
    f.write("\n")


def write_flat_csv(path: str, tree: Any) -> None:
  """Every number of a results tree as a ``key,value`` row."""
  with open(path, "w", newline="") as f:
    writer = csv.writer(f)
    writer.writerow(["key", "value"])
    for key, value in flatten(to_jsonable(tree)):
      writer.writerow([key, json.dumps(value) if isinstance(value, (list, dict)) else value])


# ---------------------------------------------------------------------------------------------------------
# The paper's claims (from shared/PAPER.md; the paper's exact table values are unknown, so none are quoted).

PAPER_CLAIMS = {
    "RQ1": ("Gradient noise in BERT pretraining is heavy-tailed, in ResNet/ImageNet concentrated "
            "(Gaussian-like); tuned SGD is far behind Adam on BERT but competitive on ResNet."),
    "RQ2": ("Under noise with only a bounded alpha-moment (alpha in (1, 2]) SGD can diverge, while "
            "global-norm clipping (GClip) converges, at rate O(k^(-2(alpha-1)/alpha)) when strongly convex."),
    "RQ3": ("With a per-coordinate alpha-moment bound, coordinate-wise clipping (CClip) removes the "
            "dimension dependence that GClip has."),
    "RQ4": ("ACClip beats Adam in BERT pretraining (lower MLM loss, higher MLM accuracy) and in SQuAD v1.1 "
            "fine-tuning (higher EM/F1); the margins were small."),
}

RQ_TITLES = {
    "RQ1": "RQ1: is the gradient noise heavy-tailed for BERT and not for ResNet?",
    "RQ2": "RQ2: does clipping converge where SGD fails under heavy-tailed noise?",
    "RQ3": "RQ3: does coordinate-wise clipping remove the dimension dependence?",
    "RQ4": "RQ4: does ACClip beat Adam on BERT?",
}


def verdict_row(measure: str, ours: str, paper: str, verdict: str, rule: str) -> dict[str, str]:
  """One row of a research question's table: what was measured, our number, the paper's, the verdict."""
  return {"measure": measure, "ours": ours, "paper": paper, "verdict": verdict, "rule": rule}


def format_seed_statistics(stats: Mapping[str, Any] | None, with_range: bool = False) -> str:
  """'mean ± std (n=N)' or 'mean ± std [min, max]' of a seed_statistics dict; '—' when empty."""
  if not stats or stats.get("mean") is None:
    return "—"
  text = format_number(stats["mean"])
  if stats.get("std") is not None:
    text += f" ± {format_number(stats['std'], 2)}"
  if with_range:
    return text + f" [{format_number(stats['min'])}, {format_number(stats['max'])}]"
  return text + f" (n={stats.get('n')})"


def _larger_std(*stats: Mapping[str, Any] | None) -> float | None:
  stds = [s.get("std") for s in stats if s]
  if len(stds) != len(stats) or any(not is_finite_number(s) for s in stds):
    return None
  return max(stds)


def _seed_comparison(name: str, summary: Mapping[str, Any], metric: str, lower_is_better: bool,
                     baseline: str = "adam") -> dict[str, str]:
  optimizers = summary.get("optimizers", {})
  ours, base = optimizers.get(name, {}).get(metric), optimizers.get(baseline, {}).get(metric)
  effect = None
  if ours and base and is_finite_number(ours.get("mean")) and is_finite_number(base.get("mean")):
    effect = (base["mean"] - ours["mean"]) if lower_is_better else (ours["mean"] - base["mean"])
  margin = _larger_std(ours, base)
  better = "lower" if lower_is_better else "higher"
  label = {"eval_loss": "held-out MLM loss", "eval_accuracy": "held-out MLM accuracy"}.get(metric, metric)
  return verdict_row(f"{label}, {name} vs {baseline} (mean ± std over seeds)",
              f"{name} {format_seed_statistics(ours)} vs {baseline} {format_seed_statistics(base)}",
              f"{name} {better}",
              verdict_from_margin(effect, margin),
              f"supported if {name} is {better} than {baseline} by more than the larger seed std of the two; "
              f"not supported if {baseline} wins by that much; else inconclusive (one seed: inconclusive)")


# A single fine-tuning run per pair has no seed spread; one F1/EM point is below the seed-to-seed spread
# usually seen on SQuAD, so smaller gaps are not called.
SQUAD_MARGIN_POINTS = 1.0


def assess_rq4(part: Mapping[str, Any]) -> dict[str, Any]:
  """RQ4 from the BERT comparison's summary (see `experiments.bert_comparison.run`)."""
  summary = part.get("summary", {}) if part.get("status") == "ok" else {}
  rows = [
      _seed_comparison("acclip", summary, "eval_loss", lower_is_better=True),
      _seed_comparison("acclip", summary, "eval_accuracy", lower_is_better=False),
  ]
  informative = [
      _seed_comparison("acclip_ports", summary, "eval_loss", lower_is_better=True),
      _seed_comparison("acclip_ports", summary, "eval_accuracy", lower_is_better=False),
  ]
  finetune = summary.get("finetune", {})
  if finetune.get("status") == "ok":
    runs = finetune.get("runs", {})
    for metric in ("exact_match", "f1"):
      ours = runs.get("acclip_pretrained/acclip_finetuned", {}).get(metric)
      base = runs.get("adam_pretrained/adam_finetuned", {}).get(metric)
      effect = ours - base if is_finite_number(ours) and is_finite_number(base) else None
      rows.append(verdict_row(f"SQuAD {metric} (ACClip pre+fine-tuned vs Adam)",
                       f"{format_number(ours)} vs {format_number(base)}", "ACClip higher",
                       verdict_from_margin(effect, SQUAD_MARGIN_POINTS),
                       f"one run each: supported if ACClip is higher by more than {SQUAD_MARGIN_POINTS} point"))
  overall = combine_verdicts([r["verdict"] for r in rows]) if summary else INCONCLUSIVE
  return {"rows": rows + [dict(r, measure=r["measure"] + " [not in the overall verdict]") for r in informative],
          "verdict": overall,
          "overall_rule": "overall: supported only if every row on the paper's ACClip is supported, "
                          "not supported only if every one is not supported, else inconclusive"}


# ---------------------------------------------------------------------------------------------------------
# The Markdown report.

PART_RQS = {"noise": ("RQ1",), "synthetic": ("RQ2", "RQ3"), "bert": ("RQ4",)}


def assess_all(parts: Mapping[str, Mapping[str, Any]]) -> dict[str, dict[str, Any]]:
  """The verdict of every research question from the parts' results (missing part: inconclusive)."""
  assessors = {"RQ1": ("noise", assess_rq1), "RQ2": ("synthetic", assess_rq2),
               "RQ3": ("synthetic", assess_rq3), "RQ4": ("bert", assess_rq4)}
  assessed = {}
  for rq, (part_name, assess) in assessors.items():
    part = parts.get(part_name, {"status": "not run"})
    result = assess(part) if part.get("status") == "ok" else {
        "rows": [], "verdict": INCONCLUSIVE,
        "overall_rule": f"the {part_name} part {part.get('status', 'was not run')}: no numbers to judge"}
    assessed[rq] = dict(result, part=part_name, paper=PAPER_CLAIMS[rq])
  return assessed


def _figures(out_dir: str, part_dir: str, keywords: Sequence[str] = ()) -> list[str]:
  """PNG files under ``out_dir/part_dir`` (relative paths), those whose names hold a keyword if given."""
  root = os.path.join(out_dir, part_dir)
  found = []
  for folder, _, files in os.walk(root):
    for name in sorted(files):
      if name.endswith(".png") and (not keywords or any(k in name for k in keywords)):
        found.append(os.path.relpath(os.path.join(folder, name), out_dir))
  return sorted(found)


def _figure_lines(paths: Sequence[str]) -> list[str]:
  return [f"![{os.path.splitext(os.path.basename(p))[0]}]({p})" for p in paths] or ["(no figure was written)"]


def write_report(out_dir: str, results: Mapping[str, Any],
                 figure_keywords: Mapping[str, Sequence[str]] | None = None,
                 extra_sections: Mapping[str, Sequence[str]] | None = None) -> str:
  """Writes ``out_dir/report.md`` from a results dict (see `experiments.reproduce.run`); returns its path.

  Args:
    out_dir: the run's output folder; figures are linked relative to it.
    results: the reproduction's results, with ``research_questions`` from `assess_all`.
    figure_keywords: RQ -> substrings that select that RQ's figures among its part's PNGs (all if absent).
    extra_sections: RQ -> Markdown lines appended to that RQ's section (tables the part adds).
  """
  figure_keywords = figure_keywords or {}
  extra_sections = extra_sections or {}
  rqs = results["research_questions"]
  parts = results["parts"]
  mode = "quick" if results.get("quick") else "full"
  lines = [
      '# Reproducing "Why are Adaptive Methods Good for Attention Models?" at small scale',
      "",
      f"Mode: **{mode}**. Written {results['environment']['utc_time']}; wall time of the parts "
      f"{format_number(sum(p.get('wall_s', 0.0) for p in parts.values()) / 60, 3)} min "
      f"(this invocation: {format_number(results['wall_s'] / 60, 3)} min). "
      f"Command: `{results.get('command') or '(called from Python)'}`.",
      "",
      "Verdicts are computed from the numbers below by the stated rules, never set by hand: **supported** "
      "(the effect goes the paper's way by more than the margin), **not supported** (the other way by more "
      "than the margin) or **inconclusive at this scale**.",
      "",
      "## Summary",
      "",
      markdown_table(["question", "paper's claim", "our verdict", "from"],
                     [[rq, rqs[rq]["paper"], f"**{rqs[rq]['verdict']}**", f"{rqs[rq]['part']} part"]
                      for rq in sorted(rqs)]),
      "",
  ]
  for rq in sorted(rqs):
    assessed = rqs[rq]
    part = parts.get(assessed["part"], {})
    lines += [f"## {RQ_TITLES[rq]}", "", f"Paper: {assessed['paper']}", "",
              f"Part: `{assessed['part']}` ({part.get('status', 'not run')}, "
              f"{format_number(part.get('wall_s', float('nan')) / 60, 3)} min, output in `{part.get('dir', assessed['part'])}/`).",
              ""]
    data = part.get("summary", {}).get("data_description", [])
    if data:  # what the part loaded, as it recorded it (never a description typed for the mode)
      lines += ["Data:", ""] + [f"- {sentence}" for sentence in data] + [""]
    if assessed["rows"]:
      lines += [markdown_table(["measure", "ours", "paper", "verdict"],
                               [[r["measure"], r["ours"], r["paper"],
                                 r["verdict"] if r["verdict"] == "—" else f"**{r['verdict']}**"]
                                for r in assessed["rows"]]), "", "Rules:", ""]
      lines += [f"- {r['measure']}: {r['rule']}" for r in assessed["rows"]]
    lines += [f"- {assessed['overall_rule']}", "", f"**Verdict: {assessed['verdict']}.**", ""]
    lines += list(extra_sections.get(rq, ()))
    lines += ["", "Figures:", ""]
    lines += _figure_lines(_figures(out_dir, part.get("dir", assessed["part"]), figure_keywords.get(rq, ())))
    lines += [""]
  failed = {name: p for name, p in parts.items() if p.get("status") != "ok"}
  if failed:
    lines += ["## Failed parts", ""]
    for name, part in failed.items():
      lines += [f"### {name}", "", "```", (part.get("error") or part.get("status", "")).strip()[-3000:], "```", ""]
  lines += list(extra_sections.get("appendix", ()))
  lines += _environment_lines(results)
  path = os.path.join(out_dir, "report.md")
  with open(path, "w") as f:
    f.write("\n".join(lines).rstrip() + "\n")
  return path


def _environment_lines(results: Mapping[str, Any]) -> list[str]:
  env = results["environment"]
  packages = ", ".join(f"{k} {v}" for k, v in env["packages"].items() if v)
  walls = [[name, part.get("status"), format_number(part.get("wall_s", float("nan")) / 60, 3),
            format_number(part.get("cpu_s"), 3), format_number(part.get("load_average_end"), 3)]
           for name, part in results["parts"].items()]
  return [
      "## Environment", "",
      f"- Python {env['python']} on {env['platform']}; {env['cpu_count']} CPUs "
      f"({env['cpu_affinity']} usable); JAX backend `{env['jax_backend']}`, {env['device_count']} device(s): "
      f"{', '.join(sorted(set(env['devices'])))}; {env['process_count']} process(es).",
      f"- Packages: {packages}.",
      f"- Code: git commit {env['git_commit'] or 'unknown'}.",
      f"- XLA_FLAGS: `{env['xla_flags'] or '(none)'}`.",
      "",
      markdown_table(["part", "status", "wall time (min)", "CPU time of this process (s)",
                      "1-min load average at its end"], walls),
      "",
      f"The machine has {env['cpu_count']} CPUs; a load average above that means other programs shared "
      "them, and the wall times above are longer than on an idle machine.",
      "",
  ]


# ---------------------------------------------------------------------------------------------------------
# RQ1 to RQ3 from the studies' key numbers (experiments.noise.study.rq1_numbers,
# experiments.synthetic.study: 'rq2', 'rates', 'rq3').

SLOPE_MARGIN = 0.1  # log-log slopes
FACTOR_MARGIN = 2.0  # error ratios: a factor of 2 either way


def finite_or_none(value: Any) -> float | None:
  """The value as a float when it is a finite number, else None."""
  return float(value) if is_finite_number(value) else None


def _log10_ratio(worse: Any, better: Any) -> float | None:
  """log10(worse / better) of two errors; a missing (blown-up, stored as None/inf) value is +inf error."""
  def as_error(value):
    if value is None or (isinstance(value, float) and math.isinf(value)):
      return math.inf
    return float(value) if is_finite_number(value) and value > 0 else None
  worse, better = as_error(worse), as_error(better)
  if worse is None or better is None or (math.isinf(worse) and math.isinf(better)):
    return None
  if math.isinf(worse):
    return math.inf
  if math.isinf(better):
    return -math.inf
  return math.log10(worse / better)


def assess_rq1(part: Mapping[str, Any]) -> dict[str, Any]:
  """RQ1 from the noise study's ``rq1`` numbers, by the study's own rule (`experiments.noise.verdict`)."""
  from experiments.noise import verdict  # pylint: disable=g-import-not-at-top  (it imports this module)
  return verdict.assess_rq1(part.get("summary", {}).get("rq1", {}))


def context_row(row: Mapping[str, str]) -> dict[str, str]:
  """The row marked as context: shown, but not part of the overall verdict."""
  return dict(row, measure=row["measure"] + " [not in the overall verdict]")


def assess_rq2(part: Mapping[str, Any]) -> dict[str, Any]:
  """RQ2 from the synthetic study: SGD vs GClip at the heaviest tail, and GClip's measured rates."""
  summary = part.get("summary", {})
  headline = summary.get("rq2", {})
  alpha = headline.get("alpha")
  rows, informative = [], []
  for problem, numbers in headline.items():
    if not isinstance(numbers, Mapping):
      continue
    effect = _log10_ratio(numbers.get("sgd_tuned_p90"), numbers.get("gclip_tuned_p90"))
    rows.append(verdict_row(
        f"90th percentile of final f - f*, tuned SGD vs tuned GClip, alpha = {format_number(alpha)}, {problem}",
        f"SGD {format_number(numbers.get('sgd_tuned_p90'))} vs GClip {format_number(numbers.get('gclip_tuned_p90'))}"
        " (— = blew up)", "GClip converges, SGD can diverge",
        verdict_from_margin(effect, math.log10(FACTOR_MARGIN)),
        f"supported if SGD's p90 exceeds GClip's by more than a factor {FACTOR_MARGIN}; not supported if "
        f"GClip's exceeds SGD's by that factor"))
    informative.append(verdict_row(
        f"fraction of diverged runs, theory schedules, SGD vs GClip, {problem}",
        f"SGD {format_number(numbers.get('sgd_theory_diverged_fraction'))} vs GClip "
        f"{format_number(numbers.get('gclip_theory_diverged_fraction'))}", "SGD can diverge",
        verdict_from_margin(
            numbers["sgd_theory_diverged_fraction"] - numbers["gclip_theory_diverged_fraction"]
            if is_finite_number(numbers.get("sgd_theory_diverged_fraction"))
            and is_finite_number(numbers.get("gclip_theory_diverged_fraction")) else None, 0.05),
        "supported if SGD diverges in more than 5 percentage points more runs than GClip"))
  rates = summary.get("rates", {}).get("by_alpha", {})
  for alpha_key, numbers in rates.items():
    theory, measured = finite_or_none(numbers.get("theory_slope")), finite_or_none(numbers.get("gclip_theory_slope"))
    if theory is None or theory == 0:  # alpha = 2: the bound gives no rate to check against
      continue
    rows.append(verdict_row(
        f"GClip (theory schedule) log-log slope of median f - f* vs k, alpha = {alpha_key}",
        format_number(measured), f"at least as steep as -2(alpha-1)/alpha = {format_number(theory)}",
        # The theory's rate is a bound: matching it or beating it supports the claim.
        verdict_from_margin(theory + 1.5 * SLOPE_MARGIN - measured if measured is not None else None,
                            SLOPE_MARGIN / 2),
        f"supported if the measured slope is below the theory's + {SLOPE_MARGIN} (as fast as the bound, or "
        f"faster); not supported if above the theory's + {2 * SLOPE_MARGIN:g}; inconclusive in between"))
  return {"rows": rows + [context_row(r) for r in informative],
          "verdict": combine_verdicts([r["verdict"] for r in rows]),
          "overall_rule": "overall: unanimous verdict of the p90 and rate rows, else inconclusive"}


def assess_rq3(part: Mapping[str, Any]) -> dict[str, Any]:
  """RQ3 from the synthetic study: slope of the per-coordinate error against d, GClip vs CClip."""
  by_alpha = part.get("summary", {}).get("rq3", {})
  rows, informative = [], []
  for alpha_key, numbers in by_alpha.items():
    gclip, cclip = finite_or_none(numbers.get("gclip_tuned_slope_vs_d")), finite_or_none(numbers.get("cclip_tuned_slope_vs_d"))
    # Where GClip's bound predicts no growth in d (alpha = 2: exponent 2/alpha - 1 = 0), both methods are
    # expected flat: that row is a control, not evidence for or against the claim.
    is_control = finite_or_none(numbers.get("gclip_bound_exponent_2_over_alpha_minus_1")) == 0
    (informative if is_control else rows).append(verdict_row(
        f"slope of log per-coordinate error vs log d, tuned, alpha = {alpha_key}",
        f"GClip {format_number(gclip)} vs CClip {format_number(cclip)}",
        "both flat (control: the bound predicts no growth)" if is_control
        else "GClip's grows with d, CClip's does not",
        verdict_from_margin(gclip - cclip if gclip is not None and cclip is not None else None, SLOPE_MARGIN),
        f"supported if GClip's slope exceeds CClip's by more than {SLOPE_MARGIN}; not supported if CClip's "
        f"exceeds GClip's by that much"))
    rows.append(verdict_row(
        f"CClip's per-coordinate error flat in d, alpha = {alpha_key}", format_number(cclip), "slope about 0",
        verdict_from_margin(2 * SLOPE_MARGIN - abs(cclip) if cclip is not None else None, SLOPE_MARGIN),
        f"supported if |slope| < {SLOPE_MARGIN}; not supported if |slope| > {3 * SLOPE_MARGIN:g}"))
    acclip = finite_or_none(numbers.get("acclip_tuned_slope_vs_d"))
    if "acclip_tuned_slope_vs_d" in numbers:
      informative.append(verdict_row(
          f"slope vs d, tuned, alpha = {alpha_key}, GClip vs ACClip", f"GClip {format_number(gclip)} vs "
          f"ACClip {format_number(acclip)}", "ACClip flat like CClip",
          verdict_from_margin(gclip - acclip if gclip is not None and acclip is not None else None, SLOPE_MARGIN),
          f"supported if GClip's slope exceeds ACClip's by more than {SLOPE_MARGIN}"))
    for method in ("gclip", "cclip"):
      key = f"{method}_theory_slope_vs_d"
      if key in numbers:
        informative.append(verdict_row(f"{method} slope vs d with the theory's parameters, alpha = {alpha_key}",
                                format_number(finite_or_none(numbers[key])), "context", "—",
                                "context only (no verdict)"))
  return {"rows": rows + [context_row(r) for r in informative],
          "verdict": combine_verdicts([r["verdict"] for r in rows]),
          "overall_rule": "overall: unanimous verdict of the GClip-vs-CClip and CClip-flatness rows, else "
                          "inconclusive"}
