"""The comparison's research-question rules, from the summary `study.run` returns.

RQ4 (`assess_rq4`): does the paper's ACClip beat Adam in BERT pretraining (held-out MLM loss and accuracy
over seeds) and in SQuAD fine-tuning (EM/F1)? RQ5 (`assess_rq5`, beyond the paper): does the best of the
clipping methods that followed it beat the paper's best rule and the better of Adam and AdamW?
"""
from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from experiments.comparison import summary as summary_lib
from experiments.common.results import format_number, format_seed_statistics, is_finite_number
from experiments.common.verdicts import (INCONCLUSIVE, combine_verdicts, context_row, verdict_from_margin,
                                         verdict_row)


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
  at_edges = [n for n in (name, baseline) if n in optimizers and summary_lib.edge_of(optimizers[n])]
  label = {"eval_loss": "held-out MLM loss", "eval_accuracy": "held-out MLM accuracy"}.get(metric, metric)
  return verdict_row(f"{label}, {name} vs {baseline} (mean ± std over seeds)",
              f"{name} {format_seed_statistics(ours)} vs {baseline} {format_seed_statistics(base)}"
              + (f" (best learning rate at the edge of the swept range: {', '.join(at_edges)})" if at_edges else ""),
              f"{name} {better}",
              verdict_from_margin(effect, margin),
              f"supported if {name} is {better} than {baseline} by more than the larger seed std of the two; "
              f"not supported if {baseline} wins by that much; else inconclusive (one seed: inconclusive)")


# A single fine-tuning run per pair has no seed spread; one F1/EM point is below the seed-to-seed spread
# usually seen on SQuAD, so smaller gaps are not called.
SQUAD_MARGIN_POINTS = 1.0


def assess_rq4(summary: Mapping[str, Any]) -> dict[str, Any]:
  """RQ4 from the comparison's summary (`study.run`): rows, verdict and the overall rule."""
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


# The clipping methods that followed the paper (experiments.common.optimizers.REGISTRY entries), its rules,
# and the Adam baselines they are judged against.
POST_PAPER_METHODS = ("zclip", "adagc", "autoclip", "spam")
PAPER_RULES = ("acclip", "acclip_ports", "gclip")
ADAM_BASELINES = ("adam", "adamw")


def _best(summary: Mapping[str, Any], names: tuple[str, ...]) -> str | None:
  """The name among `names` with the lowest mean held-out MLM loss (None when none has a finite one)."""
  optimizers = summary.get("optimizers", {})
  means = {name: optimizers[name]["eval_loss"].get("mean") for name in names if name in optimizers}
  finite = {name: mean for name, mean in means.items() if is_finite_number(mean)}
  return min(finite, key=finite.get) if finite else None


def assess_rq5(summary: Mapping[str, Any]) -> dict[str, Any]:
  """RQ5 (beyond the paper): does the best of the later clipping methods beat the paper's best rule and the
  better of Adam and AdamW in held-out MLM loss, by more than the larger seed std of the two?"""
  best_new = _best(summary, POST_PAPER_METHODS)
  rows = []
  if best_new is not None:
    for group, label in ((PAPER_RULES, "the paper's best rule"), (ADAM_BASELINES, "the better Adam")):
      baseline = _best(summary, group)
      if baseline is not None:
        row = _seed_comparison(best_new, summary, "eval_loss", lower_is_better=True, baseline=baseline)
        rows.append(dict(row, measure=f"{row['measure']} ({label})"))
  context = [_seed_comparison(name, summary, "eval_loss", lower_is_better=True, baseline="adamw")
             for name in POST_PAPER_METHODS if name in summary.get("optimizers", {}) and name != best_new
             and "adamw" in summary.get("optimizers", {})]
  overall = combine_verdicts([r["verdict"] for r in rows]) if len(rows) == 2 else INCONCLUSIVE
  return {"rows": rows + [context_row(r) for r in context], "verdict": overall,
          "overall_rule": "the best later method (lowest mean held-out loss among "
                          f"{', '.join(POST_PAPER_METHODS)}) against the best of {', '.join(PAPER_RULES)} and "
                          f"the best of {', '.join(ADAM_BASELINES)}: supported only if it beats both, not "
                          "supported only if both beat it, each by more than the larger seed std; else "
                          "inconclusive (also when a group did not run)"}
