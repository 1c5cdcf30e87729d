"""The weight-decay factorial (RQ7): its verdict rule on known cases, its settings checks, the recorded full
comparison's cells checked against its own run configs, and one end-to-end run of the tiny config."""
import json
import os

import pytest

from experiments.common import study_cli
from experiments.common import verdicts
from experiments.decay import study
from experiments.decay import verdict
from experiments.decay.configs import tiny


def cell(mean, std):
  return {"eval_loss": {"mean": mean, "std": std, "n": 3}}


def cells(**gaps):
  """Adam at 5.0 +- 0.05 in every mode; ACClip at 5.0 + gap +- 0.05 in each mode given."""
  return {mode: {"adam": cell(5.0, 0.05), "acclip": cell(5.0 + gap, 0.05)} for mode, gap in gaps.items()}


@pytest.mark.parametrize("gaps, expected", [
    # ACClip trails by more than the spread under every mode: the clip.
    (dict(none=0.2, coupled=0.2, decoupled=0.3, independent=0.2), verdict.CLIP_EXPLAINS),
    # Within the spread without decay and with independent decay, far behind under RQ4's modes: the decay.
    (dict(none=0.01, coupled=0.2, decoupled=0.3, independent=-0.03), verdict.DECAY_EXPLAINS),
    # Within the spread under a mode of RQ4 too: neither.
    (dict(none=0.01, coupled=0.04, decoupled=0.3, independent=0.0), verdicts.INCONCLUSIVE),
    # Behind without decay but not with independent decay: neither.
    (dict(none=0.2, coupled=0.2, decoupled=0.3, independent=0.0), verdicts.INCONCLUSIVE),
])
def test_the_rule_separates_the_clip_from_the_decay(gaps, expected):
  assert verdict.verdict_from_cells(cells(**gaps)) == expected
  assessed = verdict.assess_rq7({"complete": True, "cells": cells(**gaps)})
  assert assessed["verdict"] == expected and len(assessed["rows"]) == 5  # 4 modes and RQ4's own pair


def test_rq4s_own_pairing_counts_for_the_decay_and_a_missing_cell_or_seed_spread_is_inconclusive():
  # The full mode's cells: Adam coupled (recorded) but no coupled ACClip; RQ4's pair is ACClip decoupled
  # against Adam coupled.
  found = cells(none=0.0, decoupled=0.3, independent=0.01)
  found["coupled"] = {"adam": cell(5.1, 0.02)}
  assert verdict.verdict_from_cells(found) == verdict.DECAY_EXPLAINS
  found["coupled"] = {"adam": cell(5.3, 0.02)}  # ACClip decoupled (5.3) within the spread of Adam coupled
  assert verdict.verdict_from_cells(found) == verdicts.INCONCLUSIVE
  one_seed = cells(none=0.2, coupled=0.2, decoupled=0.3, independent=0.2)
  one_seed["none"]["acclip"]["eval_loss"]["std"] = None
  assert verdict.verdict_from_cells(one_seed) == verdicts.INCONCLUSIVE
  assert verdict.assess_rq7({"complete": False, "cells": cells(none=0.2)})["verdict"] == verdicts.INCONCLUSIVE


def test_a_cell_at_the_edge_of_its_sweep_is_named_beside_the_verdict():
  found = cells(none=0.2, independent=0.2)
  found["none"]["acclip"]["best_at_edge"] = "high"
  assessed = verdict.assess_rq7({"complete": True, "cells": found})
  assert assessed["edges"] == ["acclip (none)"] and "edge of the swept range" in assessed["rows"][0]["ours"]


@pytest.mark.parametrize("changes, match", [
    (dict(rules=("adam", "rmsprop")), "rules="),
    (dict(cells=(("none", "lamb"),)), "not in decay_modes x rules"),
    (dict(decay_modes={"none": dict(weight_decay=0.0, weight_decay_mode="l2")}, cells=()), "weight_decay_mode='l2'"),
    (dict(decay_modes={"none": dict(weight_decay=-1.0, weight_decay_mode="coupled")}, cells=()), "weight_decay=-1.0"),
    (dict(recorded_cells={"none": {"adam": "adam"}}), "both run and recorded"),
])
def test_bad_settings_are_refused_naming_the_field(changes, match):
  config = tiny.get_config()
  config.update(changes)
  with pytest.raises(ValueError, match=match):
    study.DecaySettings.from_config(config)


def test_the_full_mode_reuses_the_recorded_comparison_cells_after_checking_their_configs():
  settings = study.DecaySettings.from_config(study_cli.study_config("experiments.decay", "full"))
  compared = study.comparison_settings(settings)
  found = study.recorded_cells(settings, compared)
  recorded = json.load(open(os.path.join(study.REPO_ROOT, settings.recorded_summary)))["optimizers"]
  assert found["coupled"]["adam"]["eval_loss"] == recorded["adam"]["eval_loss"]
  assert found["decoupled"]["adam"]["eval_loss"] == recorded["adamw"]["eval_loss"]
  assert set(found["decoupled"]) == {"adam", "acclip", "acclip_ports", "sgd"}
  # The same recorded runs under another weight decay are another experiment: refused, naming the field.
  other = study.DecaySettings.from_config(dict(settings.__dict__, decay_modes=dict(
      settings.decay_modes, decoupled=dict(weight_decay=0.1, weight_decay_mode="decoupled"))))
  with pytest.raises(ValueError, match="weight_decay"):
    study.recorded_cells(other, compared)


def test_the_tiny_study_runs_reports_and_resumes(tmp_path, capsys):
  from experiments.decay import __main__ as cli  # pylint: disable=g-import-not-at-top
  out = str(tmp_path / "decay")
  assert cli.main(["--out", out, "--config", "tiny"]) == 0
  summary = json.load(open(os.path.join(out, "summary.json")))
  assert summary["complete"] and list(summary["cells"]) == ["none", "decoupled"]
  for mode, rules in summary["cells"].items():
    for rule, found in rules.items():
      assert found["source"] == "run" and found["eval_loss"]["n"] == 2, (mode, rule)
      assert found["best_learning_rate"] in found["learning_rates"]
  # The decay reached the runs: decoupled decay in the decoupled cell's config, none in the other.
  for mode, decay in (("none", 0.0), ("decoupled", 0.01)):
    adam = summary["cells"][mode]["adam"]
    run = json.load(open(os.path.join(out, mode, adam["sweep"][0]["workdir"], "run_result.json")))
    assert run["config"]["weight_decay"] == decay and run["config"]["optimizer"] == "adam"
  text = open(os.path.join(out, "summary.md")).read()
  assert "**Verdict: " in text and os.path.getsize(os.path.join(out, summary["figures"]["factorial"])) > 0
  capsys.readouterr()
  assert cli.main(["--out", out, "--config", "tiny"]) == 0  # resumes: every run is reused
  assert "finished before, reusing" in capsys.readouterr().out
  assert json.load(open(os.path.join(out, "summary.json")))["cells"] == summary["cells"]
