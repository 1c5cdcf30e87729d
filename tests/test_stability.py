"""The stability-margin study (RQ6): its definitions on known cases, its verdict rule, and one end-to-end
run of the tiny config (real BERT runs of a few steps) that must write every output and resume."""
import json
import os
import shutil

import numpy as np
import pytest

from experiments.common import verdicts
from experiments.stability import recorded
from experiments.stability import study
from experiments.common import metrics
from experiments.stability import summary as summary_lib
from experiments.stability import trace as trace_lib
from experiments.stability import verdict
from experiments.stability.configs import tiny


def settings(**changes):
  config = tiny.get_config()
  config.update(changes)
  return study.StabilitySettings.from_config(config)


def test_a_spike_is_a_loss_above_factor_times_the_running_median_and_consecutive_steps_are_one():
  losses = [2.0] * 10 + [4.0, 3.5, 2.0, 2.0, float("nan"), 2.0]
  spikes = study.count_spikes(losses, factor=1.5, window=5)
  assert spikes["spikes"] == 2 and spikes["spike_steps"] == [10, 14] and spikes["spiking_steps"] == 3


def records(accuracies, majority=0.05):
  """Metrics of a 12-step run with evaluations at steps 4, 8, 12."""
  rows = [{"step": step, "train_loss": 6.0, "grad_norm": 1.0 + step} for step in range(1, 13)]
  return rows + [{"step": step, "eval_loss": 5.0, "eval_accuracy": accuracy}
                 for step, accuracy in zip((4, 8, 12), accuracies)]


@pytest.mark.parametrize("accuracies, final, status", [
    ((0.2, 0.3, 0.35), {}, study.TRAINS),
    ((0.2, 0.055, 0.05), {}, study.COLLAPSES),  # learned, then one token everywhere from the midpoint on
    ((0.2, 0.2, 0.05), {}, study.TRAINS),  # one late evaluation above the majority accuracy: not collapsed
    ((0.2, 0.3, 0.35), {"validation_loss": float("nan")}, study.DIVERGES),
    ((0.2, 0.3, 0.35), {"validation_loss": 7.0}, study.DIVERGES),  # above ln(vocab): a finite blow-up
])
def test_a_run_trains_collapses_or_diverges(accuracies, final, status):
  judged = study.judge_run({"validation_loss": 5.0, "eval_loss": 5.0, "steps": 12, **final}, records(accuracies),
                           majority_accuracy=0.05, divergence_loss=6.2, num_steps=12, settings=settings())
  assert judged["status"] == status
  if status == study.COLLAPSES:
    described = judged["description"]
    assert described["learned"] and described["best_eval_accuracy_step"] == 4 and described["returned_step"] == 8
    assert described["max_grad_norm"] == 13.0 and described["max_grad_norm_step"] == 12


def test_the_intervention_is_read_from_the_logged_clip_stats():
  assert study.intervention([{"step": 10, "skip_count": 3.0}, {"step": 20, "skip_count": 4.0}], 40) == {
      "kind": "steps skipped", "fraction": 0.1, "count": 4}
  assert study.intervention([{"step": 10, "clip_fraction": 0.1}, {"step": 20, "clip_fraction": 0.3}], 20)[
      "fraction"] == pytest.approx(0.2)
  assert study.intervention([{"step": 10, "clipped": 1.0}, {"step": 20, "clipped": 0.0}], 20)["kind"] == "steps clipped"
  assert study.intervention([{"step": 10, "train_loss": 1.0}], 20) is None


def test_the_margin_is_the_largest_learning_rate_that_trains():
  points = {"adamw": [{"learning_rate": 0.001, "status": study.TRAINS}, {"learning_rate": 0.003, "status": study.TRAINS},
                      {"learning_rate": 0.01, "status": study.COLLAPSES}],
            "odd": [{"learning_rate": 0.001, "status": study.COLLAPSES}, {"learning_rate": 0.003, "status": study.TRAINS}],
            "none": [{"learning_rate": 0.01, "status": study.DIVERGES}]}
  found = study.margins(points)
  assert found["adamw"] == {"margin": 0.003, "first_failure": 0.01, "monotone": True, "at_edge": False}
  assert found["odd"]["margin"] == 0.003 and not found["odd"]["monotone"]
  assert found["none"] == {"margin": None, "first_failure": 0.01, "monotone": True, "at_edge": False}


def test_a_margin_at_the_top_of_what_ran_asks_for_the_next_learning_rate_up():
  points = {"adamw": [{"learning_rate": 0.01, "status": study.TRAINS}, {"learning_rate": 0.3, "status": study.TRAINS}],
            "skip_step_on_spikes": [{"learning_rate": 0.01, "status": study.TRAINS},
                         {"learning_rate": 0.3, "status": study.COLLAPSES}]}
  found = study.margins(points)
  assert found["adamw"]["at_edge"] and not found["skip_step_on_spikes"]["at_edge"]
  assert study.extension_runs(settings(max_extensions=2), points, {}) == [(1.0, "adamw")]  # 0.3 -> 1: 1-3-10
  assert study.extension_runs(settings(max_extensions=2), points, {"adamw": 2}) == []  # max_extensions reached


def test_a_method_too_high_at_all_its_learning_rates_asks_for_the_next_one_down():
  points = {"adamw": [{"learning_rate": 0.01, "status": study.COLLAPSES, "learned": True},
                      {"learning_rate": 0.3, "status": study.DIVERGES}]}
  lowest = min(settings().learning_rates["adamw"] + (0.01,))
  assert study.margins(points)["adamw"]["margin"] is None
  found = study.extension_runs(settings(max_extensions=2), points, {})
  assert len(found) == 1 and found[0][1] == "adamw" and found[0][0] < lowest
  assert study.extension_runs(settings(max_extensions=2), points, {"adamw": 2}) == []
  # A lowest run that never learned may have had too small a learning rate: no way down from it.
  points["adamw"][0]["learned"] = False
  assert study.extension_runs(settings(max_extensions=2), points, {}) == []


def test_a_best_run_at_the_lowest_learning_rate_asks_for_the_next_one_down_when_the_config_says_so():
  """The full mode counts each margin from a best inside what ran; the best is the lowest validation loss
  among the runs that train (a collapsed run's lower loss does not count)."""
  points = {"skip_step_on_spikes": [{"learning_rate": 0.003, "status": study.TRAINS, "validation_loss": 4.1},
                     {"learning_rate": 0.005, "status": study.TRAINS, "validation_loss": 4.3},
                     {"learning_rate": 0.01, "status": study.COLLAPSES, "validation_loss": 4.0}],
            "adamw": [{"learning_rate": 0.003, "status": study.TRAINS, "validation_loss": 4.4},
                      {"learning_rate": 0.005, "status": study.TRAINS, "validation_loss": 4.2},
                      {"learning_rate": 0.01, "status": study.COLLAPSES, "validation_loss": 6.0}]}
  assert verdict.best_learning_rates(points) == {"skip_step_on_spikes": {"best": 0.003, "at_low_edge": True},
                                                 "adamw": {"best": 0.005, "at_low_edge": False}}
  assert study.extension_runs(settings(max_extensions=2), points, {}) == []  # off unless the config asks
  assert study.extension_runs(settings(max_extensions=2, extend_below_best=True), points, {}) == [
      (study.next_learning_rate(0.003, -1, [0.003, 0.005, 0.01]), "skip_step_on_spikes")]
  assert study.extension_runs(settings(max_extensions=2, extend_below_best=True), points, {"skip_step_on_spikes": 2}) == []
  summary = {"points": points, "margins": study.margins(points), "runs": {}, "grid": [0.003, 0.005, 0.01]}
  notes = {row[0]: row[-1] for row in summary_lib.margin_rows(summary)}
  assert "its lowest validation loss is at the smallest lr it has (0.003)" in notes["skip_step_on_spikes"]
  assert "smallest lr" not in notes["adamw"]


def test_recorded_points_are_judged_on_their_final_validation_numbers(tmp_path):
  path = tmp_path / "recorded.json"
  path.write_text(json.dumps({"optimizers": {"adamw": {"divergence_loss": 8.3, "sweep": [
      {"learning_rate": 0.003, "validation_loss": 4.1, "validation_accuracy": 0.33},
      {"learning_rate": 0.01, "validation_loss": 6.05, "validation_accuracy": 0.035},  # also run: left out
      {"learning_rate": 0.03, "validation_loss": 6.01, "validation_accuracy": 0.035},
      {"learning_rate": 0.1, "validation_loss": None, "validation_accuracy": None}]}}}))
  found = recorded.recorded_points(settings(recorded_summary=str(path)), majority_accuracy=0.0354)
  assert [(p["learning_rate"], p["status"]) for p in found["adamw"]] == [
      (0.003, study.TRAINS), (0.03, study.COLLAPSES), (0.1, study.DIVERGES)]


@pytest.mark.parametrize("margin, expected", [(0.01, verdicts.SUPPORTED), (0.007, verdicts.INCONCLUSIVE),
                                              (0.005, verdicts.INCONCLUSIVE), (0.001, verdicts.NOT_SUPPORTED)])
def test_margins_two_grid_steps_apart_are_a_verdict_one_step_is_not(margin, expected):
  grid = [0.001, 0.003, 0.005, 0.007, 0.01, 0.03]
  summary = {"grid": grid, "margins": {"adamw": {"margin": 0.005}, "spam": {"margin": margin},
                                       "acclip_ports": {"margin": 0.03}}}
  assessed = verdict.assess_rq6(summary)
  spam_row = next(row for row in assessed["rows"] if row["measure"].startswith("spam"))
  assert spam_row["verdict"] == expected
  assert assessed["verdict"] == expected  # the ports' ACClip's row is context
  assert any("[not in the overall verdict]" in row["measure"] for row in assessed["rows"])


@pytest.mark.parametrize("capped_margin, expected", [(0.03, verdicts.SUPPORTED), (0.01, verdicts.INCONCLUSIVE),
                                                     (0.003, verdicts.NOT_SUPPORTED)])
def test_a_logit_capped_method_is_judged_against_its_uncapped_rule(capped_margin, expected):
  grid = [0.001, 0.003, 0.005, 0.007, 0.01, 0.03]
  summary = {"grid": grid, "margins": {"adamw": {"margin": 0.005}, "muon": {"margin": 0.007},
                                       "muon_qkclip": {"margin": capped_margin}}}
  assessed = verdict.assess_rq6(summary)
  row = next(row for row in assessed["rows"] if row["measure"].startswith("muon_qkclip"))
  assert "against muon's" in row["measure"] and "[not in the overall verdict]" in row["measure"]
  assert row["verdict"] == expected and assessed["logit_cap"]["verdict"] == expected
  assert verdict.assess_rq6({"grid": grid, "margins": {"adamw": {"margin": 0.005}}})["logit_cap"]["verdict"] is None


def test_the_tiny_study_runs_reports_and_resumes(tmp_path, capsys):
  out_dir = str(tmp_path / "stability")
  summary = study.run(out_dir, tiny.get_config())
  assert summary["complete"] and summary["runs_done"] == 3
  assert set(summary["runs"]) == {"adamw/lr0.01", "adamw/lr0.3", "skip_step_on_spikes/lr0.01"}
  assert all(run["status"] in (study.TRAINS, study.COLLAPSES, study.DIVERGES) for run in summary["runs"].values())
  assert summary["runs"]["skip_step_on_spikes/lr0.01"]["intervention"]["kind"] == "steps skipped"
  diagnosis = summary["runs"]["adamw/lr0.3"]["diagnosis"]  # the final checkpoint's model
  assert diagnosis["step"] == 12 and diagnosis["context_dependence"] >= 0
  assert len(diagnosis["position_spread"]) == 2 and len(diagnosis["attention_logit_bound"]) == 1
  baseline = summary["baselines"]["eval"]
  assert 0 < baseline["majority_accuracy"] < 1 and np.isfinite(baseline["unigram_loss"])
  for name in ("summary.json", "summary.md", summary["figures"]["loss_curves"], summary["figures"]["attention_logits"]):
    assert os.path.getsize(os.path.join(out_dir, name)) > 0, name
  text = open(os.path.join(out_dir, "summary.md")).read()
  assert "## RQ6 verdict" in text and "majority accuracy" in text
  assert summary_lib.report_lines(summary)[0] == summary["setup"]
  capsys.readouterr()
  again = study.run(out_dir, tiny.get_config())  # every run finished: reused, none redone
  assert capsys.readouterr().out.count("finished before, reusing") == 3
  assert {k: r["status"] for k, r in again["runs"].items()} == {k: r["status"] for k, r in summary["runs"].items()}

  # A recorded study's judged runs are reused for the methods and learning rates it has; the others run.
  assert summary["runs"]["adamw/lr0.3"]["logit_curve"] and summary["runs"]["adamw/lr0.3"]["diagnosis"][
      "max_attention_logit"] > 0
  reuse_dir, config = str(tmp_path / "reuse"), tiny.get_config()
  config.recorded_study = os.path.relpath(os.path.join(out_dir, "summary.json"), recorded.REPO_ROOT)
  config.learning_rates = {"adamw": (0.01, 0.3), "skip_step_on_spikes": (0.01,)}
  reused = study.run(reuse_dir, config, finished_only=True)  # nothing on disk: every run comes from the record
  assert {k: {**r, "source": None} for k, r in reused["runs"].items()} == {
      k: {**r, "source": None} for k, r in summary["runs"].items()}
  assert {r["source"] for r in reused["runs"].values()} == {config.recorded_study}
  assert not os.path.exists(os.path.join(reuse_dir, "runs"))
  config.seed = 1
  with pytest.raises(ValueError, match="was run with another setup .*seed"):
    study.run(str(tmp_path / "reuse_other"), config, finished_only=True)

  # --finished-only: a study whose first run has not finished reports the later ones, training nothing.
  partial_dir = str(tmp_path / "partial")
  shutil.copytree(out_dir, partial_dir)
  first_result = os.path.join(partial_dir, summary["runs"]["adamw/lr0.01"]["workdir"], "run_result.json")
  os.remove(first_result)
  partial = study.run(partial_dir, tiny.get_config(), finished_only=True)
  assert set(partial["runs"]) == {"adamw/lr0.3", "skip_step_on_spikes/lr0.01"}
  assert not partial["complete"] and (partial["runs_done"], partial["runs_planned"]) == (2, 3)
  assert not os.path.exists(first_result)  # nothing was trained
  assert partial["runs"]["adamw/lr0.3"] == summary["runs"]["adamw/lr0.3"]
  assert "Partial: 2 of 3 runs done" in open(os.path.join(partial_dir, "summary.md")).read()
  for run in partial["runs"].values():
    os.remove(os.path.join(partial_dir, run["workdir"], "run_result.json"))
  with pytest.raises(ValueError, match="no run of this study has finished"):
    study.run(partial_dir, tiny.get_config(), finished_only=True)

  # The trace of a run is that run: the same losses and gradient norms step by step, and at its last
  # checkpoint the same measurements as the study's diagnosis of the final model.
  trace_dir = str(tmp_path / "trace")
  trace = trace_lib.run(trace_dir, tiny.get_config(), "adamw", 0.3, until=12, every=6)
  assert [p["step"] for p in trace["points"]] == [6, 12]
  read = lambda d, workdir: [(r["step"], r["train_loss"], r["grad_norm"]) for r in metrics.read_metrics(
      os.path.join(d, workdir, metrics.METRICS_FILENAME)) if "train_loss" in r]
  assert read(trace_dir, trace["workdir"]) == read(out_dir, summary["runs"]["adamw/lr0.3"]["workdir"])
  last = trace["points"][-1]
  for key in ("context_dependence", "word_embedding_top_share", "position_spread", "attention_logit_bound"):
    np.testing.assert_allclose(last[key], diagnosis[key], rtol=1e-6, err_msg=key)
  assert last["max_grad_norm_since_previous"] == max(g for s, _, g in read(trace_dir, trace["workdir"]) if s > 6)
  assert "| 12 |" in open(os.path.join(trace_dir, "trace.md")).read()


@pytest.mark.parametrize("flags, message", [
    (["--method", "zclip", "--learning-rate", "0.01"], "not one of the study's methods"),
    (["--method", "adamw", "--learning-rate", "-1"], "must be a positive number"),
    (["--method", "adamw", "--learning-rate", "0.01", "--until", "4", "--every", "6"], "1 <= every <= until"),
    (["--method", "adamw", "--learning-rate", "0.01", "--until", "13", "--every", "6"], "<= 12"),
])
def test_the_trace_names_a_bad_argument_before_it_reads_any_data(tmp_path, capsys, flags, message):
  with pytest.raises(SystemExit) as exit_info:
    trace_lib.main(["--out", str(tmp_path / "trace"), "--config", "tiny"] + flags)
  assert exit_info.value.code == 2 and message in capsys.readouterr().err
  assert not os.path.exists(tmp_path / "trace")


def test_a_partial_summary_names_the_learning_rates_not_run_yet():
  with open(os.path.join(os.path.dirname(__file__), "..", "docs", "stability_quick", "summary.json")) as f:
    summary = json.load(f)
  # Complete: no "not run yet"; every method's best of its two learning rates is the lower one, and is marked.
  assert all(row[-1] == "its lowest validation loss is at the smallest lr it has (0.003): its best lr may lie lower"
             for row in summary_lib.margin_rows(summary))
  del summary["runs"]["zclip/lr0.01"]
  notes = {row[0]: row[-1] for row in summary_lib.margin_rows(summary)}
  assert notes["zclip"].endswith("; not run yet: 0.01") and "not run yet" not in notes["adamw"]
