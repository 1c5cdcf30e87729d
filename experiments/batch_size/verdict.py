"""The batch-size study's research-question rule (RQ8), used by its own summary.md and by the report.

RQ8 is a question of our own: the paper explains Adam's (and ACClip's) lead over SGD on BERT by heavy-tailed
gradient noise; Kunstner et al. (ICLR 2023, arXiv 2304.13960) find that the gap does not shrink as the batch
grows and persists with full batches, where there is no noise. On one fixed objective (a statically masked
subset of the corpus, no dropout, no weight decay) each optimizer is tuned per batch size on its final loss
on the whole training set, and

    gap(B) = mean over seeds of SGD's final training-set loss - Adam's, at batch size B.

The noise explanation is **supported** when gap(full batch) < GAP_FRACTION x gap(smallest batch), **not
supported** when gap(full batch) >= gap(smallest batch), inconclusive otherwise, and also when SGD does not
trail Adam at the smallest batch (there is no gap to explain), a cell is missing, or the study is incomplete.
Clipping's gain over SGD (GClip, the paper's ACClip: SGD's loss minus theirs) is reported per batch size,
beside the gap; it decides nothing. A cell whose best learning rate sits at an edge of what its sweep ran is
named beside the verdict.
"""
from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from experiments.common import verdicts
from experiments.common.results import format_seed_statistics, is_finite_number

SGD, ADAM = "sgd", "adam"
CLIPPED = ("gclip", "acclip")
GAP_FRACTION = 0.5
MEASURE = "train_set_loss"
OVERALL_RULE = (f"gap(B) = SGD's mean final training-set loss minus Adam's at batch size B: supported when "
                f"gap(full batch) < {GAP_FRACTION:g} x gap(smallest batch), not supported when gap(full batch) >= "
                "gap(smallest batch), else inconclusive (also when SGD does not trail Adam at the smallest batch, "
                "a cell is missing or the study is incomplete)")


def mean_loss(cells: Mapping[str, Mapping[str, Any]], batch_size: str, name: str) -> float | None:
  """The mean final training-set loss of `name` at `batch_size` (a key of the summary's cells), or None."""
  stats = cells.get(batch_size, {}).get(name, {}).get(MEASURE) or {}
  return stats.get("mean") if is_finite_number(stats.get("mean")) else None


def gap(cells, batch_size: str, baseline: str = ADAM, name: str = SGD) -> float | None:
  """`name`'s mean final training-set loss minus `baseline`'s at `batch_size` (None: a cell is missing)."""
  ours, base = mean_loss(cells, batch_size, name), mean_loss(cells, batch_size, baseline)
  return None if ours is None or base is None else ours - base


def verdict_from_gaps(smallest: float | None, full: float | None) -> str:
  """The rule of the module docstring from gap(smallest batch) and gap(full batch)."""
  if smallest is None or full is None or smallest <= 0:
    return verdicts.INCONCLUSIVE
  if full < GAP_FRACTION * smallest:
    return verdicts.SUPPORTED
  if full >= smallest:
    return verdicts.NOT_SUPPORTED
  return verdicts.INCONCLUSIVE


def assess_rq8(summary: Mapping[str, Any]) -> dict[str, Any]:
  """RQ8's verdict from the study's summary (`study.run`): a row per batch size, the rule, the verdict."""
  cells = summary.get("cells", {})
  planned = [str(b) for b in summary.get("config", {}).get("batch_sizes", ())]  # ascending, the last the full batch
  batch_sizes = [b for b in planned if b in cells]
  rows = []
  for batch_size in batch_sizes:
    found = gap(cells, batch_size)
    edges = [name for name, cell in cells[batch_size].items() if cell.get("best_at_edge")]
    ours = (f"SGD {format_seed_statistics(cells[batch_size].get(SGD, {}).get(MEASURE))} vs Adam "
            f"{format_seed_statistics(cells[batch_size].get(ADAM, {}).get(MEASURE))}: gap "
            + (f"{found:+.4f}" if found is not None else "—"))
    # Clipping's gain over SGD: SGD's loss minus the clipped rule's (positive: the clip helps).
    gains = [f"{name} {gap(cells, batch_size, baseline=name):+.4f}" for name in CLIPPED
             if gap(cells, batch_size, baseline=name) is not None]
    if gains:
      ours += f"; clipping's gain over SGD: {', '.join(gains)}"
    if edges:
      ours += f" (best learning rate at the edge of the swept range: {', '.join(edges)})"
    rows.append(verdicts.verdict_row(f"final training-set loss, batch {batch_size}", ours,
                                     "the gap shrinks with the noise (the paper's mechanism)", "—",
                                     "context: the verdict compares the smallest and the full batch"))
  smallest = gap(cells, planned[0]) if planned else None
  full = gap(cells, planned[-1]) if planned else None
  verdict = verdict_from_gaps(smallest, full) if summary.get("complete") else verdicts.INCONCLUSIVE
  # The cells the verdict reads: SGD and Adam at the smallest and the full batch.
  edges = sorted({f"{name} (batch {b})" for b in dict.fromkeys(planned[:1] + planned[-1:]) if b in cells
                  for name in (SGD, ADAM) if cells[b].get(name, {}).get("best_at_edge")})
  return {"rows": rows, "verdict": verdict, "overall_rule": OVERALL_RULE, "edges": edges,
          "gap_smallest": smallest, "gap_full": full}


def assess_control(summary: Mapping[str, Any]) -> dict[str, Any] | None:
  """The control's gap per batch size (`experiments.batch_size.control`), reported beside the verdict and
  deciding nothing; None when the study has no control.

  Returns:
    {"rows": [(batch size, SGD's statistics, Adam's, gap or None)], "gap_smallest", "gap_full", "edges"}.
  """
  control = summary.get("control")
  if not control:
    return None
  cells = control.get("cells", {})
  planned = [str(b) for b in summary.get("config", {}).get("control", {}).get("batch_sizes", ())]
  rows = [(b, cells[b].get(SGD, {}).get(MEASURE), cells[b].get(ADAM, {}).get(MEASURE), gap(cells, b))
          for b in planned if b in cells]
  edges = sorted(f"{name} (batch {b})" for b in cells for name, cell in cells[b].items() if cell.get("best_at_edge"))
  return {"rows": rows, "gap_smallest": gap(cells, planned[0]) if planned else None,
          "gap_full": gap(cells, planned[-1]) if planned else None, "edges": edges}
