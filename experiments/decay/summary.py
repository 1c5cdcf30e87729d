"""The weight-decay factorial's written outputs: summary.md, and the tables the reproduction's report shows (RQ7)."""
from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from experiments.common import verdicts
from experiments.common.results import format_seed_statistics, markdown_table
from experiments.comparison import summary as comparison_summary
from experiments.decay import verdict


def _cell_text(cell: Mapping[str, Any] | None) -> str:
  if not cell:
    return "—"
  best = cell.get("best_learning_rate")
  if best is None:
    return "all diverged"
  edge = f", edge ({cell['best_at_edge']})" if cell.get("best_at_edge") else ""
  return f"{format_seed_statistics(cell['eval_loss'])} (lr {best:g}{edge})"


def report_lines(summary: Mapping[str, Any]) -> list[str]:
  """The factorial's tables: held-out loss per rule and decay mode, accuracy, and the loss by frequency."""
  cells = summary["cells"]
  rules = list(summary["config"]["rules"])
  modes = list(cells)
  lines = [f"Setup: {summary['setup']}", "",
           "Held-out MLM loss at each cell's best learning rate: mean ± std (ddof=1) over the seeds (best lr; "
           "'edge': the best is the smallest or largest learning rate its sweep ran).", "",
           markdown_table(["rule"] + [f"decay {mode}" for mode in modes],
                          [[rule] + [_cell_text(cells[mode].get(rule)) for mode in modes] for rule in rules]), "",
           "Held-out MLM accuracy: mean ± std over the seeds.", "",
           markdown_table(["rule"] + [f"decay {mode}" for mode in modes],
                          [[rule] + [format_seed_statistics((cells[mode].get(rule) or {}).get("eval_accuracy"))
                                     for mode in modes] for rule in rules]), "",
           "Where each cell comes from: " + "; ".join(
               f"{rule} ({mode}): {cell['source']}" for mode in modes for rule, cell in cells[mode].items()) + ".", ""]
  by_frequency = {f"{rule} ({mode})": cell for mode in modes for rule, cell in cells[mode].items()
                  if cell.get("eval_loss_by_frequency")}
  lines += comparison_summary.frequency_lines(by_frequency)
  return lines


def summary_markdown(summary: Mapping[str, Any]) -> str:
  """summary.md: the question, the tables, the verdict with its rule, the figure."""
  assessed = verdict.assess_rq7(summary)
  status = ("complete" if summary.get("complete") else
            f"incomplete: {summary.get('cells_done')} of {summary.get('cells_planned')} cells run")
  lines = [f"# RQ7: the clip or the weight decay? ({summary['mode']}, {status})", "",
           "What separates the paper's ACClip from Adam(W) on BERT: the clip or the weight decay?", ""]
  lines += report_lines(summary)
  lines += [f"**Verdict: {assessed['verdict']}.**{verdicts.edges_sentence(assessed.get('edges'))} Rule: "
            f"{assessed['overall_rule']}.", "",
            markdown_table(["measure", "ours", "verdict"],
                           [[row["measure"], row["ours"], row["verdict"]] for row in assessed["rows"]]), ""]
  if summary.get("figures", {}).get("factorial"):
    lines += [f"![held-out loss over the rule x decay grid]({summary['figures']['factorial']})", ""]
  return "\n".join(lines)
