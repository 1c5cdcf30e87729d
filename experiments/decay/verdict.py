"""The weight-decay factorial's research-question rule (RQ7), used by its own summary.md and by the report.

RQ7 is a question of our own: in the BERT comparison (RQ4) the paper's ACClip trails Adam(W), and the
optimizers split into two groups by their weight decay rather than by clipping. Which one explains the gap
between the paper's ACClip and Adam: the clip (the update rule) or the weight decay it was run with?

Per decay mode d that both cells share, the gap is gap(d) = mean held-out MLM loss of the paper's ACClip
minus Adam's under d (positive: ACClip trails), and the spread is the larger of the two cells' seed standard
deviations (ddof=1), the comparison's convention (`experiments.comparison.verdict`). Then

* **the clip explains it** when ACClip trails Adam by more than the spread under every decay mode both share;
* **the decay explains it** when under no decay and under independent decay |gap| is within the spread,
  while in the pairings of RQ4 it is not: ACClip with decoupled decay against Adam with coupled L2 (RQ4's
  own pair) and against AdamW (both decoupled), and both coupled where the study has that cell;
* **inconclusive** otherwise, also when the study is incomplete, a cell is missing or has one seed.

A cell whose best learning rate sits at an edge of what its sweep ran is named beside the verdict: the
gap there may be the grid's, not the rule's.
"""
from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from experiments.common import verdicts
from experiments.common.results import format_seed_statistics, is_finite_number

CLIP_EXPLAINS = "the clip explains it"
DECAY_EXPLAINS = "the decay explains it"
RULE, BASELINE = "acclip", "adam"
NEUTRAL_MODES = ("none", "independent")  # the peak learning rate does not set the decay's strength
# The pairings of the comparison (RQ4), as (ACClip's decay mode, Adam's): its ACClip (decoupled) against its
# Adam (coupled L2) and against AdamW (decoupled), and the coupled pairing where the factorial has it.
RQ4_PAIRS = (("decoupled", "coupled"), ("decoupled", "decoupled"), ("coupled", "coupled"))
OVERALL_RULE = (
    "gap = mean held-out loss of the paper's ACClip minus Adam's, spread = the larger seed std of the two "
    f"cells: '{CLIP_EXPLAINS}' when the gap exceeds the spread under every decay mode both ran; "
    f"'{DECAY_EXPLAINS}' when |gap| <= spread under no decay and under independent decay while |gap| > spread "
    "in every pairing of RQ4 the study has (ACClip decoupled vs Adam coupled, vs AdamW, and both coupled); "
    "else inconclusive (also when the study is incomplete, a cell is missing or has one seed)")


def gap(cells: Mapping[str, Mapping[str, Any]], rule_mode: str, baseline_mode: str | None = None
        ) -> dict[str, Any] | None:
  """{"gap", "spread"} of ACClip under `rule_mode` against Adam under `baseline_mode` (default: the same);
  None when a cell is missing or has no finite mean; spread None with one seed."""
  ours = cells.get(rule_mode, {}).get(RULE, {}).get("eval_loss")
  base = cells.get(baseline_mode or rule_mode, {}).get(BASELINE, {}).get("eval_loss")
  if not (ours and base and is_finite_number(ours.get("mean")) and is_finite_number(base.get("mean"))):
    return None
  stds = [ours.get("std"), base.get("std")]
  spread = max(stds) if all(is_finite_number(s) for s in stds) else None
  return {"gap": ours["mean"] - base["mean"], "spread": spread}


def _edges(cells: Mapping[str, Mapping[str, Any]], *modes: str) -> list[str]:
  names = [(RULE, modes[0]), (BASELINE, modes[-1])]
  return [f"{name} ({mode})" for name, mode in names if cells.get(mode, {}).get(name, {}).get("best_at_edge")]


def _row(cells, rule_mode: str, baseline_mode: str) -> dict[str, str]:
  found = gap(cells, rule_mode, baseline_mode)
  label = rule_mode if rule_mode == baseline_mode else f"ACClip {rule_mode}, Adam {baseline_mode}"
  if found:
    ours = (f"ACClip {format_seed_statistics(cells[rule_mode][RULE]['eval_loss'])} vs Adam "
            f"{format_seed_statistics(cells[baseline_mode][BASELINE]['eval_loss'])}: gap {found['gap']:+.4f}, "
            "spread " + (f"{found['spread']:.4f}" if found["spread"] is not None else "none (one seed)"))
  else:
    ours = "a cell is missing"
  edges = _edges(cells, rule_mode, baseline_mode)
  if edges:
    ours += f" (best learning rate at the edge of the swept range: {', '.join(edges)})"
  trails = verdicts.verdict_from_margin(found["gap"], found["spread"]) if found else verdicts.INCONCLUSIVE
  return verdicts.verdict_row(
      f"held-out MLM loss, the paper's ACClip vs Adam, decay {label}", ours, "ACClip lower (the paper's RQ4)",
      {verdicts.SUPPORTED: "ACClip trails", verdicts.NOT_SUPPORTED: "ACClip leads"}.get(trails, "within the spread"),
      "trails / leads when the gap exceeds the larger seed std of the two cells, else within the spread")


def assess_rq7(summary: Mapping[str, Any]) -> dict[str, Any]:
  """RQ7's verdict from the study's summary (`study.run`): one row per decay mode and RQ4 pairing, the verdict."""
  cells = summary.get("cells", {})
  modes = [mode for mode in cells if gap(cells, mode) is not None]
  pairs = [pair for pair in RQ4_PAIRS if pair[0] != pair[1] and gap(cells, *pair) is not None]
  rows = [_row(cells, mode, mode) for mode in modes] + [_row(cells, *pair) for pair in pairs]
  verdict = verdict_from_cells(cells) if summary.get("complete") else verdicts.INCONCLUSIVE
  edges = sorted({edge for mode in cells for edge in _edges(cells, mode, mode)})
  return {"rows": rows, "verdict": verdict, "overall_rule": OVERALL_RULE, "edges": edges}


def verdict_from_cells(cells: Mapping[str, Mapping[str, Any]]) -> str:
  """The rule of the module docstring over the cells {decay mode: {rule: result with "eval_loss"}}."""
  same = {mode: gap(cells, mode) for mode in cells}
  same = {mode: found for mode, found in same.items() if found is not None}
  if not same or any(found["spread"] is None for found in same.values()):
    return verdicts.INCONCLUSIVE
  if all(found["gap"] > found["spread"] for found in same.values()):
    return CLIP_EXPLAINS
  neutral = [same.get(mode) for mode in NEUTRAL_MODES]
  rq4 = [found for found in (gap(cells, *pair) for pair in RQ4_PAIRS) if found is not None]
  if (all(found is not None and abs(found["gap"]) <= found["spread"] for found in neutral) and rq4
      and all(found["spread"] is not None and abs(found["gap"]) > found["spread"] for found in rq4)):
    return DECAY_EXPLAINS
  return verdicts.INCONCLUSIVE
