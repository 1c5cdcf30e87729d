"""The weight-decay factorial (RQ7, a question of our own): update rule x weight decay on BERT.

In the BERT comparison (RQ4) the optimizers split into two groups by weight decay rather than by clipping:
Adam with coupled L2 and every rule that takes SGD-scale steps end near one loss, Adam-scale steps with
decoupled decay far lower, and the paper's ACClip at learning rate 1 with decoupled decay 0.01 shrinks its
weights by 1% a step. This study separates the two: each update rule (Adam, the paper's ACClip, the ports'
ACClip, SGD with momentum) under each decay mode (none; coupled L2; decoupled, lr x weight decay per step;
independent, a fixed shrink per step whatever the learning rate: `experiments.common.optimizers`).

Protocol: every cell is a cell of the BERT comparison (`experiments.comparison`, the config named by
`comparison`): the same model, corpus, data order, steps, warm-up, decay schedule, seeds and per-optimizer
fields, its own learning-rate sweep on the validation documents (`comparison.sweep`, extended past the grid
while the best sits at an end) and the other seeds at its best; reported: the held-out MLM loss and accuracy
(mean, std, range over the seeds) and the held-out loss by token frequency. Cells run one after the other
(the config's order), each resumable; the summary is rewritten after every cell. Cells a recorded comparison
already holds (`recorded_cells`) are read from it after checking that its run configs equal the study's but
for the optimizer. The rule that turns the cells into RQ7's verdict lives in `experiments.decay.verdict`.
"""
from __future__ import annotations

import dataclasses
import os
import time
from collections.abc import Mapping
from typing import Any

import ml_collections

from experiments.common import optimizers as optimizers_lib
from experiments.common import results
from experiments.common import workdir_lock
from experiments.comparison import combine
from experiments.comparison import study as comparison_study
from experiments.comparison import summary as comparison_summary
from experiments.decay import plots
from experiments.decay import summary as summary_lib

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
DECAY_FIELDS = ("weight_decay", "weight_decay_mode")
# The order of the decay modes in tables and figures (a config's dict of modes reaches us sorted by name).
DECAY_MODE_ORDER = ("none", "coupled", "decoupled", "independent")
# What a cell keeps of the comparison's per-optimizer result.
CELL_KEYS = ("grid", "learning_rates", "sweep", "diverged_learning_rates", "best_learning_rate", "best_at_edge",
             "seeds", "eval_loss", "eval_accuracy", "eval_loss_by_frequency", "frequency_buckets", "wall_s")
# Run-config fields that change no number: left out when a recorded cell's config is checked against ours.
NOT_COMPARED = ("optimizer", "learning_rate", "vocab_file", "save_checkpoints", "checkpoint_every_steps")


@dataclasses.dataclass(frozen=True)
class DecaySettings:
  """The study a config describes (configs/quick.py, configs/full.py; see the module docstring).

  Attributes:
    mode, expected_time: the config's name and how long it takes, in words.
    comparison: the comparison config (experiments/comparison/configs/<name>.py) whose cells these are.
    overrides: run config fields set on top of the comparison's (nested dicts merge).
    rules: registry names of the update rules.
    decay_modes: decay mode name -> {"weight_decay", "weight_decay_mode"}.
    cells: (decay mode, rule) pairs run here, in order.
    recorded_summary: a comparison results.json (relative to the repository) holding `recorded_cells`; "" none.
    recorded_cells: decay mode -> {rule: the optimizer name in the recorded summary}.
    seeds: the seeds of every cell; empty: the comparison's.
  """
  mode: str
  expected_time: str
  comparison: str
  overrides: dict[str, Any]
  rules: tuple[str, ...]
  decay_modes: dict[str, dict[str, Any]]
  cells: tuple[tuple[str, str], ...]
  recorded_summary: str
  recorded_cells: dict[str, dict[str, str]]
  seeds: tuple[int, ...] = ()

  @classmethod
  def from_config(cls, config: Mapping[str, Any]) -> "DecaySettings":
    """The settings of a config (a ConfigDict, or the dict a summary.json recorded).

    Raises:
      ValueError: an unknown field, rule, decay mode or weight-decay setting; a cell outside the grid.
    """
    values = ml_collections.ConfigDict(dict(config)).to_dict()
    unknown = sorted(set(values) - {field.name for field in dataclasses.fields(cls)})
    if unknown:
      raise ValueError(f"decay study config: unknown field(s) {unknown}")
    values["rules"] = tuple(values["rules"])
    values["cells"] = tuple((str(mode), str(rule)) for mode, rule in values["cells"])
    values["seeds"] = tuple(int(seed) for seed in values.get("seeds", ()))
    settings = cls(**values)
    bad = [name for name in settings.rules if name not in optimizers_lib.REGISTRY]
    if bad or not settings.rules:
      raise ValueError(f"rules={list(settings.rules)!r}: give one or more of {', '.join(optimizers_lib.REGISTRY)}")
    for mode, fields in settings.decay_modes.items():
      if sorted(fields) != sorted(DECAY_FIELDS):
        raise ValueError(f"decay_modes[{mode!r}] must set exactly {', '.join(DECAY_FIELDS)}, got {sorted(fields)}")
      optimizers_lib.check_optimizer_config(ml_collections.ConfigDict(fields))
    recorded = [(mode, rule) for mode, names in settings.recorded_cells.items() for rule in names]
    for mode, rule in settings.cells + tuple(recorded):
      if mode not in settings.decay_modes or rule not in settings.rules:
        raise ValueError(f"cell ({mode!r}, {rule!r}) is not in decay_modes x rules")
    if set(settings.cells) & set(recorded):
      raise ValueError(f"cells {sorted(set(settings.cells) & set(recorded))} are both run and recorded")
    if recorded and not settings.recorded_summary:
      raise ValueError("recorded_cells needs a recorded_summary")
    return settings


def ordered_modes(modes) -> list[str]:
  """The decay mode names in `DECAY_MODE_ORDER`, any others after them by name."""
  return sorted(modes, key=lambda mode: (DECAY_MODE_ORDER.index(mode) if mode in DECAY_MODE_ORDER else
                                         len(DECAY_MODE_ORDER), mode))


def comparison_settings(settings: DecaySettings) -> comparison_study.ComparisonSettings:
  """The comparison every cell belongs to: its config with the study's rules and overrides."""
  return comparison_study.study_comparison(settings.comparison, settings.rules, settings.overrides, settings.seeds)


def cell_settings(compared: comparison_study.ComparisonSettings, settings: DecaySettings, mode: str
                  ) -> comparison_study.ComparisonSettings:
  """The comparison of one decay mode: the decay in every run's fields, none left per optimizer."""
  fields = {name: {k: v for k, v in own.items() if k not in DECAY_FIELDS}
            for name, own in compared.optimizer_fields.items()}
  return dataclasses.replace(compared, overrides={**compared.overrides, **settings.decay_modes[mode]},
                             optimizer_fields=fields)


def _comparable(config) -> dict[str, Any]:
  return {k: v for k, v in config.to_dict().items() if k not in NOT_COMPARED}


def recorded_cells(settings: DecaySettings, compared: comparison_study.ComparisonSettings) -> dict[str, dict]:
  """The cells read from the recorded summary, each checked to be the run the study would make.

  Raises:
    ValueError: a recorded run config that differs from the study's (naming the fields), or a missing optimizer.
  """
  if not settings.recorded_cells:
    return {}
  path = os.path.join(REPO_ROOT, settings.recorded_summary)
  recorded = results.read_json(path, required=("settings", "optimizers"))
  known = {field.name for field in dataclasses.fields(comparison_study.ComparisonSettings)}
  theirs = dataclasses.replace(compared, **{k: v for k, v in recorded["settings"].items() if k in known})
  if "optimizer_fields" not in recorded["settings"]:  # older summaries recorded them in words only
    ours_text, their_text = (combine.optimizer_text(text) for text in (
        comparison_study.optimizer_settings_text(compared), recorded.get("optimizer_settings")))
    if ours_text != their_text:
      raise ValueError(f"{path}: the recorded optimizer settings are not the study's: {their_text!r} against "
                       f"{ours_text!r}")
  cells: dict[str, dict] = {}
  for mode, names in settings.recorded_cells.items():
    for rule, name in names.items():
      if name not in recorded["optimizers"]:
        raise ValueError(f"{path} has no optimizer {name!r} (recorded_cells[{mode!r}][{rule!r}])")
      ours = _comparable(comparison_study.run_config(cell_settings(compared, settings, mode), rule, 1.0, 0))
      found = _comparable(comparison_study.run_config(theirs, name, 1.0, 0))
      differing = sorted(k for k in set(ours) | set(found) if ours.get(k) != found.get(k))
      if differing or list(theirs.seeds) != list(compared.seeds):
        raise ValueError(f"{path}: the recorded {name!r} runs are not the study's ({mode}, {rule}) cell: they "
                         f"differ in {', '.join(differing) or 'seeds'}")
      result = recorded["optimizers"][name]
      cells.setdefault(mode, {})[rule] = dict({k: result.get(k) for k in CELL_KEYS}, source=f"{settings.recorded_summary}: {name}")
  return cells


def setup_text(settings: DecaySettings, compared: comparison_study.ComparisonSettings) -> str:
  """The study's setup in words, made from its config and the comparison's."""
  modes = "; ".join(f"{mode}: weight decay {fields['weight_decay']:g}" +
                    (f" ({fields['weight_decay_mode']})" if fields["weight_decay"] else "")
                    for mode, fields in ((m, settings.decay_modes[m]) for m in ordered_modes(settings.decay_modes)))
  ran = ", ".join(f"{rule} ({mode})" for mode, rule in settings.cells)
  recorded = ", ".join(f"{rule} ({mode}, recorded as {name})" for mode, names in settings.recorded_cells.items()
                       for rule, name in names.items())
  return (comparison_study.setup_text(compared, with_decay=False) + f". Decay modes: {modes}; decay off biases and LayerNorm. Cells run: {ran}"
          + (f"; cells from {settings.recorded_summary}: {recorded}" if recorded else "") + ".")


def _write(out_dir: str, summary: Mapping[str, Any]) -> dict[str, Any]:
  return results.write_summary(out_dir, summary, plots.plot_figures, summary_lib.summary_markdown)


@workdir_lock.owns_output_folder
def run(out_dir: str, config: ml_collections.ConfigDict) -> dict[str, Any]:
  """Runs the study a config describes into ``out_dir``; returns its summary (also summary.json there).

  Rerunning into the same folder reuses every finished run and resumes a preempted one; summary.json and
  summary.md are rewritten after every cell (``"complete": false`` until the last).
  """
  start = time.perf_counter()
  settings = DecaySettings.from_config(config)
  os.makedirs(out_dir, exist_ok=True)
  compared = comparison_settings(settings)
  cells = recorded_cells(settings, compared)
  compared, corpus = comparison_study.with_shared_vocabulary(compared, out_dir)
  summary: dict[str, Any] = {}
  for done, (mode, rule) in enumerate(settings.cells, start=1):
    cell = cell_settings(compared, settings, mode)
    result = comparison_study._compare_optimizer(cell, os.path.join(out_dir, mode), rule, cell.learning_rates[rule])  # pylint: disable=protected-access
    cells.setdefault(mode, {})[rule] = dict({k: result.get(k) for k in CELL_KEYS}, source="run")
    summary = _write(out_dir, {
        "mode": settings.mode, "complete": done == len(settings.cells), "cells_done": done,
        "cells_planned": len(settings.cells), "config": config.to_dict(), "setup": setup_text(settings, compared),
        "data_description": [comparison_summary.corpus_text(corpus)],
        "cells": {m: cells[m] for m in ordered_modes(settings.decay_modes) if m in cells},
        "wall_s": time.perf_counter() - start,
    })
  return summary
