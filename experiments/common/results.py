"""Writing and reading the studies' results: JSON, CSV, number formatting, statistics over seeds.

One rule for non-finite numbers everywhere: JSON has no NaN or infinity, so a non-finite float is written as
the string ``"nan"``, ``"inf"`` or ``"-inf"`` (a diverged run stays visible and readable), and `as_number`
reads those strings back as floats. None means "not measured".
"""
from __future__ import annotations

import csv
import json
import math
import os
from typing import Any, Iterable, Mapping, Sequence

import numpy as np

_NON_FINITE = {"nan": math.nan, "inf": math.inf, "-inf": -math.inf}


def to_jsonable(value: Any) -> Any:
  """Numbers, arrays and NamedTuples to plain JSON types; non-finite floats become "nan"/"inf"/"-inf"."""
  if isinstance(value, Mapping):
    return {str(k): to_jsonable(v) for k, v in value.items()}
  if isinstance(value, (list, tuple)):
    return [to_jsonable(v) for v in value]
  if hasattr(value, "tolist"):  # numpy / jax arrays and scalars
    return to_jsonable(value.tolist())
  if isinstance(value, float) and not math.isfinite(value):
    return str(value)
  if value is None or isinstance(value, (str, bool, int, float)):
    return value
  return str(value)


def as_number(value: Any) -> float | None:
  """A stored number as a float ("nan"/"inf"/"-inf" included); None for None or anything else."""
  if isinstance(value, str):
    return _NON_FINITE.get(value)
  if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
    return None
  return float(value)


def is_finite_number(value: Any) -> bool:
  """Whether the value is a real, finite number (bools and strings are not)."""
  return (not isinstance(value, (bool, str)) and isinstance(value, (int, float, np.integer, np.floating))
          and math.isfinite(value))


def finite_or_none(value: Any) -> float | None:
  """The value as a float when it is a finite number, else None."""
  return float(value) if is_finite_number(value) else None


def write_json(path: str, value: Any) -> None:
  """`to_jsonable(value)` to ``path``, indented, written atomically (a reader never sees half a file)."""
  with open(path + ".tmp", "w") as f:
    json.dump(to_jsonable(value), f, indent=2)
    f.write("\n")
  os.replace(path + ".tmp", path)


def read_json(path: str) -> Any:
  with open(path) as f:
    return json.load(f)


def flatten(tree: Any, prefix: str = "") -> list[tuple[str, Any]]:
  """(dotted key, leaf) pairs of a nested dict/list, for the CSV."""
  if isinstance(tree, Mapping):
    pairs = []
    for key, value in tree.items():
      pairs += flatten(value, f"{prefix}.{key}" if prefix else str(key))
    return pairs
  if isinstance(tree, (list, tuple)) and tree and all(isinstance(v, (Mapping, list, tuple)) for v in tree):
    pairs = []
    for index, value in enumerate(tree):
      pairs += flatten(value, f"{prefix}[{index}]")
    return pairs
  return [(prefix, tree)]


def write_flat_csv(path: str, tree: Any) -> None:
  """Every number of a results tree as a ``key,value`` row."""
  with open(path, "w", newline="") as f:
    writer = csv.writer(f)
    writer.writerow(["key", "value"])
    for key, value in flatten(to_jsonable(tree)):
      writer.writerow([key, json.dumps(value) if isinstance(value, (list, dict)) else value])


def write_rows_csv(path: str, rows: Iterable[Mapping[str, Any]], columns: Sequence[str]) -> None:
  """One CSV row per dict, in ``columns`` order (a missing or None value is an empty cell; an unknown key
  is an error, so a column is never silently dropped)."""
  with open(path, "w", newline="") as f:
    writer = csv.DictWriter(f, fieldnames=list(columns), extrasaction="raise")
    writer.writeheader()
    for row in rows:
      writer.writerow({k: "" if v is None else to_jsonable(v) for k, v in row.items()})


def format_number(value: Any, digits: int = 4) -> str:
  """Compact text for a table cell: `digits` significant digits, '—' for missing, 'nan'/'inf' visible."""
  if value is None:
    return "—"
  if isinstance(value, (bool, int, np.integer)):
    return str(value)
  if isinstance(value, (float, np.floating)):
    return str(float(value)) if not math.isfinite(value) else f"{value:.{digits}g}"
  return str(value)


def seed_statistics(values: Sequence[float]) -> dict[str, Any]:
  """Mean, sample standard deviation (ddof=1; None for one value), min, max and count of per-seed values.

  A non-finite value (a diverged seed) makes the mean and std non-finite on purpose: it must show.
  """
  values = [float(v) for v in values]
  if not values:
    return {"mean": None, "std": None, "min": None, "max": None, "n": 0, "values": []}
  array = np.asarray(values, dtype=np.float64)
  return {
      "mean": float(array.mean()),
      "std": float(array.std(ddof=1)) if len(values) > 1 else None,
      "min": float(array.min()),
      "max": float(array.max()),
      "n": len(values),
      "values": values,
  }


def format_seed_statistics(stats: Mapping[str, Any] | None, with_range: bool = False) -> str:
  """'mean ± std (n=N)' or 'mean ± std [min, max]' of a `seed_statistics` dict; '—' when empty."""
  if not stats or stats.get("mean") is None:
    return "—"
  text = format_number(as_number(stats["mean"]))
  if stats.get("std") is not None:
    text += f" ± {format_number(as_number(stats['std']), 2)}"
  if with_range:
    return text + f" [{format_number(as_number(stats['min']))}, {format_number(as_number(stats['max']))}]"
  return text + f" (n={stats.get('n')})"


def quantile(values: np.ndarray, q: float) -> float:
  """A sample quantile over seeds that treats NaN as +inf (a blown-up run) and never interpolates with inf."""
  values = np.where(np.isnan(values), np.inf, values)
  return float(np.quantile(values, q, method="inverted_cdf"))


def markdown_table(headers: Sequence[str], rows: Iterable[Sequence[Any]]) -> str:
  """A GitHub-flavoured Markdown table; cells go through `format_number`, pipes are escaped."""
  def cell(value):
    return format_number(value).replace("|", "\\|").replace("\n", " ")
  lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
  lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in rows]
  return "\n".join(lines)


def format_fixed(value: Any, decimals: int = 2) -> str:
  """A number with a fixed number of decimals (tail indices, losses in a study's own summary.md); anything
  that is not a number as its text, e.g. "nan" or "—"."""
  number = as_number(value)
  if number is None:
    return "—" if value is None else str(value)
  return f"{number:.{decimals}f}"
