"""The synthetic study's research-question rules: RQ2 (SGD vs GClip under heavy tails, GClip's rate) and RQ3
(the dimension dependence of GClip's error that CClip removes), from the study's key numbers
(`study.run`: 'rq2', 'rates', 'rq3').
"""
from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from experiments.common.results import finite_or_none, format_number, is_finite_number
from experiments.common.verdicts import (combine_verdicts, context_row, log10_ratio, verdict_from_margin,
                                         verdict_row)

SLOPE_MARGIN = 0.1  # log-log slopes
FACTOR_MARGIN = 2.0  # error ratios: a factor of 2 either way


def assess_rq2(summary: Mapping[str, Any]) -> dict[str, Any]:
  """RQ2 from the study's summary: SGD vs GClip at the heaviest tail, and GClip's measured rates."""
  headline = summary.get("rq2", {})
  alpha = headline.get("alpha")
  rows, informative = [], []
  for problem, numbers in headline.items():
    if not isinstance(numbers, Mapping):
      continue
    effect = log10_ratio(numbers.get("sgd_tuned_p90"), numbers.get("gclip_tuned_p90"))
    rows.append(verdict_row(
        f"90th percentile of final f - f*, tuned SGD vs tuned GClip, alpha = {format_number(alpha)}, {problem}",
        f"SGD {format_number(numbers.get('sgd_tuned_p90'))} vs GClip {format_number(numbers.get('gclip_tuned_p90'))}"
        " (inf = blew up)", "GClip converges, SGD can diverge",
        verdict_from_margin(effect, math.log10(FACTOR_MARGIN)),
        f"supported if SGD's p90 exceeds GClip's by more than a factor {FACTOR_MARGIN}; not supported if "
        f"GClip's exceeds SGD's by that factor"))
    informative.append(verdict_row(
        f"fraction of diverged runs, theory schedules, SGD vs GClip, {problem}",
        f"SGD {format_number(numbers.get('sgd_theory_diverged_fraction'))} vs GClip "
        f"{format_number(numbers.get('gclip_theory_diverged_fraction'))}", "SGD can diverge",
        verdict_from_margin(
            numbers["sgd_theory_diverged_fraction"] - numbers["gclip_theory_diverged_fraction"]
            if is_finite_number(numbers.get("sgd_theory_diverged_fraction"))
            and is_finite_number(numbers.get("gclip_theory_diverged_fraction")) else None, 0.05),
        "supported if SGD diverges in more than 5 percentage points more runs than GClip"))
  rates = summary.get("rates", {}).get("by_alpha", {})
  for alpha_key, numbers in rates.items():
    theory, measured = finite_or_none(numbers.get("theory_slope")), finite_or_none(numbers.get("gclip_theory_slope"))
    if theory is None or theory == 0:  # alpha = 2: the bound gives no rate to check against
      continue
    rows.append(verdict_row(
        f"GClip (theory schedule) log-log slope of median f - f* vs k, alpha = {alpha_key}",
        format_number(measured), f"at least as steep as -2(alpha-1)/alpha = {format_number(theory)}",
        # The theory's rate is a bound: matching it or beating it supports the claim.
        verdict_from_margin(theory + 1.5 * SLOPE_MARGIN - measured if measured is not None else None,
                            SLOPE_MARGIN / 2),
        f"supported if the measured slope is below the theory's + {SLOPE_MARGIN} (as fast as the bound, or "
        f"faster); not supported if above the theory's + {2 * SLOPE_MARGIN:g}; inconclusive in between"))
  return {"rows": rows + [context_row(r) for r in informative],
          "verdict": combine_verdicts([r["verdict"] for r in rows]),
          "overall_rule": "overall: unanimous verdict of the p90 and rate rows, else inconclusive"}


def assess_rq3(summary: Mapping[str, Any]) -> dict[str, Any]:
  """RQ3 from the study's summary: slope of the per-coordinate error against d, GClip vs CClip."""
  by_alpha = summary.get("rq3", {})
  rows, informative = [], []
  for alpha_key, numbers in by_alpha.items():
    gclip, cclip = finite_or_none(numbers.get("gclip_tuned_slope_vs_d")), finite_or_none(numbers.get("cclip_tuned_slope_vs_d"))
    # Where GClip's bound predicts no growth in d (alpha = 2: exponent 2/alpha - 1 = 0), both methods are
    # expected flat: that row is a control, not evidence for or against the claim.
    is_control = finite_or_none(numbers.get("gclip_bound_exponent_2_over_alpha_minus_1")) == 0
    (informative if is_control else rows).append(verdict_row(
        f"slope of log per-coordinate error vs log d, tuned, alpha = {alpha_key}",
        f"GClip {format_number(gclip)} vs CClip {format_number(cclip)}",
        "both flat (control: the bound predicts no growth)" if is_control
        else "GClip's grows with d, CClip's does not",
        verdict_from_margin(gclip - cclip if gclip is not None and cclip is not None else None, SLOPE_MARGIN),
        f"supported if GClip's slope exceeds CClip's by more than {SLOPE_MARGIN}; not supported if CClip's "
        f"exceeds GClip's by that much"))
    rows.append(verdict_row(
        f"CClip's per-coordinate error flat in d, alpha = {alpha_key}", format_number(cclip), "slope about 0",
        verdict_from_margin(2 * SLOPE_MARGIN - abs(cclip) if cclip is not None else None, SLOPE_MARGIN),
        f"supported if |slope| < {SLOPE_MARGIN}; not supported if |slope| > {3 * SLOPE_MARGIN:g}"))
    acclip = finite_or_none(numbers.get("acclip_tuned_slope_vs_d"))
    if "acclip_tuned_slope_vs_d" in numbers:
      informative.append(verdict_row(
          f"slope vs d, tuned, alpha = {alpha_key}, GClip vs ACClip", f"GClip {format_number(gclip)} vs "
          f"ACClip {format_number(acclip)}", "ACClip flat like CClip",
          verdict_from_margin(gclip - acclip if gclip is not None and acclip is not None else None, SLOPE_MARGIN),
          f"supported if GClip's slope exceeds ACClip's by more than {SLOPE_MARGIN}"))
    for method in ("gclip", "cclip"):
      key = f"{method}_theory_slope_vs_d"
      if key in numbers:
        informative.append(verdict_row(f"{method} slope vs d with the theory's parameters, alpha = {alpha_key}",
                                format_number(finite_or_none(numbers[key])), "context", "—",
                                "context only (no verdict)"))
  return {"rows": rows + [context_row(r) for r in informative],
          "verdict": combine_verdicts([r["verdict"] for r in rows]),
          "overall_rule": "overall: unanimous verdict of the GClip-vs-CClip and CClip-flatness rows, else "
                          "inconclusive"}
