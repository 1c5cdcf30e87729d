"""Writing and reading the studies' results: JSON, CSV, number formatting, statistics over seeds.

One rule for non-finite numbers everywhere: JSON has no NaN or infinity, so a non-finite float is written as
the string ``"nan"``, ``"inf"`` or ``"-inf"`` (a diverged run stays visible and readable), and `as_number`
reads those strings back as floats. None means "not measured".
"""
from __future__ import annotations

import contextlib
import csv
import io
import json
import logging
import math
import os
import shutil
from typing import Any, Callable, Iterable, Mapping, Sequence

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


def write_file(path: str, write: Callable[[str], Any]) -> None:
  """``write(temporary path)``, then the result moved to ``path`` atomically (a reader never sees half a file;
  an old file stays until the new one is whole). Every file the project writes goes through here (`write_text`,
  `write_bytes`, `copy_file`, `figures.save_figure`, the exported weights) or `append_text`; checkpoints through Orbax.

  Raises:
    OSError: naming ``path`` (a full disk among them: errno ENOSPC); no ``.tmp`` is left behind.
  """
  temporary = path + ".tmp"
  try:
    write(temporary)
    os.replace(temporary, path)
  except BaseException as error:  # a full disk, a failing writer, an interrupt: no .tmp stays behind
    with contextlib.suppress(OSError):
      os.remove(temporary)
    if isinstance(error, OSError):
      raise OSError(error.errno, error.strerror, path) from error
    raise


def write_text(path: str, text: str) -> None:
  """`text` to ``path``, atomically and naming the file on failure (`write_file`)."""
  def write(temporary: str) -> None:
    with open(temporary, "w", encoding="utf-8", newline="") as f:
      f.write(text)
  write_file(path, write)


def write_bytes(path: str, data: bytes) -> None:
  """``data`` to ``path``, atomically and naming the file on failure (`write_file`)."""
  def write(temporary: str) -> None:
    with open(temporary, "wb") as f:
      f.write(data)
  write_file(path, write)


def copy_file(source: str, path: str) -> None:
  """A copy of the file ``source`` at ``path``, atomically and naming ``path`` on failure (`write_file`)."""
  write_file(path, lambda temporary: shutil.copyfile(source, temporary))


def append_text(path: str, text: str) -> None:
  """Appends `text` to ``path``; an OSError names ``path`` (a write error alone does not)."""
  try:
    with open(path, "a", encoding="utf-8") as f:
      f.write(text)
  except OSError as error:
    raise OSError(error.errno, error.strerror, path) from error


def write_json(path: str, value: Any) -> None:
  """`to_jsonable(value)` to ``path``, indented, written atomically (`write_text`)."""
  write_text(path, json.dumps(to_jsonable(value), indent=2) + "\n")


def write_summary(out_dir: str, summary: Mapping[str, Any], draw_figures: Callable[[Mapping[str, Any], str], dict],
                  markdown: Callable[[Mapping[str, Any]], str]) -> dict[str, Any]:
  """A study's outputs: its figures drawn into `out_dir` (recorded under "figures"), summary.json and
  summary.md; returns the summary with its figures."""
  summary = dict(summary, figures=draw_figures(summary, out_dir))
  write_json(os.path.join(out_dir, "summary.json"), summary)
  write_text(os.path.join(out_dir, "summary.md"), markdown(summary))
  return summary


class DamagedFileError(ValueError):
  """A run or study file that cannot be read as written: truncated, garbled, emptied or edited by hand.

  The message names the file, the line where reading failed when there is one, and what to do.
  """


def _decoded(data: bytes, path: str, remedy: str, line_number: int | None = None,
             problem: str = "the file is damaged") -> str:
  """`data` as UTF-8 text; DamagedFileError naming the file, the line (`line_number`, else where the bad
  bytes are), ``problem`` and ``remedy`` when it is not."""
  try:
    return data.decode("utf-8")
  except UnicodeDecodeError as error:
    line = line_number if line_number is not None else data[:error.start].count(b"\n") + 1
    raise DamagedFileError(f"{path}, line {line}: bytes that are not UTF-8 text ({error.reason}); {problem}. "
                           f"{remedy}") from None


def _parse_json(text: bytes, path: str, remedy: str, line_number: int | None = None) -> Any:
  """`json.loads` of one file's (or one line's) bytes; DamagedFileError naming the file and line."""
  decoded = _decoded(text, path, remedy, line_number)
  try:
    return json.loads(decoded)
  except json.JSONDecodeError as error:
    problem = "it is empty" if not text.strip() else f"not valid JSON ({error.msg}, column {error.colno})"
    line = line_number if line_number is not None else error.lineno
    raise DamagedFileError(f"{path}, line {line}: {problem}; the file is damaged. {remedy}") from None


def read_utf8_text(path: str, remedy: str, problem: str = "the file is damaged") -> str:
  """The file's text; DamagedFileError naming ``path``, the line, ``problem`` and ``remedy`` when it is not
  UTF-8 text."""
  with open(path, "rb") as f:
    return _decoded(f.read(), path, remedy, problem=problem)


def check_utf8_text(path: str, remedy: str) -> None:
  """DamagedFileError naming ``path``, the line and ``remedy`` when the file is not UTF-8 text."""
  read_utf8_text(path, remedy)


def read_json(path: str, required: Sequence[str] = (),
              remedy: str = "Restore it from a copy, or delete it and rerun what wrote it.") -> Any:
  """The JSON value of ``path``, checked: the keys in ``required`` are present, and every seed-statistics
  dict in it (`seed_statistics`) agrees with its own per-seed values (`check_seed_statistics`).

  Raises:
    FileNotFoundError: there is no such file.
    DamagedFileError: the file is not UTF-8 JSON, lacks a required key, or holds a summary that disagrees
      with its values; the message names the file, the line and ``remedy``.
  """
  with open(path, "rb") as f:
    value = _parse_json(f.read(), path, remedy)
  missing = [key for key in required if not isinstance(value, Mapping) or key not in value]
  if missing:
    raise DamagedFileError(f"{path}: no {', '.join(map(repr, missing))} at its top level; the file is damaged "
                           f"or was written by something else. {remedy}")
  problem = check_seed_statistics(value)
  if problem:
    raise DamagedFileError(f"{path}: {problem}; the file was edited or damaged. {remedy}")
  return value


def read_jsonl(path: str, remedy: str) -> list[tuple[int, Any]]:
  """(line number, value) of each non-blank line of a JSON-lines file; a torn last line is dropped with a
  warning.

  An append-only log whose writer crashed in the middle of a write ends in a partial line: that line is
  expected and carries nothing the run needs, so it is left out (logging a warning). A line that cannot be
  read anywhere else is damage.

  Raises:
    DamagedFileError: a line before the last is not UTF-8 JSON (naming the file, the line and ``remedy``).
  """
  with open(path, "rb") as f:
    lines = [(number, line) for number, line in enumerate(f.read().split(b"\n"), 1) if line.strip()]
  values = []
  for index, (number, line) in enumerate(lines):
    try:
      values.append((number, _parse_json(line, path, remedy, line_number=number)))
    except DamagedFileError:
      if index < len(lines) - 1:
        raise
      logging.warning("%s, line %d: a partial last line (a write cut off by a crash) is left out: %r", path,
                      number, line[:80])
  return values


def check_seed_statistics(tree: Any, where: str = "") -> str | None:
  """The first `seed_statistics` dict in ``tree`` whose summary disagrees with its own "values" (described,
  with its key path), or None when all agree: a stored mean, std, min, max or n is never trusted."""
  if isinstance(tree, Mapping):
    if {"mean", "std", "min", "max", "n", "values"} <= set(tree) and isinstance(tree["values"], list):
      values = [as_number(v) for v in tree["values"]]
      if any(v is None for v in values):
        return f"{where or 'the top level'}: its values {tree['values']!r} are not all numbers"
      expected = seed_statistics(values)
      for name in ("mean", "std", "min", "max", "n"):
        stored, recomputed = as_number(tree[name]), expected[name]
        same = (stored is None and recomputed is None) or (
            stored is not None and recomputed is not None and (
                math.isclose(stored, recomputed, rel_tol=1e-9, abs_tol=1e-12)
                or (math.isnan(stored) and math.isnan(recomputed))))
        if not same:
          return (f"{where}: the stored {name} {tree[name]!r} disagrees with its own values {tree['values']!r} "
                  f"({name} {recomputed!r})")
    for key, value in tree.items():
      problem = check_seed_statistics(value, f"{where}.{key}" if where else str(key))
      if problem:
        return problem
  elif isinstance(tree, list):
    for index, value in enumerate(tree):
      problem = check_seed_statistics(value, f"{where}[{index}]")
      if problem:
        return problem
  return None


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
  """Every number of a results tree as a ``key,value`` row (`write_text`)."""
  text = io.StringIO(newline="")
  writer = csv.writer(text)
  writer.writerow(["key", "value"])
  for key, value in flatten(to_jsonable(tree)):
    writer.writerow([key, json.dumps(value) if isinstance(value, (list, dict)) else value])
  write_text(path, text.getvalue())


def write_rows_csv(path: str, rows: Iterable[Mapping[str, Any]], columns: Sequence[str]) -> None:
  """One CSV row per dict, in ``columns`` order (a missing or None value is an empty cell; an unknown key
  is an error, so a column is never silently dropped) (`write_text`)."""
  text = io.StringIO(newline="")
  writer = csv.DictWriter(text, fieldnames=list(columns), extrasaction="raise")
  writer.writeheader()
  for row in rows:
    writer.writerow({k: "" if v is None else to_jsonable(v) for k, v in row.items()})
  write_text(path, text.getvalue())


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
  with np.errstate(invalid="ignore"):  # inf - inf in the deviation: the non-finite std is intended
    std = float(array.std(ddof=1)) if len(values) > 1 else None
  return {
      "mean": float(array.mean()),
      "std": std,
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
