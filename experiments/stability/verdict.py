"""The stability study's research-question rule (RQ6), used by its own summary.md and by the report.

RQ6 is a question of our own, not the paper's: do the spike-clipping methods stretch the largest learning
rate at which BERT trains (their margin, `margins`) beyond AdamW's? And the added question: does capping the
attention logits (QK-clip) stretch the margin of the rule it follows (`LOGIT_CAPPED`)? Margins are compared in
steps of the study's learning-rate grid (every learning rate any method has a point at). One seed per point:
a difference of one grid step can come from the seed alone, so only `GRID_STEPS_TO_SEPARATE` or more count.
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from experiments.common import verdicts

TRAINS, COLLAPSES, DIVERGES = "trains", "collapses", "diverges"  # a run's status (`study.judge_run`)
BASELINE = "adamw"
# The methods whose papers claim stability (their rows make the overall verdict); others are context.
STABILITY_METHODS = ("zclip", "spam", "stable_spam", "skip_step_on_spikes")
GRID_STEPS_TO_SEPARATE = 2
# The added question: does capping the attention logits (QK-clip) stretch the stable learning rate of the
# update rule it follows, where gradient clipping does not? Each capped method is judged against its
# uncapped rule by the same rule (`assess_rq6`'s "logit_cap").
LOGIT_CAPPED = {"adamw_qkclip": "adamw", "muon_qkclip": "muon"}


def margins(points: Mapping[str, Sequence[Mapping[str, Any]]]) -> dict[str, dict[str, Any]]:
  """method -> {"margin": the largest learning rate that trains (None: none), "first_failure": the smallest
  larger one that does not, "monotone": no learning rate below the margin fails, "at_edge": the margin is the
  largest learning rate the method has a point at (its true margin may lie beyond)}."""
  found = {}
  for name, method_points in points.items():
    ordered = sorted(method_points, key=lambda p: p["learning_rate"])
    training = [p["learning_rate"] for p in ordered if p["status"] == TRAINS]
    margin = max(training) if training else None
    above = [p["learning_rate"] for p in ordered if margin is None or p["learning_rate"] > margin]
    found[name] = {"margin": margin, "first_failure": min(above) if above else None,
                   "monotone": margin is None or all(p["status"] == TRAINS for p in ordered
                                                      if p["learning_rate"] <= margin),
                   "at_edge": margin is not None and not above}
  return found


def best_learning_rates(points: Mapping[str, Sequence[Mapping[str, Any]]]) -> dict[str, dict[str, Any]]:
  """method -> {"best": the learning rate of its lowest final validation loss among the points that train
  (None: none), "at_low_edge": that is the smallest learning rate the method has a point at, so its best may
  lie lower}."""
  found = {}
  for name, method_points in points.items():
    trained = [p for p in method_points if p["status"] == TRAINS and p.get("validation_loss") is not None]
    best = min(trained, key=lambda p: p["validation_loss"])["learning_rate"] if trained else None
    found[name] = {"best": best, "at_low_edge": best is not None and best == min(
        p["learning_rate"] for p in method_points)}
  return found


def margin_steps(summary: Mapping[str, Any], name: str, against: str = BASELINE) -> int | None:
  """Grid steps between a method's margin and `against`'s (positive: larger); None when either is missing."""
  grid = list(summary.get("grid", []))
  found = summary.get("margins", {})
  ours, baseline = found.get(name, {}).get("margin"), found.get(against, {}).get("margin")
  if ours is None or baseline is None or ours not in grid or baseline not in grid:
    return None
  return grid.index(ours) - grid.index(baseline)


def assess_rq6(summary: Mapping[str, Any]) -> dict[str, Any]:
  """RQ6's verdict from the study's summary: one row per method against AdamW (a QK-clipped method against
  its uncapped rule, `LOGIT_CAPPED`), the rule, the verdict, and the added question's ("logit_cap").

  A row is supported when the method's margin is at least `GRID_STEPS_TO_SEPARATE` grid steps above its
  reference's, not supported when that far below, inconclusive otherwise (one seed cannot separate margins one
  step apart) or when a margin is missing.
  """
  found = summary.get("margins", {})
  rows = []
  for name in found:
    if name == BASELINE:
      continue
    against = LOGIT_CAPPED.get(name, BASELINE)
    display = "AdamW" if against == BASELINE else against
    steps, margin, baseline = margin_steps(summary, name, against), found[name].get("margin"), found.get(
        against, {}).get("margin")
    ours = (f"margin {margin:g} vs {display} {baseline:g} ({steps:+d} grid steps)" if steps is not None else
            f"margin {margin if margin is not None else 'none'} vs {display} "
            f"{baseline if baseline is not None else 'none'}")
    edges = [n for n in (name, against) if found.get(n, {}).get("at_edge")]
    if edges:
      ours += f" (trains at the largest learning rate run: {', '.join(edges)}; the margin may lie beyond)"
    claim = ("capping the attention logits stretches the stable learning rate" if name in LOGIT_CAPPED else
             "stretches the stable learning rate (its paper's claim of stability)" if name in STABILITY_METHODS
             else "stretches the stable learning rate")
    row = verdicts.verdict_row(
        f"{name}: largest learning rate that trains, against {display}'s", ours, claim,
        verdicts.verdict_from_margin(steps, GRID_STEPS_TO_SEPARATE - 1),
        f"supported if {GRID_STEPS_TO_SEPARATE} or more grid steps above {display}'s margin, not supported if "
        "that far below; one step apart: one seed cannot separate them")
    rows.append(row if name in STABILITY_METHODS else verdicts.context_row(row))
  core = [row["verdict"] for row in rows if "[not in the overall verdict]" not in row["measure"]]
  capped = [row["verdict"] for row in rows if row["measure"].split(":")[0] in LOGIT_CAPPED]
  return {"rows": rows, "verdict": verdicts.combine_verdicts(core),
          "logit_cap": {"verdict": verdicts.combine_verdicts(capped) if capped else None,
                        "rule": "unanimous verdict of the rows of the QK-clipped methods against their uncapped "
                                "rules (" + ", ".join(f"{k} vs {v}" for k, v in LOGIT_CAPPED.items()) + "), else "
                                "inconclusive; none when no QK-clipped method ran"},
          "overall_rule": "overall: unanimous verdict of the rows of the methods sold on stability (ZClip, SPAM, "
                          "Stable-SPAM, skip-step; the rows marked [not in the overall verdict] are context), "
                          "else inconclusive"}
