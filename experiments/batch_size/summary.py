"""The batch-size study's written outputs: summary.md, and the tables the reproduction's report shows (RQ8)."""
from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from experiments.batch_size import verdict
from experiments.common import verdicts
from experiments.common.results import format_fixed, format_seed_statistics, markdown_table


def _cell_text(cell: Mapping[str, Any] | None, key: str = "train_set_loss") -> str:
  if not cell:
    return "—"
  if cell.get("best_learning_rate") is None:
    return "all diverged"
  edge = f", edge ({cell['best_at_edge']})" if cell.get("best_at_edge") else ""
  return f"{format_seed_statistics(cell.get(key))} (lr {cell['best_learning_rate']:g}{edge})"


def _noise_text(numbers: Mapping[str, Any] | None) -> list[str]:
  if not numbers:
    return ["—"] * 4
  if "note" in numbers:
    return ["0", "—", "—", numbers["note"]]
  pooled = numbers.get("pooled", {})
  return [format_fixed(numbers["noise_norm_median"], 4), format_fixed(pooled.get("alpha_mohammadi"), 2),
          format_fixed(pooled.get("alpha_hill"), 2), f"max/median norm {format_fixed(numbers['noise_norm_max_over_median'], 2)}"]


def report_lines(summary: Mapping[str, Any]) -> list[str]:
  """The study's tables: training-set and held-out loss per batch size and optimizer, and the noise."""
  cells = summary["cells"]
  names = list(summary["config"]["optimizers"])
  sizes = [str(b) for b in summary["config"]["batch_sizes"]]
  noise = summary.get("noise", {}).get("by_batch_size", {})
  return [f"Setup: {summary['setup']}", "",
          "Final loss on the whole training set (the objective) at each cell's best learning rate: mean ± std "
          "(ddof=1) over the seeds (best lr; 'edge': the best is the smallest or largest learning rate its sweep "
          "ran).", "",
          markdown_table(["optimizer"] + [f"batch {b}" for b in sizes],
                         [[name] + [_cell_text(cells.get(b, {}).get(name)) for b in sizes] for name in names]), "",
          "Held-out MLM loss of the same runs: mean ± std over the seeds.", "",
          markdown_table(["optimizer"] + [f"batch {b}" for b in sizes],
                         [[name] + [format_seed_statistics((cells.get(b, {}).get(name) or {}).get("eval_loss"))
                                    for b in sizes] for name in names]), "",
          "Gradient noise at initialisation (minibatch gradient minus the mean of the minibatches): median noise "
          "norm, and the tail index of the pooled coordinate noise (2: Gaussian-like; smaller: heavier tails).", "",
          markdown_table(["batch", "median noise norm", "alpha (Mohammadi)", "alpha (Hill)", "note"],
                         [[b] + _noise_text(noise.get(b)) for b in sizes]), ""] + control_lines(summary)


def control_lines(summary: Mapping[str, Any]) -> list[str]:
  """The control's tables (ResNet-18 on Fashion-MNIST by the same protocol); none without a control."""
  control, assessed = summary.get("control"), verdict.assess_control(summary)
  if not control or assessed is None:
    return []
  cells = control.get("cells", {})
  names = list(summary["config"]["control"]["optimizers"])
  sizes = [str(b) for b in summary["config"]["control"]["batch_sizes"]]
  status = "" if control.get("complete") else " (incomplete)"
  gaps = [[b, format_seed_statistics(sgd), format_seed_statistics(adam), "—" if found is None else f"{found:+.4f}"]
          for b, sgd, adam, found in assessed["rows"]]
  edges = (f" Best learning rates at an edge of what their sweeps ran: {', '.join(assessed['edges'])}."
           if assessed["edges"] else "")
  return [f"**The control{status}**, which decides nothing: {control['setup']}.{edges}", "",
          "Final loss on the whole training set at each cell's best learning rate, and the held-out loss of the "
          "same runs (mean ± std over the seeds):", "",
          markdown_table(["optimizer"] + [f"batch {b}" for b in sizes],
                         [[name] + [_cell_text(cells.get(b, {}).get(name)) for b in sizes] for name in names]
                         + [[f"{name}, held-out"] + [format_seed_statistics((cells.get(b, {}).get(name) or {})
                                                                            .get("eval_loss")) for b in sizes]
                            for name in names]), "",
          "The control's gap, SGD's final training-set loss minus Adam's, by batch size:", "",
          markdown_table(["batch", "SGD", "Adam", "gap"], gaps), ""]


def summary_markdown(summary: Mapping[str, Any]) -> str:
  """summary.md: the question, the tables, the verdict with its rule, the figure."""
  assessed = verdict.assess_rq8(summary)
  status = ("complete" if summary.get("complete") else
            f"incomplete: {summary.get('cells_done')} of {summary.get('cells_planned')} cells run")
  lines = [f"# RQ8: does the Adam-SGD gap come from the noise? ({summary['mode']}, {status})", ""]
  lines += report_lines(summary)
  lines += [f"**Verdict: {assessed['verdict']}.**{verdicts.edges_sentence(assessed.get('edges'))} Rule: "
            f"{assessed['overall_rule']}.", "",
            markdown_table(["measure", "ours"], [[row["measure"], row["ours"]] for row in assessed["rows"]]), ""]
  if summary.get("figures", {}).get("batch_size"):
    lines += [f"![training loss against batch size]({summary['figures']['batch_size']})", ""]
  return "\n".join(lines)
