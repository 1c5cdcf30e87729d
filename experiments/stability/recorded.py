"""What the stability study takes from earlier records instead of running again: the points of a recorded
comparison (`recorded_summary`) and the judged runs of a recorded stability study (`recorded_study`)."""
from __future__ import annotations

import json
import math
import os
from collections.abc import Mapping
from typing import Any

from experiments.common import optimizers as optimizers_lib
from experiments.common import results
from experiments.comparison.sweep import is_diverged
from experiments.stability.verdict import COLLAPSES, DIVERGES, TRAINS

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
# The study config fields that make a run's number: a recorded study's runs are reused only when these match.
SETUP_FIELDS = ("comparison", "seed", "checkpoint_runs", "collapse_margin", "collapse_after", "spike_factor",
                "spike_window", "recorded_summary")


def recorded_points(settings: Any, majority_accuracy: float) -> dict[str, list[dict[str, Any]]]:
  """method -> the points of the recorded comparison summary at learning rates this study does not run,
  judged on the final validation loss (divergence) and accuracy (collapse, against the validation split's
  `majority_accuracy`): no curves were kept."""
  if not settings.recorded_summary:
    return {}
  path = os.path.join(REPO_ROOT, settings.recorded_summary)
  recorded = results.read_json(path, required=("optimizers",))
  points = {}
  for name in settings.methods:
    entry = recorded["optimizers"].get(name)
    if not entry:
      continue
    divergence_loss = float(entry.get("divergence_loss", math.inf))
    for point in entry["sweep"]:
      lr, loss = float(point["learning_rate"]), results.finite_or_none(point["validation_loss"])
      accuracy = results.finite_or_none(point.get("validation_accuracy"))
      if lr in settings.learning_rates[name]:
        continue
      status = (DIVERGES if is_diverged(loss, divergence_loss) else
                COLLAPSES if accuracy is not None and accuracy <= majority_accuracy + settings.collapse_margin
                else TRAINS)
      points.setdefault(name, []).append({"learning_rate": lr, "status": status, "validation_loss": loss,
                                          "validation_accuracy": accuracy, "source": settings.recorded_summary})
  return points


def _overrides_read_by(overrides: Mapping[str, Any], method: str) -> dict[str, Any]:
  """The overrides that change a method's run: all but the optimizer fields the method does not read."""
  unread = set(optimizers_lib.OPTIMIZER_FIELDS) - set(optimizers_lib.REGISTRY[method].fields)
  return {key: value for key, value in overrides.items() if key not in unread}


def recorded_runs(settings: Any, baselines: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
  """"method/lrX" -> the judged run of the recorded study (`settings.recorded_study`) for each method this study
  runs (at any learning rate it recorded: the study reuses those it reaches), marked with its source; {} without
  one.

  Raises:
    ValueError: the recorded study's setup differs from this one's (a field of `SETUP_FIELDS`, the overrides a
      method reads, or the held-out baselines its runs were judged against).
  """
  if not settings.recorded_study:
    return {}
  path = os.path.join(REPO_ROOT, settings.recorded_study)
  recorded = results.read_json(path, required=("config", "runs", "baselines"))
  theirs = recorded["config"]
  differing = [field for field in SETUP_FIELDS if theirs.get(field) != getattr(settings, field)]
  if recorded["baselines"]["eval"] != json_round_trip(baselines["eval"]):
    differing.append("baselines (the held-out data)")
  found = {}
  for key, run in recorded["runs"].items():
    name = run["method"]
    if name not in settings.methods:  # a run past the grid (an extension) is kept too: it is reused if extended
      continue
    if _overrides_read_by(theirs.get("overrides", {}), name) != _overrides_read_by(settings.overrides, name):
      differing.append(f"the overrides {name} reads")
    found[key] = dict(run, source=settings.recorded_study)
  if differing:
    raise ValueError(f"recorded_study={settings.recorded_study!r} was run with another setup (it differs in "
                     f"{', '.join(sorted(set(differing)))}); run every method here, or record a matching study")
  return found


def json_round_trip(value: Any) -> Any:
  """`value` as a summary.json holds it (tuples as lists, float keys as strings)."""
  return json.loads(json.dumps(value))
