"""One comparison from several recorded with the same setup, e.g. optimizers run later into another folder.

    python -m experiments.comparison.combine --out DIR FIRST/results.json LATER/results.json ...

A full comparison takes hours per optimizer, so optimizers added later (the post-paper methods) run into a
folder of their own (`python -m experiments.comparison --out LATER --optimizers zclip,adagc,...`). This puts
their summaries side by side after checking (`check_same_setup`) that the settings that change a number
are the same (those both recorded), and writes DIR/results.json (the combined summary, with the sources it read) and
DIR/summary.md (the comparison's tables and the RQ4 and RQ5 verdicts by `verdict`'s rules), with the
figures it can draw from the summaries (`FIGURES`). It runs nothing; each optimizer's numbers are the ones
its own run recorded.
"""
from __future__ import annotations

import argparse
import importlib
import os
import sys
from collections.abc import Mapping, Sequence
from typing import Any

from experiments import report
from experiments.common import results
from experiments.comparison import plots
from experiments.comparison import runs
from experiments.comparison import summary as summary_lib
from experiments.comparison import verdict

# Run overrides that change no number: those a finished run is reused across (`runs.NOT_COMPARED_FOR_REUSE`)
# and the shared vocabulary's path (each folder trains its own, deterministically, from the same documents,
# which `corpus` checks).
OVERRIDES_NOT_COMPARED = runs.NOT_COMPARED_FOR_REUSE + ("vocab_file",)


def _effective_overrides(settings: Mapping[str, Any]) -> dict[str, Any]:
  """The BERT config every run of a summary started from (today's base config file with its overrides)."""
  base = importlib.import_module(f"experiments.bert.configs.{settings['config_name']}").get_config()
  base.update({k: v for k, v in settings["overrides"].items() if k not in OVERRIDES_NOT_COMPARED})
  return {k: v for k, v in base.to_dict().items() if k not in OVERRIDES_NOT_COMPARED}


def optimizer_text(text: str | None) -> str | None:
  """The optimizer settings in words with the per-optimizer exceptions in name order (older versions
  listed them in the config's order)."""
  if not text or "; exceptions: " not in text:
    return text
  head, rest = text.split("; exceptions: ", 1)
  exceptions, dot, tail = rest.partition(". ")
  return f"{head}; exceptions: {'; '.join(sorted(exceptions.split('; ')))}{dot}{tail}"


def _setup(summary: Mapping[str, Any]) -> dict[str, Any]:
  """What must be equal for two summaries to be one comparison: the effective run config, the corpus as
  loaded (documents per split, training tokens; when recorded) and its fingerprint (when recorded), the
  seeds, and the optimizer settings in words (shared hyperparameters and per-optimizer exceptions; when
  recorded)."""
  settings = summary["settings"]
  loaded = summary.get("corpus")
  setup = {"config_name": settings["config_name"], "corpus": settings["corpus"],
           "seeds": list(settings["seeds"]),
           "corpus loaded": {k: v for k, v in loaded.items() if k != "sha256"} if loaded else loaded,
           "corpus fingerprint": (loaded or {}).get("sha256"),
           "optimizer settings": optimizer_text(summary.get("optimizer_settings")),
           "optimizer fields": settings.get("optimizer_fields")}
  setup.update({f"overrides.{k}": v for k, v in _effective_overrides(settings).items()})
  return setup


def check_same_setup(first: Mapping[str, Any], other: Mapping[str, Any], names: Sequence[str] = ("first", "other")):
  """Raises ValueError naming the first setting in which two summaries differ (one recorded by only one of
  them, e.g. by an older version, is not compared)."""
  a, b = _setup(first), _setup(other)
  for key in a:
    if a[key] is not None and b.get(key) is not None and a[key] != b[key]:
      raise ValueError(f"the comparisons differ in {key}: {names[0]} has {a[key]!r}, {names[1]} has "
                       f"{b[key]!r}; only runs of one setup can be compared")


def combine(summaries: Sequence[Mapping[str, Any]], sources: Sequence[str]) -> dict[str, Any]:
  """The summaries' optimizers in one summary (the settings and setup text of the first; the fine-tuning
  of the one that fine-tuned).

  Args:
    summaries: comparison summaries (`study.run`'s return, the results.json of a comparison folder).
    sources: where each came from, recorded with the optimizers it gave.

  Raises:
    ValueError: the setups differ (`check_same_setup`), an optimizer is in two summaries, or two fine-tuned.
  """
  first = summaries[0]
  combined = dict(first, optimizers={}, sources=[], figures={})
  combined["settings"] = dict(first["settings"], learning_rates={})
  finetuned = [(s, source) for s, source in zip(summaries, sources) if s.get("finetune", {}).get("status") == "ok"]
  if len(finetuned) > 1:
    raise ValueError(f"{' and '.join(source for _, source in finetuned)} both fine-tuned on SQuAD: give one")
  if finetuned:
    combined["finetune"] = finetuned[0][0]["finetune"]
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


# The figures a combined summary can draw from the recorded numbers alone (the loss and clip curves need
# the runs' own files): name -> PNG.
FIGURES = {"learning_rate_sweep": "learning_rate_sweep.png", "loss_by_token_frequency": "loss_by_token_frequency.png"}


def draw_figures(optimizers: Mapping[str, Mapping[str, Any]], out_dir: str) -> dict[str, str]:
  """Draws `FIGURES` into `out_dir` (the frequency one only when Adam, its baseline, and another optimizer
  have bucket losses; a stale one is removed) and returns those drawn, name -> file name."""
  paths = {name: os.path.join(out_dir, file_name) for name, file_name in FIGURES.items()}
  drawn = {"learning_rate_sweep": os.path.basename(plots.plot_sweep(optimizers, paths["learning_rate_sweep"]))}
  if plots.plot_frequency_buckets(optimizers, paths["loss_by_token_frequency"]):
    drawn["loss_by_token_frequency"] = FIGURES["loss_by_token_frequency"]
  elif os.path.exists(paths["loss_by_token_frequency"]):
    os.remove(paths["loss_by_token_frequency"])
  return drawn


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
  out_path, markdown_path = (os.path.join(args.out, name) for name in ("results.json", "summary.md"))
  ours = os.path.exists(out_path) and "sources" in results.read_json(out_path)
  for path in [out_path, markdown_path] + [os.path.join(args.out, name) for name in FIGURES]:
    if os.path.exists(path) and not ours:
      parser.error(f"{path} was written by something else than this command: give another --out")
  summaries = [results.read_json(path) for path in args.results]
  try:
    combined = combine(summaries, args.results)
  except ValueError as error:
    parser.error(str(error))
  os.makedirs(args.out, exist_ok=True)
  combined["figures"] = draw_figures(combined["optimizers"], args.out)
  results.write_json(out_path, combined)
  results.write_text(markdown_path, "\n".join(summary_markdown(combined)).rstrip() + "\n")
  print(f"combined {', '.join(combined['optimizers'])} into {args.out}")
  return 0


if __name__ == "__main__":
  sys.exit(main())
