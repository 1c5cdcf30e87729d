"""The noise study's research-question rule (RQ1), used by its own summary.md and by the report.

One place for the rule, so that the two cannot disagree: BERT's gradient noise is heavier-tailed than
ResNet's (the Mohammadi tail index, smaller by more than ALPHA_MARGIN) and tuned SGD trails Adam by more on
BERT than on ResNet (the relative held-out-loss gap, larger by more than RELATIVE_GAP_MARGIN); the overall
verdict needs both. Hill's estimator, the gap in seed standard deviations and the variance growth are shown
as context.
"""
from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from experiments.common import results
from experiments.common import verdicts

ALPHA_MARGIN = 0.1  # tail indices: estimator differences below this are not called
RELATIVE_GAP_MARGIN = 0.02  # relative held-out-loss gaps: 2 % of the loss


def assess_rq1(numbers: Mapping[str, Any]) -> dict[str, Any]:
  """RQ1's verdict from the study's ``rq1`` numbers (`study.rq1_numbers`): rows, verdict and rules.

  Returns:
    {"rows": [verdict rows], "verdict": supported / not supported / inconclusive, "overall_rule": text};
    the rows marked "[not in the overall verdict]" are context.
  """
  number, fmt, row = results.finite_or_none, results.format_number, verdicts.verdict_row
  bert, resnet = numbers.get("bert", {}), numbers.get("resnet", {})

  def difference(first, second):
    return first - second if first is not None and second is not None else None

  rows = []
  for estimator in ("mohammadi", "hill"):
    key = f"alpha_{estimator}_pooled_final"
    b, r = number(bert.get(key)), number(resnet.get(key))
    rows.append(row(
        f"pooled tail index of the noise coordinates ({estimator.capitalize()}), end of training",
        f"BERT {fmt(b)} vs ResNet {fmt(r)}", "BERT heavier-tailed (smaller alpha)",
        verdicts.verdict_from_margin(difference(r, b), ALPHA_MARGIN),
        f"supported if BERT's alpha is below ResNet's by more than {ALPHA_MARGIN}; not supported if above "
        f"by more than {ALPHA_MARGIN}"))
  b, r = number(bert.get("sgd_minus_adam_relative")), number(resnet.get("sgd_minus_adam_relative"))
  rows.append(row(
      "tuned SGD minus Adam held-out loss, relative to Adam's", f"BERT {fmt(b)} vs ResNet {fmt(r)}",
      "SGD far behind on BERT, competitive on ResNet",
      verdicts.verdict_from_margin(difference(b, r), RELATIVE_GAP_MARGIN),
      f"supported if the relative gap is larger on BERT by more than {RELATIVE_GAP_MARGIN}; not supported if "
      f"smaller by that much"))
  gap_std = number(bert.get("gap_in_seed_std"))
  growth_bert, growth_resnet = number(bert.get("variance_growth_final")), number(resnet.get("variance_growth_final"))
  context = [
      row("SGD minus Adam on BERT, in seed standard deviations", fmt(gap_std), "SGD behind (> 0)",
          verdicts.verdict_from_margin(gap_std, 1.0), "supported if SGD is behind by more than one seed std"),
      row("variance-estimate growth var(n)/var(n/2), end of training",
          f"BERT {fmt(growth_bert)} vs ResNet {fmt(growth_resnet)}",
          "keeps growing for BERT (> 1), converged for ResNet (about 1)",
          verdicts.verdict_from_margin(difference(growth_bert, growth_resnet), 0.1),
          "supported if BERT's growth ratio exceeds ResNet's by more than 0.1"),
  ]
  core = [rows[0], rows[2]]
  # The SGD-gap row rests on each model's tuned SGD and Adam (study._optimizer_comparison).
  edges = [f"{name} on {model}" for model, model_numbers in (("BERT", bert), ("ResNet", resnet))
           for name in model_numbers.get("best_at_grid_edge", ())]
  return {"rows": rows + [verdicts.context_row(r) for r in context],
          "verdict": verdicts.combine_verdicts([r["verdict"] for r in core]), "edges": edges,
          "overall_rule": "overall: unanimous verdict of the Mohammadi tail-index row and the SGD-gap row "
                          "(Hill's estimator and the rows marked [not in the overall verdict] are context), "
                          "else inconclusive"}
