"""The verdict vocabulary every study's rule uses (each study's rule lives in its own verdict.py).

Every verdict is computed from measured numbers; the rule's text is printed in the report beside the
verdict so that a reader can recheck it. Three outcomes only:

- ``supported``: the measured effect goes the paper's way by more than the stated margin;
- ``not supported``: it goes the other way by more than the margin;
- ``inconclusive at this scale``: anything else, including a missing number or a failed part.
"""
from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

from experiments.common.results import as_number, is_finite_number

SUPPORTED = "supported"
NOT_SUPPORTED = "not supported"
INCONCLUSIVE = "inconclusive at this scale"


def verdict_from_margin(effect: float | None, margin: float | None) -> str:
  """Verdict for a signed effect measured in the paper's favour (positive = the paper's way).

  supported if ``effect > margin``, not supported if ``effect < -margin``, inconclusive otherwise or when
  either number is missing, NaN, or the margin is infinite. An infinite effect is a valid, decisive one
  (e.g. the log-ratio of a blown-up run's error to a finite one). ``margin`` must be >= 0.
  """
  effect_is_number = isinstance(effect, (int, float)) and not isinstance(effect, bool) and not math.isnan(effect)
  if not (effect_is_number and is_finite_number(margin)):
    return INCONCLUSIVE
  if margin < 0:
    raise ValueError(f"margin must be >= 0, got {margin}")
  if effect > margin:
    return SUPPORTED
  if effect < -margin:
    return NOT_SUPPORTED
  return INCONCLUSIVE


def combine_verdicts(verdicts: Sequence[str]) -> str:
  """Overall verdict of several sub-claims: unanimous, or inconclusive."""
  if verdicts and all(v == SUPPORTED for v in verdicts):
    return SUPPORTED
  if verdicts and all(v == NOT_SUPPORTED for v in verdicts):
    return NOT_SUPPORTED
  return INCONCLUSIVE


def verdict_row(measure: str, ours: str, paper: str, verdict: str, rule: str) -> dict[str, str]:
  """One row of a research question's table: what was measured, our number, the paper's, the verdict."""
  return {"measure": measure, "ours": ours, "paper": paper, "verdict": verdict, "rule": rule}


def context_row(row: Mapping[str, str]) -> dict[str, str]:
  """The row marked as context: shown, but not part of the overall verdict."""
  return dict(row, measure=row["measure"] + " [not in the overall verdict]")


def log10_ratio(worse: Any, better: Any) -> float | None:
  """log10(worse / better) of two errors; a blown-up run's error (stored as "inf", or None) is +inf."""
  def as_error(value):
    value = math.inf if value is None else as_number(value)
    if value is None or math.isnan(value):
      return None
    return value if value > 0 else None
  worse, better = as_error(worse), as_error(better)
  if worse is None or better is None or (math.isinf(worse) and math.isinf(better)):
    return None
  if math.isinf(worse):
    return math.inf
  if math.isinf(better):
    return -math.inf
  return math.log10(worse / better)


def edges_sentence(edges: Sequence[str] | None) -> str:
  """The sentence a verdict line gains when cells it rests on were tuned at an edge of their sweeps ('' for
  none): each such cell named."""
  if not edges:
    return ""
  return (" Best learning rates at an edge of what their sweeps ran (the optimum may lie beyond), which the "
          f"verdict rests on: {', '.join(edges)}.")
