"""One command reproduces the paper at small scale and writes a report.

    python -m experiments.reproduce --out DIR [--quick] [--squad-dir D] [--jobs N]
        [--parts synthetic,noise,bert,stability,decay,batch_size]
        [--weight-decay W] [--optimizers adam,acclip,...]

runs, in order, the synthetic study (RQ2, RQ3; `experiments.synthetic.study.run`), the gradient-noise study
(RQ1; `experiments.noise.study.run`), the BERT optimizer comparison (RQ4, RQ5; `experiments.comparison`) and
the stability-margin study (RQ6, our own question; `experiments.stability`), the weight-decay factorial (RQ7;
`experiments.decay`) and the batch-size study (RQ8; `experiments.batch_size`), each in its own folder under DIR,
then writes

    DIR/report.md       one table per research question with the paper's claim, our numbers and a verdict
                        computed by each study's rule (its verdict.py), the figures, environment and commands;
    DIR/results.json    every number of the report, the settings and seeds, wall times;
    DIR/results.csv     the same numbers flattened to ``key,value`` rows.

A part that raises is recorded (traceback in results.json, "failed" in the report) and the others still run
(a preemption notice, SIGTERM, is not a failure: it stops everything, and the same command resumes);
the exit status is then 1. ``--jobs N`` runs N parts at once, each in a process of its own (its output in
DIR/<part>/output.log), with the same numbers. ``--parts`` reruns only the named parts and keeps the other
parts' results from an earlier DIR/results.json, so one part can be redone without the rest;
``--report-only`` reruns nothing and rebuilds the report and verdicts from DIR/results.json.
``--weight-decay`` and ``--optimizers`` change the BERT comparison: one weight decay for every optimizer
(e.g. 0, to take decay out of the comparison) and the optimizers run.

A mode is a config file: every part reads configs/quick.py (``--quick``) or configs/full.py of its study
(`experiments.synthetic`, `experiments.noise`, `experiments.comparison`, `experiments.stability`,
`experiments.decay`, `experiments.batch_size`), and
results.json records the
configs used, so the report's mode and settings are read from them, never re-inferred.
"""
from __future__ import annotations

import argparse
import concurrent.futures
import importlib
import json
import multiprocessing
import os
import signal
import sys
import threading
import time
import traceback
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import ml_collections

from experiments import report
from experiments.common import results as results_lib
from experiments.common import study_cli
from experiments.common import training_loop
from experiments.common import verdicts
from experiments.common import workdir_lock
from experiments.comparison import finetune
from experiments.comparison import study as comparison
from experiments.comparison import summary as comparison_summary

PARTS = ("synthetic", "noise", "bert", "stability", "decay", "batch_size")
# Each part's minutes in the quick mode on 2 CPU cores (docs/benchmarks.md): with --jobs the longest start first.
EXPECTED_QUICK_MINUTES = {"bert": 5.8, "noise": 2.7, "decay": 2.4, "batch_size": 3.1, "stability": 1.4,
                          "synthetic": 0.7}
# Each part's study package: its configs/<mode>.py, its `study.run(out_dir, config)` and its verdict.py.
STUDIES = {"synthetic": "experiments.synthetic", "noise": "experiments.noise", "bert": "experiments.comparison",
           "stability": "experiments.stability", "decay": "experiments.decay",
           "batch_size": "experiments.batch_size"}
# Research question -> (part, the study's rule in its verdict.py, the summary key it reads or None for the
# whole summary). A rule returns {"rows", "verdict", "overall_rule"}.
QUESTIONS = {"RQ1": ("noise", "assess_rq1", "rq1"), "RQ2": ("synthetic", "assess_rq2", None),
             "RQ3": ("synthetic", "assess_rq3", None), "RQ4": ("bert", "assess_rq4", None),
             "RQ5": ("bert", "assess_rq5", None), "RQ6": ("stability", "assess_rq6", None),
             "RQ7": ("decay", "assess_rq7", None), "RQ8": ("batch_size", "assess_rq8", None)}


def part_configs(mode: str, weight_decay: float | None = None,
                 optimizers: Sequence[str] | None = None) -> dict[str, ml_collections.ConfigDict]:
  """Each part's configs/<mode>.py, the comparison's with --weight-decay and --optimizers applied."""
  configs = {part: study_cli.study_config(package, mode) for part, package in STUDIES.items()}
  configs["bert"] = comparison.with_flags(configs["bert"], weight_decay, optimizers)
  return configs


def _study_run(part: str, squad_dir: str | None) -> Callable[[str, ml_collections.ConfigDict], Mapping[str, Any]]:
  study = importlib.import_module(f"{STUDIES[part]}.study")
  if part == "bert":
    return lambda out_dir, config: study.run(out_dir, config, squad_dir=squad_dir)
  return study.run


def assess_all(parts: Mapping[str, Mapping[str, Any]]) -> dict[str, dict[str, Any]]:
  """Every research question's verdict by its study's rule (a part that did not run: inconclusive)."""
  assessed = {}
  for rq, (part_name, rule, key) in QUESTIONS.items():
    part = parts.get(part_name, {"status": "not run"})
    if part.get("status") == "ok":
      verdict = importlib.import_module(f"{STUDIES[part_name]}.verdict")
      summary = part.get("summary", {})
      result = getattr(verdict, rule)(summary.get(key, {}) if key else summary)
    else:
      result = {"rows": [], "verdict": verdicts.INCONCLUSIVE,
                "overall_rule": f"the {part_name} part {part.get('status', 'was not run')}: no numbers to judge"}
    assessed[rq] = dict(result, part=part_name, paper=report.PAPER_CLAIMS[rq])
  return assessed


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


def _preempted(part_dir_name: str, notice: training_loop.Preempted) -> dict[str, Any]:
  """A part's result when a preemption notice stopped it (the same command resumes it)."""
  return {"status": "preempted", "dir": part_dir_name, "summary": {}, "error": str(notice)}


def _part_in_worker(name: str, config: ml_collections.ConfigDict, squad_dir: str | None, part_dir: str
                    ) -> dict[str, Any]:
  """One part in a worker process of ``jobs > 1``: its output goes to ``part_dir/output.log``; a preemption
  comes back as a result (status "preempted", with the notice's fields), not as an exception."""
  os.makedirs(part_dir, exist_ok=True)
  sys.stdout.flush()
  sys.stderr.flush()
  saved = os.dup(1), os.dup(2)
  with open(os.path.join(part_dir, "output.log"), "a", encoding="utf-8") as log:
    os.dup2(log.fileno(), 1)
    os.dup2(log.fileno(), 2)
    try:
      return _run_part(name, lambda d: _study_run(name, squad_dir)(d, config), part_dir)
    except training_loop.Preempted as notice:
      return dict(_preempted(os.path.basename(part_dir), notice),
                  notice=[notice.workdir, notice.step, notice.checkpoint_step])
    finally:
      sys.stdout.flush()
      sys.stderr.flush()
      for fd, copy in zip((1, 2), saved):
        os.dup2(copy, fd)
        os.close(copy)


def _run_parts_concurrently(names: Sequence[str], configs: Mapping[str, ml_collections.ConfigDict],
                            squad_dir: str | None, out_dir: str, jobs: int
                            ) -> tuple[dict[str, dict[str, Any]], training_loop.Preempted | None]:
  """The named parts in ``jobs`` worker processes (spawned: each its own JAX), the longest first.

  A SIGTERM to this process is passed on to the workers, whose runs stop at a step boundary with a
  checkpoint, as in one process; a part it stops (or a worker it ends between runs) is "preempted".
  """
  print(f"[reproduce] {', '.join(names)}: in {jobs} process{'es' if jobs > 1 else ''}; each part's output in "
        f"{os.path.join(out_dir, '<part>', 'output.log')}", flush=True)
  notice_received = threading.Event()
  with concurrent.futures.ProcessPoolExecutor(jobs, mp_context=multiprocessing.get_context("spawn")) as pool:
    futures = {name: pool.submit(_part_in_worker, name, configs[name], squad_dir, os.path.join(out_dir, name))
               for name in sorted(names, key=lambda n: -EXPECTED_QUICK_MINUTES[n])}

    def forward(signum, frame):  # pylint: disable=unused-argument
      notice_received.set()
      for process in list((getattr(pool, "_processes", None) or {}).values()):
        process.terminate()  # SIGTERM: each worker's run saves a checkpoint at its next step

    previous = signal.signal(signal.SIGTERM, forward) if threading.current_thread() is threading.main_thread() else None
    try:
      results = {}
      for name, future in futures.items():
        try:
          results[name] = future.result()
        except concurrent.futures.process.BrokenProcessPool:
          results[name] = {"status": "preempted" if notice_received.is_set() else "failed", "dir": name,
                           "summary": {}, "error": f"the worker process running {name} ended"}
        print(f"[reproduce] {name}: {results[name]['status']}"
              + (f" in {results[name]['wall_s']:.1f} s" if "wall_s" in results[name] else ""), flush=True)
    finally:
      if previous is not None:
        signal.signal(signal.SIGTERM, previous)
  notices = [result.pop("notice") for result in results.values() if "notice" in result]
  preempted = None
  if notices or notice_received.is_set():
    preempted = training_loop.Preempted(*notices[0]) if notices else training_loop.Preempted(out_dir, 0, None)
  return {name: results[name] for name in PARTS if name in results}, preempted


@workdir_lock.owns_output_folder
def run(out_dir: str, mode: str = "quick", squad_dir: str | None = None, parts: Sequence[str] = PARTS,
        configs: Mapping[str, ml_collections.ConfigDict] | None = None,
        runners: Mapping[str, Callable[[str, ml_collections.ConfigDict], Mapping[str, Any]]] | None = None,
        command: str | None = None, jobs: int = 1) -> dict[str, Any]:
  """Runs the named parts into ``out_dir`` and writes report.md, results.json and results.csv there.

  Args:
    out_dir: output folder (created).
    mode: the config every part reads, configs/<mode>.py of its study (used when ``configs`` is None).
    squad_dir: a folder with SQuAD v1.1 ``train-v1.1.json`` and ``dev-v1.1.json``; None skips fine-tuning.
    parts: a subset of ``PARTS``; the others keep their results from an earlier ``out_dir/results.json``.
      Empty: rebuild report.md and the verdicts from that file with the current rules, running nothing.
    configs: part -> its config; default `part_configs(mode)`. Recorded with the results; the report's
      mode and settings are read from them.
    runners: part -> `(out_dir, config) -> summary`; default each study's `run` (tests pass stand-ins).
    command: the command line that started the run, recorded in the report.
    jobs: parts run at once, each in a process of its own (1: one after the other, here). Every number is
      the same either way; on 2 CPU cores 2 overlaps one part's compilation with another's steps. Parts in
      other processes need the studies' own runners (not ``runners``).

  Returns:
    The results dict that was written to results.json.

  Raises:
    ValueError: an unknown part name, configs of different modes, jobs < 1, or runners with jobs > 1.
    FileNotFoundError: ``squad_dir`` or one of its two files is missing; no results.json to rebuild from.
  """
  unknown = [p for p in parts if p not in PARTS]
  if unknown:
    raise ValueError(f"parts={list(parts)!r}: each must be one of {', '.join(PARTS)}")
  if jobs < 1 or (jobs > 1 and runners):
    raise ValueError(f"jobs={jobs!r}: give 1 or more, and 1 with runners (other processes run the studies' own)")
  if squad_dir is not None:
    finetune.squad_files(squad_dir)  # fail before hours of pretraining, not after
  results_path = os.path.join(out_dir, "results.json")
  previous = results_lib.read_json(results_path, required=("configs", "parts"), remedy=(
      "Rerun the parts (without --report-only) to write it anew, or restore it from a copy.")) if (
          os.path.exists(results_path)) else {}
  if not parts and not previous:
    raise FileNotFoundError(f"{results_path} does not exist: nothing to rebuild the report from")
  if not parts:  # report only: the mode, configs and command are those that produced the numbers
    recorded = {name: ml_collections.ConfigDict(config) for name, config in previous["configs"].items()}
    configs, command = recorded, previous.get("command") or command
  configs = dict(configs or part_configs(mode))
  modes = {config.mode for config in configs.values()}
  if len(modes) != 1:
    raise ValueError(f"the parts' configs are of different modes {sorted(modes)}; give one mode")
  os.makedirs(out_dir, exist_ok=True)

  start = time.perf_counter()
  runners = {name: (runners or {}).get(name) or _study_run(name, squad_dir) for name in parts}
  recorded_configs = json.loads(json.dumps(results_lib.to_jsonable(
      {name: config.to_dict() for name, config in configs.items()})))
  # The same command after a preemption keeps the parts that invocation finished.
  resumed = (parts and previous.get("preempted") is not None and previous.get("parts_run") == list(parts)
             and previous.get("configs") == recorded_configs and previous.get("squad_dir") == squad_dir)
  part_results, preempted = {}, None
  for name in PARTS:
    if name in parts and resumed and previous["parts"].get(name, {}).get("status") == "ok":
      print(f"[reproduce] {name}: finished before the preemption, kept", flush=True)
      part_results[name] = previous["parts"][name]
    elif name not in parts and name in previous.get("parts", {}):
      part_results[name] = previous["parts"][name]
  to_run = [name for name in PARTS if name in parts and name not in part_results]
  if jobs > 1 and to_run:
    ran, preempted = _run_parts_concurrently(to_run, configs, squad_dir, out_dir, min(jobs, len(to_run)))
    part_results.update(ran)
  for name in to_run if jobs == 1 else ():
    if preempted is None:
      try:
        part_results[name] = _run_part(name, lambda d, n=name: runners[n](d, configs[n]),
                                       os.path.join(out_dir, name))
      except training_loop.Preempted as notice:
        preempted = notice
        part_results[name] = _preempted(name, notice)
  part_results = {name: part_results[name] for name in PARTS if name in part_results}
  results = {
      "command": command,
      "mode": modes.pop(),
      "squad_dir": squad_dir,
      # Report only: what the run that made the numbers ran, and whether a notice stopped it.
      "parts_run": list(parts) if parts else previous.get("parts_run", []),
      "preempted": str(preempted) if preempted else None if parts else previous.get("preempted"),
      "wall_s": time.perf_counter() - start,
      # Report only: the environment that produced the numbers, not the one that re-read them.
      "environment": previous["environment"] if not parts else report.environment(),
      "configs": recorded_configs,
      "parts": part_results,
  }
  results["research_questions"] = assess_all(part_results)
  results_lib.write_json(results_path, results)
  results_lib.write_flat_csv(os.path.join(out_dir, "results.csv"), results)
  report.write_report(out_dir, results, figure_keywords=FIGURE_KEYWORDS,
                      extra_sections=_extra_sections(out_dir, results))
  if preempted is not None:  # the finished parts are on disk; the same command continues
    raise preempted
  return results


# Which of the synthetic study's figures back which question (the noise and BERT parts: all of theirs).
FIGURE_KEYWORDS = {"RQ2": ("final_suboptimality", "rates", "nonconvex"), "RQ3": ("dimension",),
                   "RQ5": ("loss_by_token_frequency",)}


def _comparison_flags(config: Mapping[str, Any], mode: str) -> str:
  """The --weight-decay and --optimizers flags that turn the mode's comparison config into ``config``."""
  default = study_cli.study_config(STUDIES["bert"], mode)
  flags = ""
  if "weight_decay" in config["overrides"] and "weight_decay" not in default.overrides:
    flags += f" --weight-decay {config['overrides']['weight_decay']:g}"
  if tuple(config["optimizers"]) != tuple(default.optimizers):
    flags += f" --optimizers {','.join(config['optimizers'])}"
  return flags


def _config_differences(package: str) -> str:
  """'field: quick value (full: value)' for every field the study's configs/quick.py changes."""
  quick, full = study_cli.study_config(package, "quick"), study_cli.study_config(package, "full")
  plain = lambda value: value.to_dict() if isinstance(value, ml_collections.ConfigDict) else value
  changed = [f"{name} {plain(quick[name])} (full: {plain(full[name])})" for name in quick.keys()
             if name not in ("mode", "expected_time") and quick[name] != full[name]]
  return "; ".join(changed) or "nothing"


def _extra_sections(out_dir: str, results: Mapping[str, Any]) -> dict[str, list[str]]:
  sections = {}
  bert = results["parts"].get("bert", {})
  if bert.get("status") == "ok":
    sections["RQ4"] = comparison_summary.report_lines(bert["summary"])
    sections["RQ5"] = ["The comparison's tables are under RQ4 (same runs: same sweep, validation split, seeds)."]
  for question, part in (("RQ6", "stability"), ("RQ7", "decay"), ("RQ8", "batch_size")):
    if results["parts"].get(part, {}).get("status") == "ok":
      summary_lib = importlib.import_module(f"{STUDIES[part]}.summary")
      sections[question] = summary_lib.report_lines(results["parts"][part]["summary"])
  mode = results["mode"]
  flag = " --quick" if mode == "quick" else ""
  bert_config = results["configs"]["bert"]
  preset = mode in ("quick", "full")
  bert_flags = flag + (_comparison_flags(bert_config, mode) if preset else "")
  commands = [
      "## Commands", "",
      ("Everything, as this report was made" if preset else
       f"Everything, in the full mode (this run's configs, mode {mode}, are no preset: results.json holds "
       "them under `configs`)") + " (add `--squad-dir D` with SQuAD v1.1 train-v1.1.json and "
      "dev-v1.1.json to fine-tune):", "",
      f"    python -m experiments.reproduce --out {out_dir}{bert_flags}", "",
      "One part at a time (each writes its own folder; the last line rewrites this report with the other "
      "parts' results kept):", "",
      f"    python -m experiments.synthetic --out {os.path.join(out_dir, 'synthetic')}{flag}",
      f"    python -m experiments.noise --out {os.path.join(out_dir, 'noise')}{flag}",
      f"    python -m experiments.reproduce --out {out_dir} --parts bert{bert_flags}",
      f"    python -m experiments.stability --out {os.path.join(out_dir, 'stability')}{flag}",
      f"    python -m experiments.decay --out {os.path.join(out_dir, 'decay')}{flag}",
      f"    python -m experiments.batch_size --out {os.path.join(out_dir, 'batch_size')}{flag}",
      "",
  ]
  best = bert.get("summary", {}).get("optimizers", {}).get("acclip", {}) if bert.get("status") == "ok" else {}
  if best.get("best_learning_rate") is not None:
    commands += ["A single pre-training run of the comparison (here ACClip at its best learning rate, first "
                 "seed):", "",
                 "    " + comparison_summary.single_run_command(
                     comparison.ComparisonSettings.from_config(bert_config), "acclip", best["best_learning_rate"],
                     best["seeds"][0], os.path.join(out_dir, "bert", "runs", "acclip_rerun")), ""]
  quick_bert, full_bert = (comparison.ComparisonSettings.from_config(study_cli.study_config(STUDIES["bert"], m))
                           for m in ("quick", "full"))
  modes = ["## Quick and full modes", "",
           f"This run used the **{mode}** mode: each part read configs/{mode}.py of its study (recorded in "
           "results.json under `configs`). What the quick configs change:", "",
           f"- synthetic study: {_config_differences(STUDIES['synthetic'])}.",
           f"- noise study: {_config_differences(STUDIES['noise'])}.",
           f"- stability study: {_config_differences(STUDIES['stability'])}.",
           f"- weight-decay factorial: {_config_differences(STUDIES['decay'])}.",
           f"- batch-size study: {_config_differences(STUDIES['batch_size'])}.",
           f"- BERT comparison, quick: {quick_bert.description}. Full: {full_bert.description}.",
           "",
           f"Expected time of the full mode: BERT comparison {full_bert.expected_time}; stability study "
           f"{study_cli.study_config(STUDIES['stability'], 'full').expected_time}; weight-decay factorial "
           f"{study_cli.study_config(STUDIES['decay'], 'full').expected_time}; batch-size study "
           f"{study_cli.study_config(STUDIES['batch_size'], 'full').expected_time}; the synthetic and noise "
           "studies: see their configs (`experiments/synthetic/configs/full.py`, "
           "`experiments/noise/configs/full.py`). The quick mode is budgeted at 15 minutes on 2 CPU cores; "
           "this run's wall times are in the table below.", ""]
  sections["appendix"] = commands + modes
  return sections


def main(argv: Sequence[str] | None = None) -> int:
  parser = argparse.ArgumentParser(prog="python -m experiments.reproduce", description=__doc__.split("\n")[0])
  parser.add_argument("--out", required=True, help="output folder for report.md, results and figures")
  parser.add_argument("--quick", action="store_true",
                      help="small sizes: about 17 minutes on 2 CPU cores, 12 with --jobs 2 (the report lists what "
                           "shrank)")
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
                      help="BERT comparison: comma-separated names of experiments.common.optimizers.REGISTRY "
                           "(default: the config's)")
  parser.add_argument("--jobs", type=int, default=1,
                      help="parts run at once, each in a process of its own (default 1); the same numbers. On a "
                           "2-core CPU 2 is faster (one part compiles while another steps); on a GPU or TPU "
                           "keep 1 (a device belongs to one process)")
  argv = sys.argv[1:] if argv is None else list(argv)
  args = parser.parse_args(argv)
  if args.jobs < 1:
    parser.error(f"--jobs {args.jobs}: give 1 or more")
  parts = [] if args.report_only else study_cli.comma_list(args.parts)
  optimizers = study_cli.comma_list(args.optimizers)
  mode = "quick" if args.quick else "full"
  configs = None  # --report-only: the configs the saved run recorded
  if parts:
    try:
      configs = part_configs(mode, args.weight_decay, optimizers)
    except ValueError as error:
      parser.error(str(error))
  results = run(args.out, mode=mode, squad_dir=args.squad_dir, parts=parts, configs=configs,
                command=" ".join(["python -m experiments.reproduce"] + argv), jobs=args.jobs)
  print(f"[reproduce] report: {os.path.join(args.out, 'report.md')} ({results['wall_s']:.0f} s)")
  return 0 if all(p["status"] == "ok" for p in results["parts"].values()) else 1


if __name__ == "__main__":
  sys.exit(main())
