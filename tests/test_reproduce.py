"""The reproduction command: its rules (verdicts, learning-rate choice, seed statistics) and one end-to-end
run on tiny settings that must produce every section of the report with finite numbers and its figures."""
import dataclasses
import glob
import json
import math
import os
import re
import shutil

import pytest

from experiments import reproduce
from experiments.bert import input_pipeline
from experiments.common import results as results_lib
from experiments.common import training_loop
from experiments.common import verdicts
from experiments.common.verdicts import combine_verdicts, verdict_from_margin
from experiments.comparison import combine
from experiments.comparison import plots
from experiments.comparison import runs as comparison_runs
from experiments.comparison import study as comparison
from experiments.comparison import summary as summary_lib
from experiments.comparison import sweep
from experiments.comparison import verdict as comparison_verdict
from experiments.comparison.configs import quick as comparison_quick


# ---------------------------------------------------------------------------------------------------------
# Rules.


@pytest.mark.parametrize("effect, margin, expected", [
    (0.2, 0.1, verdicts.SUPPORTED),
    (-0.2, 0.1, verdicts.NOT_SUPPORTED),
    (0.05, 0.1, verdicts.INCONCLUSIVE),
    (-0.1, 0.1, verdicts.INCONCLUSIVE),  # exactly the margin is not "more than" it
    (0.2, None, verdicts.INCONCLUSIVE),  # no spread (one seed): no call
    (float("nan"), 0.1, verdicts.INCONCLUSIVE),
    (None, 0.0, verdicts.INCONCLUSIVE),
])
def test_verdict_from_margin(effect, margin, expected):
  assert verdict_from_margin(effect, margin) == expected


def test_verdict_rejects_a_negative_margin():
  with pytest.raises(ValueError, match="margin"):
    verdict_from_margin(1.0, -0.5)


def test_combine_verdicts_needs_unanimity():
  assert combine_verdicts([verdicts.SUPPORTED] * 2) == verdicts.SUPPORTED
  assert combine_verdicts([verdicts.NOT_SUPPORTED] * 2) == verdicts.NOT_SUPPORTED
  assert combine_verdicts([verdicts.SUPPORTED, verdicts.INCONCLUSIVE]) == verdicts.INCONCLUSIVE
  assert combine_verdicts([]) == verdicts.INCONCLUSIVE


def test_best_learning_rate_skips_diverged_runs():
  assert sweep.best_learning_rate({1e-3: 2.0, 3e-3: float("nan"), 1e-2: 1.5}) == 1e-2
  assert sweep.best_learning_rate({1e-3: 2.0, 3e-3: float("inf"), 1e-2: None}) == 1e-3
  assert sweep.best_learning_rate({1e-3: float("nan")}) is None
  # A finite blow-up above the divergence loss (ln V: a uniform prediction) is diverged too.
  assert sweep.best_learning_rate({1.0: 5.6, 3.0: 4e6}) == 1.0
  assert sweep.best_learning_rate({1.0: 9.0, 3.0: 4e6}, divergence_loss=8.3) is None
  assert sweep.is_diverged(8.3, 8.3) and not sweep.is_diverged(8.2, 8.3)
  assert sweep.is_diverged(None) and not sweep.is_diverged(1e30)


def _sweep(grid, losses, **kwargs):
  """The swept learning rates and the order they ran in, with validation losses from ``losses``."""
  order = []

  def validation_loss(lr):
    order.append(lr)
    return losses[lr]

  swept = sweep.sweep_learning_rates(grid, validation_loss, **kwargs)
  assert set(swept) == set(order) and len(order) == len(set(order)), "a learning rate ran twice"
  assert all(swept[lr] == losses[lr] or (swept[lr] != swept[lr]) for lr in swept)
  return list(swept), order


GRID = (0.3, 1.0, 3.0, 10.0, 30.0)


@pytest.mark.parametrize("losses, swept", [
    # The best inside the middle three: no extension.
    ({0.3: 9.0, 1.0: 5.0, 3.0: 4.0, 10.0: 6.0, 30.0: 9.0}, [1.0, 3.0, 10.0]),
    # The best at the low end: one step down, then it is inside.
    ({0.3: 5.7, 1.0: 5.6, 3.0: 7.0, 10.0: float("nan"), 30.0: float("nan")}, [0.3, 1.0, 3.0, 10.0]),
    # Loss keeps falling with the learning rate: past the grid's end by MAX_EXTENSIONS (2) points.
    ({0.3: 9.0, 1.0: 8.0, 3.0: 7.0, 10.0: 6.0, 30.0: 5.0, 100.0: 4.0, 300.0: 3.0},
     [1.0, 3.0, 10.0, 30.0, 100.0, 300.0]),
    # Past the end, a diverged point bounds the best: it is inside what ran.
    ({0.3: 9.0, 1.0: 8.0, 3.0: 7.0, 10.0: 6.0, 30.0: 5.0, 100.0: float("nan")}, [1.0, 3.0, 10.0, 30.0, 100.0]),
    # The best at the grid's low end: one point below it, on the grid's 1-3-10 ladder.
    ({0.1: 5.5, 0.3: 5.0, 1.0: 6.0, 3.0: 7.0, 10.0: 8.0}, [0.1, 0.3, 1.0, 3.0, 10.0]),
    # Everything in the middle diverged: go down until something trains.
    ({0.1: 5.5, 0.3: 5.0, 1.0: float("nan"), 3.0: float("inf"), 10.0: float("nan"), 30.0: 1.0},
     [0.1, 0.3, 1.0, 3.0, 10.0]),
    # All diverged: every value at or below the middle three, and two below the grid, nothing above.
    ({lr: float("nan") for lr in GRID + (0.1, 0.03)}, [0.03, 0.1, 0.3, 1.0, 3.0, 10.0]),
])
def test_sweep_extends_past_the_end_that_holds_the_best(losses, swept):
  ran, order = _sweep(GRID, losses)
  assert ran == swept
  assert order[:3] == [1.0, 3.0, 10.0], "the middle three run first"


def test_next_learning_rate_continues_the_grid():
  assert sweep.next_learning_rate(0.003, -1, (0.003, 0.01, 0.03)) == 0.001
  assert sweep.next_learning_rate(0.001, -1, (0.001, 0.003)) == 0.0003
  assert sweep.next_learning_rate(30.0, 1, GRID) == 100.0
  assert sweep.next_learning_rate(0.01, 1, (0.005, 0.0075, 0.01)) == pytest.approx(0.01 * 0.01 / 0.0075, rel=1e-5)
  assert sweep.next_learning_rate(0.005, -1, (0.005,)) == pytest.approx(0.005 / math.sqrt(10), rel=1e-5)


def test_at_edge_names_the_end_that_holds_the_best():
  assert sweep.at_edge({0.001: 4.0, 0.003: 4.5, 0.01: 5.0}) == "low"
  assert sweep.at_edge({0.001: 5.0, 0.003: 4.5, 0.01: 4.0}) == "high"
  assert sweep.at_edge({0.001: 5.0, 0.003: 4.0, 0.01: 4.5}) is None
  assert sweep.at_edge({0.001: 5.0, 0.003: 4.0, 0.01: float("nan")}) is None  # a diverged run bounds it
  assert sweep.at_edge({0.001: float("nan")}) is None


def test_sweep_treats_a_finite_blow_up_as_diverged():
  losses = {0.1: 6.0, 0.3: 5.0, 1.0: float("nan"), 3.0: float("nan"), 10.0: 4e6, 30.0: 5.0, 100.0: float("nan")}
  # Without a threshold 4e6 counts as best: go up.
  assert _sweep(GRID, losses)[0] == [1.0, 3.0, 10.0, 30.0, 100.0]
  assert _sweep(GRID, losses, divergence_loss=8.3)[0] == [0.1, 0.3, 1.0, 3.0, 10.0]


def test_sweep_runs_a_short_grid_whole_and_rejects_bad_arguments():
  assert _sweep((1e-2, 1e-3), {1e-3: 1.0, 1e-2: 2.0, 3e-4: float("nan")})[0] == [3e-4, 1e-3, 1e-2]
  assert _sweep((1e-2, 1e-3), {1e-3: 1.0, 1e-2: 2.0}, max_extensions=0)[0] == [1e-3, 1e-2]
  assert _sweep((3.0, 1.0, 2.0), {1.0: 1.0, 2.0: 0.5, 3.0: 2.0})[0] == [1.0, 2.0, 3.0]
  assert _sweep(GRID, {lr: lr for lr in GRID + (0.1, 0.03)}, min_points=1)[0] == [0.03, 0.1, 0.3, 1.0, 3.0]
  with pytest.raises(ValueError, match="grid is empty"):
    sweep.sweep_learning_rates((), lambda lr: 0.0)
  with pytest.raises(ValueError, match="min_points"):
    sweep.sweep_learning_rates(GRID, lambda lr: 0.0, min_points=0)
  with pytest.raises(ValueError, match="max_extensions"):
    sweep.sweep_learning_rates(GRID, lambda lr: 0.0, max_extensions=-1)


def test_seed_statistics_match_numpy_definitions():
  stats = results_lib.seed_statistics([1.0, 2.0, 4.0])
  assert stats["mean"] == pytest.approx(7 / 3)
  assert stats["std"] == pytest.approx(math.sqrt(((1 - 7 / 3) ** 2 + (2 - 7 / 3) ** 2 + (4 - 7 / 3) ** 2) / 2))
  assert (stats["min"], stats["max"], stats["n"]) == (1.0, 4.0, 3)
  assert results_lib.seed_statistics([3.0])["std"] is None


def test_clip_series_counts_clipped_coordinates_or_steps():
  records = [{"step": 1, "global_norm": 0.5, "clip_fraction": 0.25, "train_loss": 3.0},
             {"step": 2, "global_norm": 2.0, "clip_fraction": 0.75},
             {"step": 2, "eval_loss": 2.9}]
  steps, clipped = plots.clip_series(records, "gclip", clip_threshold=1.0)
  assert steps.tolist() == [1, 2] and clipped.tolist() == [0.0, 1.0]
  _, fractions = plots.clip_series(records, "acclip", clip_threshold=1.0)
  assert fractions.tolist() == [0.25, 0.75]
  assert len(plots.clip_series(records[2:], "adam", clip_threshold=1.0)[1]) == 0
  # ZClip and AutoClip record whether a step was clipped.
  zclip_records = [{"step": 1, "global_norm": 0.5, "clip_threshold": 1.0, "clipped": 0.0},
                   {"step": 2, "global_norm": 3.0, "clip_threshold": 1.2, "clipped": 1.0}]
  assert plots.clip_series(zclip_records, "zclip", clip_threshold=1.0)[1].tolist() == [0.0, 1.0]


def _bert_summary(adam_losses, acclip_losses):
  def entry(losses):
    return {"eval_loss": results_lib.seed_statistics(losses),
            "eval_accuracy": results_lib.seed_statistics([0.5 - 0.1 * l for l in losses])}
  return {"optimizers": {"adam": entry(adam_losses), "acclip": entry(acclip_losses)},
          "finetune": {"status": "skipped"}}


def test_rq4_verdict_follows_the_seed_spread():
  clear_win = comparison_verdict.assess_rq4(_bert_summary([3.0, 3.1, 3.2], [2.0, 2.1, 2.2]))
  assert clear_win["verdict"] == verdicts.SUPPORTED
  within_noise = comparison_verdict.assess_rq4(_bert_summary([3.0, 3.1, 3.2], [2.95, 3.15, 3.3]))
  assert within_noise["verdict"] == verdicts.INCONCLUSIVE
  clear_loss = comparison_verdict.assess_rq4(_bert_summary([2.0, 2.1, 2.2], [3.0, 3.1, 3.2]))
  assert clear_loss["verdict"] == verdicts.NOT_SUPPORTED


def _summary_of(**losses):
  return {"optimizers": {name: {"eval_loss": results_lib.seed_statistics(values)} for name, values in losses.items()},
          "finetune": {"status": "skipped"}}


def test_rq5_compares_the_best_later_method_with_the_paper_and_adam():
  paper, adam = dict(acclip=[5.5, 5.52, 5.54], gclip=[5.3, 5.31, 5.32]), dict(adam=[5.4, 5.41, 5.42],
                                                                              adamw=[5.2, 5.22, 5.24])
  clear_win = comparison_verdict.assess_rq5(_summary_of(**paper, **adam, zclip=[5.0, 5.01, 5.02],
                                                        spam=[6.0, 6.1, 6.2]))
  assert clear_win["verdict"] == verdicts.SUPPORTED
  # Judged against the best of each group: GClip (5.31) and AdamW (5.22), by ZClip, the best later method.
  assert "zclip" in clear_win["rows"][0]["ours"] and "gclip" in clear_win["rows"][0]["ours"]
  assert "adamw" in clear_win["rows"][1]["ours"]
  assert any("spam" in row["ours"] and "[not in the overall verdict]" in row["measure"] for row in clear_win["rows"])
  between = comparison_verdict.assess_rq5(_summary_of(**paper, **adam, zclip=[5.25, 5.26, 5.27]))
  assert between["rows"][0]["verdict"] == verdicts.SUPPORTED and between["rows"][1]["verdict"] == verdicts.NOT_SUPPORTED
  assert between["verdict"] == verdicts.INCONCLUSIVE
  behind = comparison_verdict.assess_rq5(_summary_of(**paper, **adam, adagc=[5.6, 5.61, 5.62]))
  assert behind["verdict"] == verdicts.NOT_SUPPORTED
  assert comparison_verdict.assess_rq5(_summary_of(**adam))["verdict"] == verdicts.INCONCLUSIVE  # none ran


def test_run_rejects_bad_arguments(tmp_path):
  with pytest.raises(ValueError, match="parts"):
    reproduce.run(str(tmp_path), parts=["bert", "imagenet"])
  with pytest.raises(FileNotFoundError, match="results.json"):
    reproduce.run(str(tmp_path / "empty"), parts=[])
  with pytest.raises(FileNotFoundError, match="squad"):
    reproduce.run(str(tmp_path), squad_dir=str(tmp_path / "no-such-folder"))


def test_weight_decay_and_optimizer_subset_reach_every_run():
  config = comparison.with_flags(comparison_quick.get_config(), weight_decay=0, optimizers=["acclip", "adam"])
  settings = comparison.ComparisonSettings.from_config(config)
  assert list(settings.learning_rates) == ["acclip", "adam"]
  assert settings.learning_rates["adam"] == tuple(config.learning_rate_grids.adam)  # the Adam-scale grid
  assert settings.learning_rates["acclip"] == tuple(config.learning_rate_grid_exceptions.acclip)
  assert "weight decay 0 for every optimizer" in settings.description
  for optimizer in ("adam", "acclip", "sgd"):  # adam's coupled L2 too: the override is shared
    assert comparison.run_config(settings, optimizer, 0.1, 0).weight_decay == 0.0
  default = comparison.ComparisonSettings.from_config(comparison_quick.get_config())
  assert comparison.run_config(default, "adam", 0.1, 0).weight_decay == 0.01
  assert comparison.run_config(default, "sgd", 0.1, 0).weight_decay == 0.01


@pytest.mark.parametrize("kwargs, match", [
    (dict(weight_decay=-0.01), "weight_decay"), (dict(weight_decay=float("nan")), "weight_decay"),
    (dict(optimizers=["adam", "adamax"]), "adamax"), (dict(optimizers=[]), "optimizers"),
])
def test_comparison_settings_reject_bad_arguments(kwargs, match):
  with pytest.raises(ValueError, match=match):
    comparison.with_flags(comparison_quick.get_config(), **kwargs)


@pytest.mark.parametrize("flags, message", [
    (["--weight-decay", "-1"], "weight_decay must be a finite number >= 0"),
    (["--optimizers", "adam,adamax"], "adamax"),
])
def test_cli_names_a_bad_comparison_flag(tmp_path, capsys, flags, message):
  with pytest.raises(SystemExit) as exit_info:
    reproduce.main(["--out", str(tmp_path), "--parts", "bert"] + flags)
  assert exit_info.value.code == 2
  assert message in capsys.readouterr().err
  assert not os.listdir(tmp_path)  # rejected before anything ran


def test_the_comparison_cli_lists_the_configs_it_has(tmp_path, capsys):
  from experiments.comparison import __main__ as comparison_cli  # pylint: disable=g-import-not-at-top
  with pytest.raises(SystemExit) as exit_info:
    comparison_cli.main(["--out", str(tmp_path), "--config", "tiny"])
  assert exit_info.value.code == 2
  assert "invalid choice: 'tiny' (choose from 'full', 'gpu', 'gpu_tiny', 'quick')" in capsys.readouterr().err


# ---------------------------------------------------------------------------------------------------------
# End to end on tiny settings. The BERT comparison runs for real (two optimizers, two learning rates, two
# seeds, a few steps); the synthetic and noise studies, which take minutes even at their smallest and are
# tested end to end in their own test files, are replaced by stand-ins that return numbers in the same
# layout as the studies' `run` (keys read by experiments.report) and write one figure each.


def _figure(out_dir, name):
  import matplotlib
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt
  figure, axes = plt.subplots(figsize=(2, 2))
  axes.plot([0, 1], [1, 0])
  figure.savefig(os.path.join(out_dir, name))
  plt.close(figure)


def _synthetic_stand_in(out_dir):
  _figure(out_dir, "dimension.png")
  _figure(out_dir, "rates.png")
  return {
      "rq2": {"alpha": 1.1, "quadratic_kappa2": {
          "sgd_tuned_p90": "inf", "gclip_tuned_p90": 0.5,  # "inf": SGD blew up (results.to_jsonable)
          "sgd_theory_diverged_fraction": 0.3, "gclip_theory_diverged_fraction": 0.0}},
      "rates": {"by_alpha": {"1.5": {"theory_slope": -2 / 3, "gclip_theory_slope": -0.9},
                             "2": {"theory_slope": -1.0, "gclip_theory_slope": -1.2}}},
      "rq3": {"1.2": {"gclip_tuned_slope_vs_d": 0.6, "cclip_tuned_slope_vs_d": 0.02,
                      "gclip_theory_slope_vs_d": 0.7, "cclip_theory_slope_vs_d": 0.01}},
  }


def _noise_stand_in(out_dir):
  _figure(out_dir, "noise_norms.png")
  return {"rq1": {
      "bert": {"alpha_mohammadi_pooled_final": 1.95, "alpha_hill_pooled_final": 3.0,
               "sgd_minus_adam_relative": 0.01, "gap_in_seed_std": 0.5, "variance_growth_final": 1.0},
      "resnet": {"alpha_mohammadi_pooled_final": 1.5, "alpha_hill_pooled_final": 3.2,
                 "sgd_minus_adam_relative": 0.0, "gap_in_seed_std": 0.0, "variance_growth_final": 1.0}}}


def _stability_stand_in(out_dir):
  """A stability summary in the study's layout, made by the study's own rules from fabricated runs (the
  study itself runs end to end in test_stability.py): AdamW trains at 0.01 and collapses at 0.3."""
  from experiments.stability import plots as stability_plots  # pylint: disable=g-import-not-at-top
  from experiments.stability import study as stability  # pylint: disable=g-import-not-at-top
  from experiments.stability.configs import tiny as stability_tiny  # pylint: disable=g-import-not-at-top
  settings = stability.StabilitySettings.from_config(stability_tiny.get_config())
  majority = 0.05

  def records(final_accuracy):  # the accuracy rises to 0.2 by step 6, then ends at final_accuracy
    return ([{"step": step, "train_loss": 6.0 - 0.1 * step, "grad_norm": 1.0} for step in range(1, 13)]
            + [{"step": 6, "eval_loss": 5.0, "eval_accuracy": 0.2},
               {"step": 12, "eval_loss": 5.5, "eval_accuracy": final_accuracy}])

  runs, points = {}, {}
  for name, lr, accuracy in (("adamw", 0.01, 0.3), ("adamw", 0.3, majority), ("skip_step_on_spikes", 0.01, 0.3)):
    run = stability.judge_run({"validation_loss": 5.0, "eval_loss": 5.5, "eval_accuracy": accuracy, "steps": 12},
                              records(accuracy), majority_accuracy=majority, divergence_loss=6.2, num_steps=12,
                              settings=settings)
    run.update(method=name, learning_rate=lr, workdir=f"runs/{name}/lr{lr:g}_seed0", wall_s=1.0)
    runs[f"{name}/lr{lr:g}"] = run
    points.setdefault(name, []).append({"learning_rate": lr, "status": run["status"], "validation_loss": 5.0,
                                        "source": "run"})
  summary = {"mode": "tiny", "complete": True, "runs_done": 3, "runs_planned": 3, "setup": "Stand-in runs.",
             "data_description": [], "baselines": {"eval": {"majority_accuracy": majority, "unigram_loss": 5.2}},
             "divergence_loss": 6.2, "num_train_steps": 12, "runs": runs, "points": points, "grid": [0.01, 0.3],
             "margins": stability.margins(points), "wall_s": 3.0, "run_wall_s": 3.0}
  summary["figures"] = stability_plots.plot_figures(summary, out_dir)
  return summary


def _decay_stand_in(out_dir, config):
  """A factorial summary in the study's layout (the study itself runs end to end in test_decay.py): ACClip
  trails Adam by 0.2 in both modes, seed spread 0.05."""
  from experiments.decay import plots as decay_plots  # pylint: disable=g-import-not-at-top
  def cell(losses, lr):
    return {"best_learning_rate": lr, "best_at_edge": None, "learning_rates": [lr], "source": "stand-in",
            "eval_loss": results_lib.seed_statistics(losses),
            "eval_accuracy": results_lib.seed_statistics([0.3, 0.31])}
  summary = {"mode": "tiny", "complete": True, "cells_done": 4, "cells_planned": 4, "config": config.to_dict(),
             "setup": "Stand-in cells.", "data_description": [],
             "cells": {mode: {"adam": cell([5.0, 5.05], 0.01), "acclip": cell([5.2, 5.25], 1.0)}
                       for mode in ("none", "decoupled")}}
  summary["figures"] = decay_plots.plot_figures(summary, out_dir)
  return summary


def _batch_size_stand_in(out_dir, config):
  """A batch-size summary in the study's layout (the study runs end to end in test_batch_size.py): the
  SGD-Adam gap 1.0 at batch 4 and 1.2 at the full batch 16."""
  from experiments.batch_size import plots as batch_size_plots  # pylint: disable=g-import-not-at-top
  def cell(loss):
    return {"best_learning_rate": 0.1, "best_at_edge": None, "learning_rates": [0.1],
            "train_set_loss": results_lib.seed_statistics([loss, loss + 0.02]),
            "eval_loss": results_lib.seed_statistics([5.0, 5.1])}
  summary = {"mode": "tiny", "complete": True, "cells_done": 4, "cells_planned": 4, "config": config.to_dict(),
             "setup": "Stand-in cells.", "data_description": [],
             "noise": {"by_batch_size": {"4": {"noise_norm_median": 2.0, "noise_norm_max_over_median": 1.2,
                                                "pooled": {"alpha_mohammadi": 1.8, "alpha_hill": 1.5}},
                                          "16": {"noise_norm_median": 0.0, "note": "the full batch"}}},
             "cells": {"4": {"sgd": cell(4.0), "adam": cell(3.0)}, "16": {"sgd": cell(3.2), "adam": cell(2.0)}}}
  summary["figures"] = batch_size_plots.plot_figures(summary, out_dir)
  return summary


def _tiny_bert_config():
  config = comparison_quick.get_config()
  config.mode = "tiny"
  config.overrides.update(model=dict(hidden_size=16, intermediate_size=32, num_layers=1),
                          vocab_size=256, num_train_steps=4, warmup_steps=1, batch_size=4, max_seq_len=16,
                          eval_every_steps=2, log_every_steps=1, eval_batch_size=8, max_eval_sequences=8,
                          max_documents=4, eval_fraction=0.25)
  config.optimizers = ("adam", "acclip")
  config.learning_rate_grids.adam = (1e-3, 1e-2)
  config.learning_rate_grid_exceptions.acclip = (1.0, 10.0)
  config.seeds = (0, 1)
  return config


def _tiny_configs(**changes):
  """Every part's config at the "tiny" mode (the stand-ins ignore theirs)."""
  from experiments.noise.configs import tiny as noise_tiny  # pylint: disable=g-import-not-at-top
  from experiments.stability.configs import tiny as stability_tiny  # pylint: disable=g-import-not-at-top
  from experiments.synthetic.configs import tiny as synthetic_tiny  # pylint: disable=g-import-not-at-top
  from experiments.decay.configs import tiny as decay_tiny  # pylint: disable=g-import-not-at-top
  from experiments.batch_size.configs import tiny as batch_size_tiny  # pylint: disable=g-import-not-at-top
  configs = {"synthetic": synthetic_tiny.get_config(), "noise": noise_tiny.get_config(), "bert": _tiny_bert_config(),
             "stability": stability_tiny.get_config(), "decay": decay_tiny.get_config(),
             "batch_size": batch_size_tiny.get_config()}
  for part, fields in changes.items():
    configs[part].update(fields)
  return configs


STAND_INS = {"synthetic": lambda out_dir, config: _synthetic_stand_in(out_dir),
             "noise": lambda out_dir, config: _noise_stand_in(out_dir),
             "stability": lambda out_dir, config: _stability_stand_in(out_dir),
             "decay": _decay_stand_in, "batch_size": _batch_size_stand_in}


@pytest.fixture(scope="module")
def tiny_reproduction(tmp_path_factory):
  out_dir = str(tmp_path_factory.mktemp("reproduction"))
  results = reproduce.run(out_dir, configs=_tiny_configs(), runners=STAND_INS, command="pytest")
  with open(os.path.join(out_dir, "report.md")) as f:
    return out_dir, results, f.read()


def test_the_real_studies_feed_every_section(tmp_path):
  """The synthetic study and the BERT comparison themselves (at their tiny sizes), not stand-ins, through
  the report, on a corpus that is not the default one: the report names what was loaded. (The noise and
  stability studies are stand-ins here; each runs end to end in its own test module, the noise study on a
  corpus of its own, where the data description the report prints is checked.)"""
  from pydoc_data.topics import topics  # pylint: disable=g-import-not-at-top
  corpus = tmp_path / "my_corpus.txt"
  corpus.write_text("\n\n".join(" ".join(topics[name].split()) for name in sorted(topics)[:16]))
  out_dir = tmp_path / "out"
  configs = _tiny_configs(bert=dict(corpus=str(corpus)))
  results = reproduce.run(str(out_dir), configs=configs, command="pytest",
                          runners={name: STAND_INS[name] for name in ("noise", "stability", "decay", "batch_size")})
  tmp_path = out_dir
  assert {name: part["status"] for name, part in results["parts"].items()} == {
      "synthetic": "ok", "noise": "ok", "bert": "ok", "stability": "ok", "decay": "ok", "batch_size": "ok"}
  outcomes = (verdicts.SUPPORTED, verdicts.NOT_SUPPORTED, verdicts.INCONCLUSIVE)
  for name in ("RQ1", "RQ2", "RQ3", "RQ4"):
    question = results["research_questions"][name]
    assert question["verdict"] in outcomes and question["rows"], name
  text = (tmp_path / "report.md").read_text()
  assert text.count("**Verdict: ") == 8
  for path in re.findall(r"!\[[^\]]*\]\(([^)]+)\)", text):
    assert (tmp_path / path).stat().st_size > 0, path
  # The data the comparison loaded, as it recorded it: the corpus file (16 documents).
  rq4 = text.split("## RQ4", 1)[1].split("## Commands", 1)[0]  # the appendix describes both presets
  assert f"BERT corpus: the text file {corpus} (`corpus={corpus}`): 4 documents" in rq4
  assert f"on the text file {corpus} (" in rq4.split("Setup: ", 1)[1]
  assert "pydoc_data" not in rq4 and "HOWTO" not in text
  # No number the report's question rows quote is NaN (a blown-up run's error is printed as "inf").
  for question in results["research_questions"].values():
    for row in question["rows"]:
      assert not re.search(r"\bnan\b", str(row.get("ours", "")), re.IGNORECASE), row


def test_every_part_ran(tiny_reproduction):
  _, results, _ = tiny_reproduction
  assert {name: part["status"] for name, part in results["parts"].items()} == {
      "synthetic": "ok", "noise": "ok", "bert": "ok", "stability": "ok", "decay": "ok", "batch_size": "ok"}


def test_report_has_every_section(tiny_reproduction):
  _, _, text = tiny_reproduction
  for heading in ("## Summary", "## RQ1", "## RQ2", "## RQ3", "## RQ4", "## RQ6", "## RQ7", "## RQ8", "## Commands",
                  "## Quick and full modes",
                  "## Environment"):
    assert heading in text, heading
  assert "SQuAD v1.1 fine-tuning: skipped (no --squad-dir given)." in text
  assert "python -m experiments.synthetic --out" in text and "python -m experiments.bert.main" in text
  assert "this run's configs, mode tiny, are no preset" in text and "--parts bert" in text
  assert text.count("**Verdict: ") == 8


def test_verdicts_follow_the_numbers(tiny_reproduction):
  _, results, _ = tiny_reproduction
  rqs = results["research_questions"]
  # The stand-ins: GClip beats a blown-up SGD and is faster than the theory's rate; GClip's error grows with
  # d, CClip's is flat; BERT's tail index is *larger* than ResNet's (the paper's opposite).
  assert rqs["RQ2"]["verdict"] == verdicts.SUPPORTED
  assert rqs["RQ3"]["verdict"] == verdicts.SUPPORTED
  assert rqs["RQ1"]["rows"][0]["verdict"] == verdicts.NOT_SUPPORTED
  # ACClip trails Adam by four spreads in both decay modes; the SGD-Adam gap grows to the full batch.
  assert rqs["RQ7"]["verdict"] == "the clip explains it"
  assert rqs["RQ8"]["verdict"] == verdicts.NOT_SUPPORTED
  # RQ4 from the real tiny comparison: its first row quotes both optimizers' held-out losses.
  optimizers = results["parts"]["bert"]["summary"]["optimizers"]
  first = rqs["RQ4"]["rows"][0]
  for name in ("acclip", "adam"):
    assert results_lib.format_seed_statistics(optimizers[name]["eval_loss"]) in first["ours"], name


def test_bert_numbers_are_finite_and_figures_exist(tiny_reproduction):
  out_dir, results, text = tiny_reproduction
  summary = results["parts"]["bert"]["summary"]
  for name, result in summary["optimizers"].items():
    assert result["best_learning_rate"] in result["learning_rates"], name
    assert result["seeds"] == [0, 1]
    for metric in ("eval_loss", "eval_accuracy"):
      assert all(math.isfinite(v) for v in result[metric]["values"]), (name, metric)
      assert result[metric]["n"] == 2
    # The sweep chose on validation documents, not on the held-out ones it reports.
    best = next(p for p in result["sweep"] if p["learning_rate"] == result["best_learning_rate"])
    assert math.isfinite(best["validation_loss"]) and best["validation_loss"] != result["eval_loss"]["values"][0]
  assert 0.0 <= summary["optimizers"]["acclip"]["mean_clip_fraction"]["mean"] <= 1.0
  for result in summary["optimizers"].values():  # the held-out loss by token frequency, every optimizer
    assert len(result["eval_loss_by_frequency"]) == 4 and result["eval_loss_by_frequency"][0]["n"] == 2
    assert sum(bucket["train_share"] for bucket in result["frequency_buckets"]) == pytest.approx(1.0)
  assert summary["optimizers"]["adam"]["mean_clip_fraction"] is None
  linked = re.findall(r"!\[[^\]]*\]\(([^)]+)\)", text)
  for figure in ("bert/loss_curves.png", "bert/clip_fraction.png", "bert/learning_rate_sweep.png",
                 "bert/loss_by_token_frequency.png",
                 "synthetic/dimension.png", "noise/noise_norms.png"):
    assert figure in linked, figure
  for path in linked:
    assert os.path.getsize(os.path.join(out_dir, path)) > 0, path


def test_results_files_hold_the_report_numbers(tiny_reproduction):
  out_dir, results, _ = tiny_reproduction
  with open(os.path.join(out_dir, "results.json")) as f:
    stored = json.load(f)
  acclip = results["parts"]["bert"]["summary"]["optimizers"]["acclip"]
  assert stored["parts"]["bert"]["summary"]["optimizers"]["acclip"]["eval_loss"]["mean"] == pytest.approx(
      acclip["eval_loss"]["mean"])
  assert stored["configs"]["bert"]["seeds"] == [0, 1] and stored["mode"] == "tiny"
  with open(os.path.join(out_dir, "results.csv")) as f:
    csv_text = f.read()
  assert "parts.bert.summary.optimizers.acclip.best_learning_rate" in csv_text


def test_rerunning_one_part_keeps_the_others(tiny_reproduction, tmp_path):
  out_dir, results, _ = tiny_reproduction
  out_dir = shutil.copytree(out_dir, tmp_path / "copy")
  rerun = reproduce.run(out_dir, configs=_tiny_configs(), parts=["noise"],
                        runners={"noise": lambda d, config: {"rq1": {}}})
  assert rerun["parts"]["bert"]["summary"]["optimizers"]["acclip"]["eval_loss"]["mean"] == pytest.approx(
      results["parts"]["bert"]["summary"]["optimizers"]["acclip"]["eval_loss"]["mean"])
  assert rerun["research_questions"]["RQ1"]["verdict"] == verdicts.INCONCLUSIVE  # no numbers: no call
  rebuilt = reproduce.run(out_dir, parts=[])  # --report-only: nothing runs, same numbers and verdicts
  assert rebuilt["parts"] == json.loads(json.dumps(rerun["parts"]))
  assert {rq: r["verdict"] for rq, r in rebuilt["research_questions"].items()} == {
      rq: r["verdict"] for rq, r in rerun["research_questions"].items()}
  assert rebuilt["mode"] == "tiny" and rebuilt["configs"] == json.loads(json.dumps(rerun["configs"]))


def test_an_interrupted_comparison_redoes_only_the_unfinished_runs(tiny_reproduction, tmp_path, capsys):
  out_dir, results, _ = tiny_reproduction
  bert_dir = shutil.copytree(os.path.join(out_dir, "bert"), tmp_path / "bert")
  finished = sorted(glob.glob(os.path.join(bert_dir, "runs", "*", "*", comparison.RUN_RESULT_FILENAME)))
  # As if the first run had been killed before it finished or checkpointed: it trains again from scratch.
  os.remove(finished[0])
  shutil.rmtree(os.path.join(os.path.dirname(finished[0]), "checkpoints"), ignore_errors=True)

  def edit_recorded_config(path, drop=(), **fields):
    with open(path) as f:
      saved = json.load(f)
    saved["config"].update(fields)
    for name in drop:
      del saved["config"][name]
    with open(path, "w") as f:
      json.dump(saved, f)

  edit_recorded_config(finished[1], save_checkpoints=False)  # changes no number: still reused
  # Recorded before the config had a field, which this run leaves at its default: the same setup.
  edit_recorded_config(finished[1], drop=("qk_clip_threshold",))
  # Recorded before a field that this run sets away from its default (tiny's warm-up): another setup.
  edit_recorded_config(finished[2], drop=("warmup_steps",))
  with pytest.raises(ValueError, match=r"holds a finished run of another setup \(it differs in warmup_steps\)"):
    comparison.run(str(bert_dir), _tiny_bert_config())
  edit_recorded_config(finished[2], warmup_steps=-1)  # another experiment's run: never overwritten
  with pytest.raises(ValueError, match=r"holds a finished run of another setup \(it differs in warmup_steps\)"):
    comparison.run(str(bert_dir), _tiny_bert_config())
  edit_recorded_config(finished[2], warmup_steps=_tiny_bert_config().overrides.warmup_steps)
  # A run recorded on another corpus (the fingerprint of its documents differs) is not reused either; one
  # recorded before runs had fingerprints is.
  with open(finished[2]) as f:
    saved = json.load(f)
  assert saved["final"]["corpus_sha256"] == input_pipeline.documents_sha256(input_pipeline.load_documents(
      saved["config"]["corpus"], max_documents=saved["config"]["max_documents"]))
  with open(finished[2], "w") as f:
    json.dump(dict(saved, final=dict(saved["final"], corpus_sha256="0" * 64)), f)
  with pytest.raises(ValueError, match=r"was trained on another corpus than this study loaded \(corpus_sha256 0000"):
    comparison.run(str(bert_dir), _tiny_bert_config())
  del saved["final"]["corpus_sha256"]
  with open(finished[2], "w") as f:
    json.dump(saved, f)
  capsys.readouterr()
  summary = comparison.run(str(bert_dir), _tiny_bert_config())
  log = capsys.readouterr().out
  assert log.count("finished before, reusing") == len(finished) - 1
  assert f"{os.path.relpath(os.path.dirname(finished[1]), os.path.join(bert_dir, 'runs'))}: finished before" in log
  # The redone run is deterministic, so every number is the uninterrupted comparison's.
  original = results["parts"]["bert"]["summary"]["optimizers"]
  for name, result in summary["optimizers"].items():
    assert result["eval_loss"]["values"] == pytest.approx(original[name]["eval_loss"]["values"]), name
  # SQuAD fine-tunes from a run's final checkpoint: a run recorded without one is redone when it must keep it.
  optimizer, run_name = os.path.relpath(os.path.dirname(finished[1]), os.path.join(bert_dir, "runs")).split("/")
  learning_rate, seed = float(run_name[2:].split("_seed")[0]), int(run_name.split("_seed")[1])
  settings = dataclasses.replace(comparison.ComparisonSettings.from_config(_tiny_bert_config()), overrides={
      **_tiny_bert_config().overrides, "save_checkpoints": True,
      "vocab_file": os.path.join(bert_dir, "vocabulary", "vocab.txt")})
  recorded = results_lib.read_json(finished[1])["final"]
  shutil.rmtree(os.path.join(os.path.dirname(finished[1]), "checkpoints"), ignore_errors=True)  # none kept
  capsys.readouterr()
  redone = comparison.pretrain(settings, str(bert_dir), optimizer, learning_rate, seed,
                                keep_checkpoint=True)
  assert "without its final checkpoint" in capsys.readouterr().out
  assert redone["final"]["eval_loss"] == pytest.approx(recorded["eval_loss"])
  assert os.listdir(os.path.join(os.path.dirname(finished[1]), "checkpoints"))


def test_a_run_resumed_after_a_preemption_records_the_wall_time_of_all_its_segments(tmp_path, monkeypatch):
  """wall_s of a run that a notice stopped with a checkpoint, then resumed, is the sum of its segments; a
  notice without a checkpoint (the rerun starts over) drops the earlier time."""
  from experiments.bert import train  # pylint: disable=g-import-not-at-top
  segments = iter([(0.30, 5), (0.20, None), (0.25, 3), (0.15, "done")])

  def fake_train_and_evaluate(config, workdir):
    seconds, outcome = next(segments)
    os.makedirs(workdir, exist_ok=True)
    clock[0] += seconds
    if outcome != "done":
      raise training_loop.Preempted(workdir, 7, outcome)
    return {"eval_loss": 1.5}

  clock = [100.0]
  monkeypatch.setattr(train, "train_and_evaluate", fake_train_and_evaluate)
  monkeypatch.setattr(comparison_runs.time, "perf_counter", lambda: clock[0])
  settings = comparison.ComparisonSettings.from_config(_tiny_bert_config())
  out_dir = str(tmp_path)
  for _ in range(3):
    with pytest.raises(training_loop.Preempted):
      comparison.pretrain(settings, out_dir, "adam", 1e-3, 0)
  run = comparison.pretrain(settings, out_dir, "adam", 1e-3, 0)
  assert run["wall_s"] == pytest.approx(0.25 + 0.15)  # the 0.30 s before the start-over do not count
  workdir = os.path.join(out_dir, "runs", "adam", "lr0.001_seed0")
  assert results_lib.read_json(os.path.join(workdir, comparison.RUN_RESULT_FILENAME))["wall_s"] == run["wall_s"]
  assert not os.path.exists(os.path.join(workdir, comparison_runs.PREEMPTED_WALL_FILENAME))


def test_comparisons_run_apart_combine_into_the_one_they_split_from(tiny_reproduction, tmp_path, capsys):
  """Optimizers run later into another folder (as the post-paper methods were): combining the two summaries
  gives every optimizer's recorded numbers and the verdicts of the comparison that ran them together."""
  _, results, _ = tiny_reproduction
  whole = json.loads(json.dumps(results["parts"]["bert"]["summary"]))
  names = list(whole["optimizers"])
  paths = []
  for i, subset in enumerate((names[:1], names[1:])):
    part = dict(whole, optimizers={n: whole["optimizers"][n] for n in subset})
    part["settings"] = dict(whole["settings"], learning_rates={n: whole["settings"]["learning_rates"][n]
                                                               for n in subset})
    part["settings"]["overrides"] = dict(whole["settings"]["overrides"], vocab_file=f"/elsewhere/{i}/vocab.txt")
    if i:  # the BERT config's own weight decay, given explicitly (--weight-decay 0.01): the same setup
      part["settings"]["overrides"]["weight_decay"] = 0.01
    os.makedirs(tmp_path / f"part{i}")
    paths.append(str(tmp_path / f"part{i}" / "results.json"))
    results_lib.write_json(paths[-1], part)
  assert combine.main(["--out", str(tmp_path / "combined")] + paths) == 0
  combined = results_lib.read_json(str(tmp_path / "combined" / "results.json"))
  assert combined["optimizers"] == whole["optimizers"]
  assert [s["optimizers"] for s in combined["sources"]] == [names[:1], names[1:]]
  for assess in (comparison_verdict.assess_rq4, comparison_verdict.assess_rq5):
    assert assess(combined) == assess(whole)
  text = (tmp_path / "combined" / "summary.md").read_text()
  assert "## RQ5" in text and "held-out MLM loss" in text
  assert combined["figures"] == combine.FIGURES  # Adam has bucket losses: both drawn, and named
  assert all((tmp_path / "combined" / name).exists() for name in combined["figures"].values())
  assert "Figure: loss_by_token_frequency.png" in text
  without_adam = {n: r for n, r in whole["optimizers"].items() if n != "adam"}
  assert combine.draw_figures(without_adam, str(tmp_path / "combined")) == {
      "learning_rate_sweep": "learning_rate_sweep.png"}
  assert not (tmp_path / "combined" / "loss_by_token_frequency.png").exists()  # not left from before
  assert "No figure" in "\n".join(summary_lib.frequency_lines(without_adam))

  changed = dict(results_lib.read_json(paths[1]))
  changed["settings"]["overrides"]["num_train_steps"] += 1
  results_lib.write_json(paths[1], changed)
  capsys.readouterr()
  with pytest.raises(SystemExit):
    combine.main(["--out", str(tmp_path / "refused")] + paths)
  assert "differ in overrides.num_train_steps" in capsys.readouterr().err
  with pytest.raises(SystemExit):  # never over a comparison's own results
    combine.main(["--out", str(tmp_path / "part0"), paths[0], paths[0].replace("part0", "part1")])
  assert "was written by something else than this command" in capsys.readouterr().err
  with pytest.raises(ValueError, match="both have"):
    combine.combine([whole, whole], ["a", "b"])
  other_corpus = dict(whole, corpus=dict(whole["corpus"], train_tokens=whole["corpus"]["train_tokens"] + 1))
  with pytest.raises(ValueError, match="differ in corpus loaded"):
    combine.combine([whole, other_corpus], ["a", "b"])
  edited = dict(whole, corpus=dict(whole["corpus"], sha256="0" * 64))  # the same counts, other documents
  with pytest.raises(ValueError, match="differ in corpus fingerprint"):
    combine.combine([whole, edited], ["a", "b"])
  older = dict(whole, corpus={k: v for k, v in whole["corpus"].items() if k != "sha256"})
  assert combine.combine([older, dict(whole, optimizers={})], ["a", "b"])["optimizers"] == whole["optimizers"]


def test_a_preempted_reproduction_keeps_its_finished_parts_and_the_same_command_continues(tmp_path):
  """SIGTERM in the noise part (a `training_loop.Preempted` out of its training loop) is not a failure: the
  reproduction writes the finished synthetic part and stops; the same call keeps it and redoes the noise."""
  calls = []

  def preempted_once(out_dir, config):
    calls.append("noise")
    if calls.count("noise") == 1:
      raise training_loop.Preempted(out_dir, 7, 5)
    return _noise_stand_in(out_dir)

  def synthetic(out_dir, config):
    calls.append("synthetic")
    return _synthetic_stand_in(out_dir)

  runners = {"synthetic": synthetic, "noise": preempted_once}
  out_dir = str(tmp_path / "out")
  with pytest.raises(training_loop.Preempted, match="at step 7"):
    reproduce.run(out_dir, configs=_tiny_configs(), runners=runners, parts=["synthetic", "noise"])
  stopped = results_lib.read_json(os.path.join(out_dir, "results.json"))
  assert {name: part["status"] for name, part in stopped["parts"].items()} == {"synthetic": "ok",
                                                                             "noise": "preempted"}
  assert "at step 7" in stopped["preempted"]
  resumed = reproduce.run(out_dir, configs=_tiny_configs(), runners=runners, parts=["synthetic", "noise"])
  assert calls == ["synthetic", "noise", "noise"]  # synthetic kept, noise redone
  assert {name: part["status"] for name, part in resumed["parts"].items()} == {"synthetic": "ok", "noise": "ok"}
  assert resumed["preempted"] is None and resumed["parts"]["synthetic"] == stopped["parts"]["synthetic"]
  again = reproduce.run(out_dir, configs=_tiny_configs(), runners=runners, parts=["synthetic"])
  assert calls[-1] == "synthetic" and again["parts"]["noise"] == resumed["parts"]["noise"]  # no resume now


def _numbers(results, out_dir):
  """Every value of the parts' results but the times and loads, with out_dir in paths made generic."""
  skip = ("wall_s", "cpu_s", "load_average", "tokens_per_s", "seconds", "elapsed")
  def walk(value, path):
    if isinstance(value, dict):
      return {k: walk(v, f"{path}/{k}") for k, v in value.items() if not any(s in k for s in skip)}
    if isinstance(value, list):
      return [walk(v, path) for v in value]
    return value.replace(out_dir, "OUT") if isinstance(value, str) else value
  return walk(results["parts"], "")


def test_a_part_in_a_worker_process_gives_the_same_numbers(tmp_path):
  """--jobs 2: a real study in a spawned process, with its output in <part>/output.log, gives every number
  that this process gives; jobs with stand-in runners is refused. (Two parts at once: the quick
  reproduction in docs/benchmarks.md, every number equal to the recorded one-process run.)"""
  configs = _tiny_configs()
  one, two = str(tmp_path / "one"), str(tmp_path / "two")
  sequential = reproduce.run(one, configs=configs, parts=["synthetic"], command="pytest")
  in_worker = reproduce.run(two, configs=configs, parts=["synthetic"], command="pytest", jobs=2)
  assert in_worker["parts"]["synthetic"]["status"] == "ok"
  assert _numbers(in_worker, two) == _numbers(sequential, one)
  assert in_worker["research_questions"] == sequential["research_questions"]
  assert "[reproduce] synthetic: ok" in (tmp_path / "two" / "synthetic" / "output.log").read_text()
  with pytest.raises(ValueError, match="jobs=2"):
    reproduce.run(str(tmp_path / "three"), configs=configs, runners=STAND_INS, jobs=2)


def test_report_only_describes_the_run_that_made_the_numbers(tiny_reproduction, tmp_path):
  """--report-only with comparison flags (and no --quick) must not relabel the run (it once turned a quick
  run into a full one): the mode and configs are the recorded ones."""
  out_dir, results, _ = tiny_reproduction
  out_dir = str(shutil.copytree(out_dir, tmp_path / "copy"))
  assert reproduce.main(["--out", out_dir, "--report-only", "--weight-decay", "0"]) == 0
  with open(os.path.join(out_dir, "results.json")) as f:
    rebuilt = json.load(f)
  assert rebuilt["mode"] == "tiny"
  assert rebuilt["configs"] == json.loads(json.dumps(results["configs"]))
  text = open(os.path.join(out_dir, "report.md")).read()
  assert "Mode: **tiny**" in text and "This run used the **tiny** mode" in text
