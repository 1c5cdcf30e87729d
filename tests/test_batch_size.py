"""The batch-size study (RQ8): its verdict rule on known cases, its settings checks, the fixed objective
(static masking) it trains on, and one end-to-end run of the tiny config."""
import dataclasses
import json
import os

import numpy as np
import pytest

from experiments.batch_size import study
from experiments.batch_size import verdict
from experiments.batch_size.configs import tiny
from experiments.bert import input_pipeline
from experiments.bert.configs import tiny as bert_tiny
from experiments.common import verdicts


def cells(sgd, adam):
  """Final training-set losses per batch size ('4' the smallest, '64' the full batch)."""
  return {b: {"sgd": {"train_set_loss": {"mean": s, "std": 0.01}}, "adam": {"train_set_loss": {"mean": a, "std": 0.01}}}
          for b, s, a in zip(("4", "16", "64"), sgd, adam)}


@pytest.mark.parametrize("sgd, adam, expected", [
    ((4.0, 3.0, 2.2), (3.0, 2.5, 2.0), verdicts.SUPPORTED),  # gap 1.0 -> 0.2: shrinks below half
    ((4.0, 3.0, 2.5), (3.0, 2.0, 1.5), verdicts.NOT_SUPPORTED),  # gap 1.0 -> 1.0: as large
    ((4.0, 3.0, 2.2), (3.0, 2.0, 1.5), verdicts.INCONCLUSIVE),  # gap 1.0 -> 0.7: between
    ((3.0, 3.0, 2.5), (3.0, 2.0, 1.0), verdicts.INCONCLUSIVE),  # no gap at the smallest batch to explain
])
def test_the_rule_compares_the_gap_at_the_full_batch_with_the_smallest(sgd, adam, expected):
  summary = {"complete": True, "config": {"batch_sizes": [4, 16, 64]}, "cells": cells(sgd, adam)}
  assessed = verdict.assess_rq8(summary)
  assert assessed["verdict"] == expected and len(assessed["rows"]) == 3
  assert assessed["gap_smallest"] == pytest.approx(sgd[0] - adam[0])
  assert verdict.assess_rq8(dict(summary, complete=False))["verdict"] == verdicts.INCONCLUSIVE
  # The control's gaps are computed the same way and decide nothing.
  control = dict(summary, config={"batch_sizes": [4, 16, 64], "control": {"batch_sizes": [4, 64]}},
                 control={"cells": {b: c for b, c in cells(sgd, adam).items() if b != "16"}})
  found = verdict.assess_control(control)
  assert [row[0] for row in found["rows"]] == ["4", "64"]
  assert found["gap_full"] == pytest.approx(sgd[2] - adam[2]) and verdict.assess_rq8(control)["verdict"] == expected
  assert verdict.assess_control(summary) is None


def test_a_verdict_resting_on_a_cell_tuned_at_an_edge_says_so():
  from experiments import report  # pylint: disable=g-import-not-at-top
  summary = {"complete": True, "config": {"batch_sizes": [4, 16, 64]},
             "cells": cells((4.0, 3.0, 2.2), (3.0, 2.5, 2.0))}
  summary["cells"]["64"]["adam"]["best_at_edge"] = "high"
  summary["cells"]["16"]["sgd"]["best_at_edge"] = "low"  # a cell the verdict does not read: not named
  assessed = verdict.assess_rq8(summary)
  assert assessed["edges"] == ["adam (batch 64)"]
  line = report.verdict_lines(assessed)[-2]
  assert line.startswith("**Verdict: supported.**") and "rests on: adam (batch 64)." in line


@pytest.mark.parametrize("changes, match", [
    (dict(batch_sizes=(4, 8)), "must ascend from >= 1 to the full batch"),
    (dict(overrides=dict(max_train_sequences=16, static_masking=False)), "must fix the objective"),
    (dict(cells=((4, "sgd"),)), "cells must hold every"),
    (dict(optimizers=("sgd", "nadam")), "optimizers="),
    (dict(control=dict(tiny.get_config().control, optimizers=("sgd", "nadam"))), "control.optimizers="),
    (dict(control=dict(tiny.get_config().control, batch_sizes=(8, 4))), "control.batch_sizes="),
    (dict(control=dict(tiny.get_config().control, filters=0)), "control.filters=0"),
])
def test_bad_settings_are_refused_naming_the_field(changes, match):
  config = tiny.get_config()
  config.update(changes)
  with pytest.raises(ValueError, match=match):
    study.BatchSizeSettings.from_config(config)


def test_a_control_with_missing_fields_is_refused_naming_them():
  from experiments.batch_size import control  # pylint: disable=g-import-not-at-top
  with pytest.raises(ValueError, match=r"control: unknown field\(s\) \[\], missing \['batch_sizes'"):
    control.ControlSettings.from_config({"dataset": "fashion_mnist_subset"})
  assert control.ControlSettings.from_config({}) is None
  # Batch sizes that do not split over the devices are refused before the study starts.
  settings = control.ControlSettings.from_config(tiny.get_config().control)  # batch sizes 4 and 8
  control.check_devices(settings, 4)
  with pytest.raises(ValueError, match=r"control.batch_sizes=\[4, 8\]: \[4\] do not split over the 8 local devices"):
    control.check_devices(settings, 8)


def test_static_masking_makes_one_fixed_objective(tmp_path):
  config = bert_tiny.get_config()
  config.update(vocab_size=300, max_seq_len=32, max_train_sequences=12, static_masking=True, max_documents=20)
  data = input_pipeline.create_datasets(config, str(tmp_path))
  assert len(data.train_sequences) == 12
  # A full batch is every sequence with its one mask, in every epoch and whatever the run's seed.
  objective = data.eval_batches(12, split="train")[0]
  for seed in (0, 5):
    for step in (0, 1, 7):
      batch = input_pipeline.dataclasses.replace(data, seed=seed).train_batch(step, 12)
      order = np.argsort([row.tobytes() for row in batch["input_ids"]])
      reference = np.argsort([row.tobytes() for row in objective["input_ids"]])
      for name in ("input_ids", "masked_positions", "masked_labels", "masked_weights"):
        np.testing.assert_array_equal(batch[name][order], objective[name][reference])
  dynamic = input_pipeline.dataclasses.replace(data, static_masking=False)
  with pytest.raises(ValueError, match="static_masking only"):
    dynamic.eval_batches(12, split="train")
  assert not np.array_equal(dynamic.train_batch(0, 12)["masked_positions"],
                            dynamic.train_batch(1, 12)["masked_positions"])


def test_the_tiny_study_runs_and_reports(tmp_path, monkeypatch):
  from experiments.batch_size import __main__ as cli  # pylint: disable=g-import-not-at-top
  out = str(tmp_path / "batch_size")
  assert cli.main(["--out", out, "--config", "tiny"]) == 0
  summary = json.load(open(os.path.join(out, "summary.json")))
  assert summary["complete"] and list(summary["cells"]) == ["4", "16"]
  for found in (cell for by_name in summary["cells"].values() for cell in by_name.values()):
    assert found["train_set_loss"]["n"] == 2 and all(np.isfinite(found["train_set_loss"]["values"]))
    # The sweep chose on the training-set loss, which its records hold.
    best = next(p for p in found["sweep"] if p["learning_rate"] == found["best_learning_rate"])
    assert best["train_set_loss"] == found["train_set_loss"]["values"][0]
  noise = summary["noise"]["by_batch_size"]
  assert noise["4"]["noise_norm_median"] > 0 and noise["16"]["noise_norm_median"] == 0  # the full batch
  run = json.load(open(os.path.join(out, "batch16", summary["cells"]["16"]["adam"]["sweep"][0]["workdir"],
                                    "run_result.json")))
  assert run["config"]["batch_size"] == 16 and run["config"]["static_masking"]
  assert run["config"]["model"]["dropout_rate"] == 0.0 and run["config"]["weight_decay"] == 0.0
  markdown = open(os.path.join(out, "summary.md")).read()
  assert "**Verdict: " in markdown
  # The ResNet control ran after BERT's cells, by the same protocol, and is reported beside the verdict.
  control = summary["control"]
  assert control["complete"] and list(control["cells"]) == ["4", "8"] and "ResNet-18" in control["description"]
  for by_name in control["cells"].values():
    for found in by_name.values():
      assert found["train_set_loss"]["n"] == 2 and all(np.isfinite(found["train_set_loss"]["values"]))
      assert found["best_learning_rate"] in found["learning_rates"]
  assert "**The control**, which decides nothing: ResNet-18 of width 2" in markdown
  # Rerunning reuses every finished run: the same numbers, no training.
  from experiments.batch_size import control as control_lib  # pylint: disable=g-import-not-at-top
  settings = control_lib.ControlSettings.from_config(tiny.get_config().control)
  def no_training(*args, **kwargs):
    raise AssertionError("a finished run was trained again")

  monkeypatch.setattr(control_lib.training, "train", no_training)
  again = control_lib.run_control(settings, os.path.join(out, "control"), on_cell=lambda _: None)
  assert again["cells"] == control["cells"]
  # A run recorded by another setup is an error, never overwritten.
  other = dataclasses.replace(settings, num_train_steps=settings.num_train_steps + 1)
  with pytest.raises(ValueError, match=r"records a run of another setup \(it differs in \['steps'\]\)"):
    control_lib.run_control(other, os.path.join(out, "control"), on_cell=lambda _: None)
