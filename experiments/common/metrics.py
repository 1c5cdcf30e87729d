"""Metric output for the drivers: a JSONL file per run, a tqdm bar, optional TensorBoard, a loss plot.

The JSONL file (`<workdir>/metrics.jsonl`) holds one JSON object per line, each with an integer `step`
(the number of optimizer updates done) and scalar metrics, e.g.
`{"step": 12, "train_loss": 6.1, "learning_rate": 1e-4}` or `{"step": 100, "eval_loss": 5.2}`.
Only the main process (process 0) writes; the others get a writer that does nothing, so drivers call it
unconditionally. On resume from checkpoint step N, lines with step > N (written after that checkpoint by the
interrupted run) are dropped so the file reads as one uninterrupted run.
"""
from __future__ import annotations

import json
import logging
import os
from typing import Any, Iterable, Mapping, Optional, Sequence

import numpy as np

from experiments.common import figures, results

METRICS_FILENAME = "metrics.jsonl"


def _to_python_scalar(value: Any) -> Any:
  return np.asarray(value).item() if not isinstance(value, (str, bool, int)) else value


class MetricWriter:
  """Appends per-step scalar metrics to `<workdir>/metrics.jsonl` (and TensorBoard when asked).

  Args:
    workdir: the run's directory.
    enabled: whether this process writes (pass `parallel.is_main_process()`).
    resume_step: drop existing lines with step > resume_step; None starts a new file.

  Attributes:
    path: the JSONL file.
    kept_records: on resume, the records of steps <= resume_step that the file keeps ([] otherwise, and
      on processes that do not write).
    tensorboard: also write TensorBoard event files under `<workdir>/tensorboard` (needs `tensorboardX`
      or PyTorch's `torch.utils.tensorboard`; ImportError naming them otherwise).
  """

  def __init__(self, workdir: str, *, enabled: bool = True, resume_step: Optional[int] = None,
               tensorboard: bool = False):
    self.path = os.path.join(workdir, METRICS_FILENAME)
    self.enabled = enabled
    self._tensorboard = None
    self.kept_records: list[dict] = []
    if not enabled:
      return
    os.makedirs(workdir, exist_ok=True)
    kept = [r for r in read_metrics(self.path) if r["step"] <= resume_step] if (
        resume_step is not None and os.path.exists(self.path)) else []
    if resume_step:
      logged = len({r["step"] for r in kept if 1 <= r["step"] <= resume_step})
      if logged < resume_step:
        logging.warning("%s holds %d of the %d steps before the checkpoint it resumes from (step %d): the log "
                        "lacks %d steps, which cannot be recovered; the run itself continues from its checkpoint",
                        self.path, logged, resume_step, resume_step, resume_step - logged)
    self.kept_records = kept
    results.write_text(self.path, "".join(json.dumps(r) + "\n" for r in kept))
    if tensorboard:
      self._tensorboard = _tensorboard_writer(os.path.join(workdir, "tensorboard"), resume_step)

  def write(self, step: int, metrics: Mapping[str, Any]) -> None:
    """Writes one line {"step": step, **metrics}; array values must be scalars."""
    if not self.enabled:
      return
    scalars = {k: _to_python_scalar(v) for k, v in metrics.items()}
    record = {"step": int(step), **{k: results.to_jsonable(v) for k, v in scalars.items()}}
    results.append_text(self.path, json.dumps(record) + "\n")
    if self._tensorboard is not None:
      # From `scalars`, not `record`, so that a NaN or infinite loss shows in TensorBoard too.
      for name, value in scalars.items():
        if isinstance(value, (int, float)):
          self._tensorboard.add_scalar(name, value, int(step))

  def close(self) -> None:
    if self._tensorboard is not None:
      self._tensorboard.close()


def _tensorboard_writer(logdir: str, resume_step: Optional[int]):
  """A SummaryWriter; on resume, events of steps after resume_step are purged, as the JSONL lines are."""
  try:
    from tensorboardX import SummaryWriter  # pylint: disable=g-import-not-at-top
  except ImportError:
    try:
      from torch.utils.tensorboard import SummaryWriter  # pylint: disable=g-import-not-at-top
    except ImportError as error:
      raise ImportError(
          "tensorboard=True needs `pip install tensorboardX` (or PyTorch with tensorboard)") from error
  return SummaryWriter(logdir, purge_step=None if resume_step is None else resume_step + 1)


def read_metrics(path: str) -> list[dict]:
  """All records of a metrics JSONL file, in file order ("nan"/"inf" strings read back as floats).

  A torn last line (a crash in the middle of a write) is left out with a warning; the run resumes from
  its checkpoint, not from this log.

  Raises:
    results.DamagedFileError: another line is not a JSON object with an integer step (naming the line).
  """
  remedy = ("Delete that line by hand (the log loses one record; the checkpoints are unaffected) or start "
            "the run over in a new workdir.")
  records = []
  for number, record in results.read_jsonl(path, remedy):
    if not (isinstance(record, dict) and isinstance(record.get("step"), int)):
      raise results.DamagedFileError(f"{path}, line {number}: not a metrics record (a JSON object with an "
                                     f"integer step): {json.dumps(record)[:80]}. {remedy}")
    records.append({k: float(v) if v in ("nan", "inf", "-inf") else v for k, v in record.items()})
  return records


def metric_series(records: Iterable[Mapping[str, Any]], name: str) -> tuple[np.ndarray, np.ndarray]:
  """(steps, values) of one metric across the records that have it."""
  pairs = [(r["step"], r[name]) for r in records if name in r]
  steps = np.array([p[0] for p in pairs], dtype=np.int64)
  values = np.array([p[1] for p in pairs], dtype=np.float64)
  return steps, values


def progress_bar(total: int, initial: int = 0, enabled: bool = True, desc: str = "train"):
  """A tqdm bar on the main process, or an object with the same `update/set_postfix/close` doing nothing."""
  if enabled:
    import tqdm  # pylint: disable=g-import-not-at-top
    return tqdm.tqdm(total=total, initial=initial, desc=desc, dynamic_ncols=True)
  return _NoProgress()


def close_progress_bars() -> None:
  """Closes every open tqdm bar: a run stopped by an error prints its bar before the error's traceback, not
  after it (an open bar prints itself when it is garbage-collected at exit, below the traceback)."""
  import tqdm  # pylint: disable=g-import-not-at-top
  for bar in list(getattr(tqdm.tqdm, "_instances", ())):
    bar.close()


class _NoProgress:

  def update(self, n: int = 1) -> None:
    del n

  def set_postfix(self, *args, **kwargs) -> None:
    del args, kwargs

  def close(self) -> None:
    pass


def plot_loss_curves(runs: Mapping[str, str], out_path: str,
                     metric_names: Sequence[str] = ("train_loss", "eval_loss"),
                     smoothing: int = 1, title: str = "",
                     rows: Sequence[tuple[str, Sequence[str]]] | None = None,
                     colors: Mapping[str, str] | None = None) -> str:
  """Plots metric curves of one or several runs, one column of panels per metric, and saves a PNG.

  Args:
    runs: label -> metrics JSONL path.
    out_path: the PNG to write.
    metric_names: the metrics to draw, one column of panels each (they share the y axis).
    smoothing: a moving-average window (in records) applied to every curve at least that long; 1 draws the
      raw values.
    title: the figure title.
    rows: (title, labels) of each row of panels, the title heading the row's legend (e.g.
      `figures.split_by_family`); default one row of every run.
    colors: label -> colour (e.g. `figures.OPTIMIZER_COLORS`); default matplotlib's colour cycle per row.

  Returns:
    out_path.
  """
  rows = rows or [("", list(runs))]
  records = {label: read_metrics(path) for label, path in runs.items()}
  figure, axes = figures.panel_grid(len(rows), len(metric_names), panel_width=4.0, panel_height=2.8)
  for row_axes, (row_title, labels) in zip(axes, rows):
    for panel, name in zip(row_axes, metric_names):
      for color_index, label in enumerate(labels):
        steps, values = figures.moving_average(*metric_series(records[label], name), smoothing)
        if len(steps):
          color = colors[label] if colors is not None else f"C{color_index % 10}"
          panel.plot(steps, values, color=color, linewidth=1.2, label=label)
      panel.set_title(name.replace("_", " "), fontsize=9)
      panel.grid(alpha=0.3)
    figures.legend_outside(row_axes, title=row_title or None)
  for panel in axes[-1]:
    panel.set_xlabel("step")
  if title:
    figure.suptitle(title, fontsize=10)
  os.makedirs(os.path.dirname(os.path.abspath(out_path)), exist_ok=True)
  figures.save_figure(figure, out_path, dpi=120)
  return out_path
