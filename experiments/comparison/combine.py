"""One comparison from several recorded with the same setup, e.g. optimizers run later into another folder.

    python -m experiments.comparison.combine --out DIR FIRST/results.json LATER/results.json ...

A full comparison takes hours per optimizer, so optimizers added later (the post-paper methods) run into a
folder of their own (`python -m experiments.comparison --out LATER --optimizers zclip,adagc,...`). This puts
their summaries side by side after checking (`check_same_setup`) that every setting that changes a number
is the same, and writes DIR/results.json (the combined summary, with the sources it read) and
DIR/summary.md (the comparison's tables and the RQ4 and RQ5 verdicts by `verdict`'s rules). It runs
nothing; each optimizer's numbers are the ones its own run recorded.
"""
from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Mapping, Sequence
from typing import Any

from experiments import report
from experiments.common import results
from experiments.comparison import summary as summary_lib
from experiments.comparison import verdict

# Settings every combined summary must share, and the run overrides that change no number (the shared
# vocabulary's path: each folder trains its own, deterministically, from the same documents; whether runs
# kept checkpoints).
SHARED_SETTINGS = ("config_name", "corpus", "overrides", "seeds")
OVERRIDES_NOT_COMPARED = ("vocab_file", "save_checkpoints")


def check_same_setup(first: Mapping[str, Any], other: Mapping[str, Any], names: Sequence[str] = ("first", "other")):
  """Raises ValueError naming the first setting (or run override) in which two summaries differ."""
  for key in SHARED_SETTINGS:
    a, b = first["settings"].get(key), other["settings"].get(key)
    if key == "overrides":
      a, b = ({k: v for k, v in d.items() if k not in OVERRIDES_NOT_COMPARED} for d in (a or {}, b or {}))
      for field in sorted(set(a) | set(b)):
        if a.get(field) != b.get(field):
          raise ValueError(f"the comparisons differ in overrides.{field}: {names[0]} has {a.get(field)!r}, "
                           f"{names[1]} has {b.get(field)!r}; only runs of one setup can be compared")
    elif a != b:
      raise ValueError(f"the comparisons differ in {key}: {names[0]} has {a!r}, {names[1]} has {b!r}; "
                       "only runs of one setup can be compared")


def combine(summaries: Sequence[Mapping[str, Any]], sources: Sequence[str]) -> dict[str, Any]:
  """The summaries' optimizers in one summary (settings, setup text and fine-tuning of the first).

  Args:
    summaries: comparison summaries (`study.run`'s return, the results.json of a comparison folder).
    sources: where each came from, recorded with the optimizers it gave.

  Raises:
    ValueError: the setups differ (`check_same_setup`) or an optimizer is in two summaries.
  """
  first = summaries[0]
  combined = dict(first, optimizers={}, sources=[], figures={})
  combined["settings"] = dict(first["settings"], learning_rates={})
  for summary, source in zip(summaries, sources):
    check_same_setup(first, summary, (sources[0], source))
    twice = sorted(set(summary["optimizers"]) & set(combined["optimizers"]))
    if twice:
      raise ValueError(f"{source} and an earlier summary both have {twice}: give each optimizer once")
    combined["optimizers"].update(summary["optimizers"])
    combined["settings"]["learning_rates"].update(summary["settings"]["learning_rates"])
    combined["sources"].append({"path": source, "optimizers": list(summary["optimizers"]),
                                "mode": summary.get("mode", summary["settings"].get("mode"))})
  return combined


def summary_markdown(combined: Mapping[str, Any]) -> list[str]:
  """The combined comparison's RQ4 and RQ5 verdicts and its tables, as Markdown lines."""
  lines = ["# BERT optimizer comparison, combined from " + ", ".join(
      f"`{s['path']}` ({', '.join(s['optimizers'])})" for s in combined["sources"]), ""]
  for title, assess in (("RQ4", verdict.assess_rq4), ("RQ5", verdict.assess_rq5)):
    lines += [f"## {report.RQ_TITLES[title]}", "", f"Paper: {report.PAPER_CLAIMS[title]}", ""]
    lines += report.verdict_lines(assess(combined))
  return lines + ["## Tables", ""] + summary_lib.report_lines(combined)


def main(argv: Sequence[str] | None = None) -> int:
  parser = argparse.ArgumentParser(prog="python -m experiments.comparison.combine",
                                   description=__doc__.split("\n")[0])
  parser.add_argument("--out", required=True, help="folder for results.json and summary.md")
  parser.add_argument("results", nargs="+", help="results.json files of comparison folders")
  args = parser.parse_args(sys.argv[1:] if argv is None else argv)
  out_path = os.path.join(args.out, "results.json")
  if os.path.exists(out_path) and "sources" not in results.read_json(out_path):
    parser.error(f"{out_path} holds a comparison's own results, not a combination: give another --out")
  summaries = [results.read_json(path) for path in args.results]
  try:
    combined = combine(summaries, args.results)
  except ValueError as error:
    parser.error(str(error))
  os.makedirs(args.out, exist_ok=True)
  results.write_json(out_path, combined)
  with open(os.path.join(args.out, "summary.md"), "w") as f:
    f.write("\n".join(summary_markdown(combined)).rstrip() + "\n")
  print(f"combined {', '.join(combined['optimizers'])} into {args.out}")
  return 0


if __name__ == "__main__":
  sys.exit(main())
