"""One command reproduces the paper at small scale and writes a report.

    python -m experiments.reproduce --out DIR [--quick] [--squad-dir D] [--parts synthetic,noise,bert]
        [--weight-decay W] [--optimizers adam,acclip,...]

runs, in order, the synthetic study (RQ2, RQ3; `experiments.synthetic.study.run`), the gradient-noise study
(RQ1; `experiments.noise.study.run`) and the BERT optimizer comparison (RQ4; `experiments.bert_comparison`),
each in its own folder under DIR, then writes

    DIR/report.md       one table per research question with the paper's claim, our numbers and a verdict
                        computed by the rules of `experiments.report`, the figures, environment and commands;
    DIR/results.json    every number of the report, the settings and seeds, wall times;
    DIR/results.csv     the same numbers flattened to ``key,value`` rows.

A part that raises is recorded (traceback in results.json, "failed" in the report) and the others still run;
the exit status is then 1. ``--parts`` reruns only the named parts and keeps the other parts' results from
an earlier DIR/results.json, so one part can be redone without the rest; ``--report-only`` reruns nothing
and rebuilds the report and verdicts from DIR/results.json. ``--weight-decay`` and ``--optimizers`` change
the BERT comparison: one weight decay for every optimizer (e.g. 0, to take decay out of the comparison) and
the optimizers run.
"""
from __future__ import annotations

import argparse
import dataclasses
import importlib
import json
import os
import sys
import time
import traceback
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from experiments import bert_comparison
from experiments import report

PARTS = ("synthetic", "noise", "bert")


@dataclasses.dataclass(frozen=True)
class ReproductionSettings:
  """What each part runs. `for_mode` gives the real settings; tests pass smaller ones.

  Attributes:
    quick: whether the quick sizes are used (recorded in the report).
    synthetic: out_dir -> summary dict of the synthetic study.
    noise: out_dir -> summary dict of the noise study.
    bert: the optimizer comparison's sizes, grids and seeds.
  """
  quick: bool
  synthetic: Callable[[str], Mapping[str, Any]]
  noise: Callable[[str], Mapping[str, Any]]
  bert: bert_comparison.ComparisonSettings

  @classmethod
  def for_mode(cls, quick: bool, weight_decay: float | None = None,
               optimizers: Sequence[str] | None = None) -> "ReproductionSettings":
    """The quick or full settings; ``weight_decay`` and ``optimizers`` go to the BERT comparison
    (`bert_comparison.ComparisonSettings.for_mode`)."""
    def synthetic(out_dir):
      from experiments.synthetic import study
      return study.run(out_dir, quick=quick)

    def noise(out_dir):
      from experiments.noise import study
      return study.run(out_dir, quick=quick)

    return cls(quick=quick, synthetic=synthetic, noise=noise,
               bert=bert_comparison.ComparisonSettings.for_mode(quick, weight_decay, optimizers))


def _run_part(name: str, run_fn: Callable[[str], Mapping[str, Any]], part_dir: str) -> dict[str, Any]:
  os.makedirs(part_dir, exist_ok=True)
  print(f"[reproduce] {name}: starting, output in {part_dir}", flush=True)
  start, cpu_start = time.perf_counter(), time.process_time()
  try:
    summary, status, error = dict(run_fn(part_dir)), "ok", None
  except Exception:  # pylint: disable=broad-except  (one failed part must not cost the others)
    summary, status, error = {}, "failed", traceback.format_exc()
    print(error, file=sys.stderr, flush=True)
  wall_s = time.perf_counter() - start
  cpu_s = time.process_time() - cpu_start
  print(f"[reproduce] {name}: {status} in {wall_s:.1f} s", flush=True)
  return {"status": status, "wall_s": wall_s, "cpu_s": cpu_s, "dir": os.path.basename(part_dir),
          "summary": summary, "error": error,
          # Other programs on the machine slow a part down; the 1-minute load average at its end says so.
          "load_average_end": os.getloadavg()[0] if hasattr(os, "getloadavg") else None}


def run(out_dir: str, quick: bool = False, squad_dir: str | None = None,
        parts: Sequence[str] = PARTS, settings: ReproductionSettings | None = None,
        command: str | None = None) -> dict[str, Any]:
  """Runs the named parts into ``out_dir`` and writes report.md, results.json and results.csv there.

  Args:
    out_dir: output folder (created).
    quick: the quick sizes (used only when ``settings`` is None).
    squad_dir: a folder with SQuAD v1.1 ``train-v1.1.json`` and ``dev-v1.1.json``; None skips fine-tuning.
    parts: a subset of ``PARTS``; the others keep their results from an earlier ``out_dir/results.json``.
      Empty: rebuild report.md and the verdicts from that file with the current rules, running nothing.
    settings: what to run; default ``ReproductionSettings.for_mode(quick)``.
    command: the command line that started the run, recorded in the report.

  Returns:
    The results dict that was written to results.json.

  Raises:
    ValueError: an unknown part name.
    FileNotFoundError: ``squad_dir`` or one of its two files is missing; no results.json to rebuild from.
  """
  unknown = [p for p in parts if p not in PARTS]
  if unknown:
    raise ValueError(f"parts={list(parts)!r}: each must be one of {', '.join(PARTS)}")
  if squad_dir is not None:
    bert_comparison.squad_files(squad_dir)  # fail before hours of pretraining, not after
  results_path = os.path.join(out_dir, "results.json")
  previous, previous_results = {}, {}
  if set(parts) != set(PARTS) and os.path.exists(results_path):
    with open(results_path) as f:
      previous_results = json.load(f)
    previous = previous_results.get("parts", {})
    if not parts:  # report only: the mode, settings and command are those that produced the numbers
      command = previous_results.get("command") or command
      quick = bool(previous_results.get("quick", quick))
      settings = _recorded_settings(previous_results, quick)
  elif not parts:
    raise FileNotFoundError(f"{results_path} does not exist: nothing to rebuild the report from")
  settings = settings or ReproductionSettings.for_mode(quick)
  os.makedirs(out_dir, exist_ok=True)

  start = time.perf_counter()
  runners = {
      "synthetic": settings.synthetic,
      "noise": settings.noise,
      "bert": lambda part_dir: bert_comparison.run(part_dir, settings.bert, squad_dir=squad_dir),
  }
  part_results = {}
  for name in PARTS:
    if name in parts:
      part_results[name] = _run_part(name, runners[name], os.path.join(out_dir, name))
    elif name in previous:
      part_results[name] = previous[name]
  results = {
      "command": command,
      "quick": settings.quick,
      "squad_dir": squad_dir,
      "parts_run": list(parts),
      "wall_s": time.perf_counter() - start,
      # Report only: the environment that produced the numbers, not the one that re-read them.
      "environment": previous_results["environment"] if not parts else report.environment(),
      "bert_settings": dataclasses.asdict(settings.bert),
      "parts": part_results,
  }
  results["research_questions"] = report.assess_all(part_results)
  report.write_json(results_path, results)
  report.write_flat_csv(os.path.join(out_dir, "results.csv"), results)
  report.write_report(out_dir, results, figure_keywords=FIGURE_KEYWORDS,
                      extra_sections=_extra_sections(out_dir, results, settings))
  return results


def _recorded_settings(previous_results: Mapping[str, Any], quick: bool) -> ReproductionSettings:
  """The settings a results.json was made with (for --report-only: flags given now change nothing)."""
  stored = previous_results.get("bert_settings")
  bert = (bert_comparison.ComparisonSettings.from_dict(stored) if stored
          else bert_comparison.ComparisonSettings.for_mode(quick))

  def not_rerun(out_dir):
    raise RuntimeError(f"--report-only runs nothing ({out_dir})")

  return ReproductionSettings(quick=quick, synthetic=not_rerun, noise=not_rerun, bert=bert)


# Which of the synthetic study's figures back which question (the noise and BERT parts: all of theirs).
FIGURE_KEYWORDS = {"RQ2": ("final_suboptimality", "rates", "nonconvex"), "RQ3": ("dimension",)}


def _mode_flag(quick: bool) -> str:
  return " --quick" if quick else ""


def _comparison_flags(bert: bert_comparison.ComparisonSettings) -> str:
  """The --weight-decay and --optimizers flags that give the BERT comparison ``bert``."""
  flags = ""
  if "weight_decay" in bert.overrides:
    flags += f" --weight-decay {bert.overrides['weight_decay']:g}"
  if tuple(bert.learning_rates) != bert_comparison.COMPARED_OPTIMIZERS:
    flags += f" --optimizers {','.join(bert.learning_rates)}"
  return flags


def _config_differences(module_name: str) -> str:
  """'field: quick value (full value)' for every field the study's quick config changes."""
  try:
    module = importlib.import_module(module_name)
    quick, full = dataclasses.asdict(module.quick_config()), dataclasses.asdict(module.full_config())
  except (ImportError, AttributeError) as error:
    return f"(could not read {module_name}: {error})"
  changed = [f"{name} {quick[name]} (full: {full[name]})" for name in quick if quick[name] != full[name]]
  return "; ".join(changed) or "nothing"


def _extra_sections(out_dir: str, results: Mapping[str, Any],
                    settings: ReproductionSettings) -> dict[str, list[str]]:
  sections = {}
  bert = results["parts"].get("bert", {})
  if bert.get("status") == "ok":
    sections["RQ4"] = bert_comparison.report_lines(bert["summary"])
  flag = _mode_flag(settings.quick)
  bert_flags = flag + _comparison_flags(settings.bert)
  commands = [
      "## Commands", "",
      "Everything, as this report was made (add `--squad-dir D` with SQuAD v1.1 train-v1.1.json and "
      "dev-v1.1.json to fine-tune):", "",
      f"    python -m experiments.reproduce --out {out_dir}{bert_flags}", "",
      "One part at a time (each writes its own folder; the last line rewrites this report with the other "
      "parts' results kept):", "",
      f"    python -m experiments.synthetic --out {os.path.join(out_dir, 'synthetic')}{flag}",
      f"    python -m experiments.noise --out {os.path.join(out_dir, 'noise')}{flag}",
      f"    python -m experiments.reproduce --out {out_dir} --parts bert{bert_flags}",
      "",
  ]
  best = bert.get("summary", {}).get("optimizers", {}).get("acclip", {}) if bert.get("status") == "ok" else {}
  if best.get("best_learning_rate") is not None:
    commands += ["A single pre-training run of the comparison (here ACClip at its best learning rate, first "
                 "seed):", "",
                 "    " + bert_comparison.single_run_command(
                     settings.bert, "acclip", best["best_learning_rate"], best["seeds"][0],
                     os.path.join(out_dir, "bert", "runs", "acclip_rerun")), ""]
  modes = ["## Quick and full modes", "",
           f"This run used the **{'quick' if settings.quick else 'full'}** mode. What `--quick` changes:", "",
           f"- synthetic study: {_config_differences('experiments.synthetic.study')}.",
           f"- noise study: {_config_differences('experiments.noise.study')}.",
           f"- BERT comparison, quick: {bert_comparison.ComparisonSettings.for_mode(True).description}. "
           f"Full: {bert_comparison.ComparisonSettings.for_mode(False).description}.",
           "",
           "Expected time of the full mode: BERT comparison "
           f"{bert_comparison.FULL_MODE_EXPECTED_TIME}; the synthetic and noise studies: see their "
           "documentation (`experiments/synthetic/study.py`, `experiments/noise/study.py`). The quick mode "
           "is budgeted at 15 minutes on 2 CPU cores; this run's wall times are in the table below.", ""]
  sections["appendix"] = commands + modes
  return sections


def main(argv: Sequence[str] | None = None) -> int:
  parser = argparse.ArgumentParser(prog="python -m experiments.reproduce", description=__doc__.split("\n")[0])
  parser.add_argument("--out", required=True, help="output folder for report.md, results and figures")
  parser.add_argument("--quick", action="store_true",
                      help="small sizes: about 15 minutes on 2 CPU cores (the report lists what shrank)")
  parser.add_argument("--squad-dir", default=None,
                      help="folder with SQuAD v1.1 train-v1.1.json and dev-v1.1.json; omitted: no fine-tuning")
  parser.add_argument("--parts", default=",".join(PARTS),
                      help=f"comma-separated subset of {','.join(PARTS)} (others kept from an earlier run)")
  parser.add_argument("--report-only", action="store_true",
                      help="rebuild report.md and the verdicts from DIR/results.json without running anything")
  parser.add_argument("--weight-decay", type=float, default=None,
                      help="BERT comparison: the weight decay of every optimizer (default: the config's 0.01; "
                           "0 removes decay, which favours small learning rates, from the comparison)")
  parser.add_argument("--optimizers", default=None,
                      help="BERT comparison: comma-separated subset of "
                           f"{','.join(bert_comparison.COMPARED_OPTIMIZERS)} (default: all)")
  argv = sys.argv[1:] if argv is None else list(argv)
  args = parser.parse_args(argv)
  parts = [] if args.report_only else [p.strip() for p in args.parts.split(",") if p.strip()]
  optimizers = None if args.optimizers is None else [o.strip() for o in args.optimizers.split(",") if o.strip()]
  settings = None  # run() picks the mode's settings (for --report-only, the mode of the saved run)
  if args.weight_decay is not None or optimizers is not None:
    try:
      settings = ReproductionSettings.for_mode(args.quick, args.weight_decay, optimizers)
    except ValueError as error:
      parser.error(str(error))
  results = run(args.out, quick=args.quick, squad_dir=args.squad_dir, parts=parts, settings=settings,
                command=" ".join(["python -m experiments.reproduce"] + argv))
  print(f"[reproduce] report: {os.path.join(args.out, 'report.md')} ({results['wall_s']:.0f} s)")
  return 0 if all(p["status"] == "ok" for p in results["parts"].values()) else 1


if __name__ == "__main__":
  sys.exit(main())
