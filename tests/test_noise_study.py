"""The BERT-vs-ResNet gradient-noise study: its analysis pieces, and its whole path at tiny sizes."""
import dataclasses
import json
import os
import types

import jax
import numpy as np
import pytest
from scipy import stats

from experiments.bert import models as bert_models
from experiments.common import verdicts
from experiments.common import training_loop
from experiments.noise import __main__ as cli
from experiments.noise import measure
from experiments.noise import study
from experiments.noise import training
from experiments.noise import verdict
from experiments.noise import workloads
from experiments.noise.configs import quick, tiny


def test_bert_parameter_groups_cover_the_model():
  params = bert_models.abstract_params(bert_models.BertConfig(vocab_size=50, hidden_size=8, num_layers=1,
                                                              num_heads=2, intermediate_size=16))
  groups = jax.tree_util.tree_map_with_path(lambda path, _: workloads.bert_parameter_group(path), params)
  assert set(jax.tree.leaves(groups)) == set(workloads.BERT_GROUPS)
  layer = groups["bert"]["layer_0"]
  assert layer["attention"]["query"]["kernel"] == "attention"
  assert layer["intermediate"]["kernel"] == layer["output"]["bias"] == "feed_forward"
  assert layer["attention_layer_norm"]["scale"] == "layer_norm"
  assert groups["bert"]["word_embeddings"]["embedding"] == "embeddings"
  assert groups["mlm_output_bias"] == "mlm_head"
  labels = measure.group_labels(params, workloads.bert_parameter_group, workloads.BERT_GROUPS)
  assert labels.size == bert_models.count_params(params)


def test_standardised_pool_drops_scale_free_columns_and_rescales():
  columns = np.array([[1.0, 0.0, -4.0], [-3.0, 0.0, 8.0], [2.0, 0.0, 4.0]])
  pooled = measure.standardised_pool(columns)
  # Column medians of |x|: 2 and 4; the all-zero column has no scale and is dropped.
  np.testing.assert_allclose(np.sort(pooled), np.sort([0.5, -1.5, 1.0, -1.0, 2.0, 1.0]))


@pytest.mark.parametrize("alpha", [1.0, 2.0])
def test_tail_indices_of_pooled_stable_coordinates(alpha):
  # 200 coordinates with different scales, 100 batches each: standardising and pooling keeps the index.
  rng = np.random.default_rng(0)
  coordinates = stats.levy_stable.rvs(alpha, 0.0, size=(100, 200), random_state=rng) * rng.uniform(
      0.01, 10.0, 200)
  estimates = measure.tail_indices(measure.standardised_pool(coordinates))
  assert estimates["n"] == 20_000
  assert abs(estimates["alpha_mohammadi"] - alpha) < 0.15
  # Hill is exact for power-law tails and (as documented) biased upwards near the Gaussian.
  assert estimates["alpha_hill"] == pytest.approx(alpha, abs=0.2) if alpha == 1.0 else \
      estimates["alpha_hill"] > 2.5


def test_study_runs_end_to_end_at_tiny_sizes(tmp_path):
  """On a corpus that is not the default one: the data description (which the report prints) names what
  was loaded."""
  from pydoc_data.topics import topics  # pylint: disable=g-import-not-at-top
  corpus = tmp_path / "my_corpus.txt"
  corpus.write_text("\n\n".join(" ".join(topics[name].split()) for name in sorted(topics)[:16]))
  config = tiny.get_config()
  config.bert_corpus = str(corpus)
  results = study.run(str(tmp_path), config)
  assert results["mode"] == "tiny" and results["config"] == json.loads(json.dumps(config.to_dict()))
  bert_data, resnet_data = results["data_description"]
  assert bert_data.startswith(f"bert: BERT-tiny MLM on the text file {corpus} (") and "pydoc_data" not in bert_data
  assert resnet_data.startswith("resnet: ResNet-18") and "on fashion_mnist_subset (256 train and 2000 test images" in resnet_data
  assert json.loads(json.dumps(results)) == results  # JSON-able, as the report needs
  for name in results["files"]:
    assert os.path.getsize(tmp_path / name) > 0, name
  assert any(name.endswith("_histogram.png") for name in results["files"])
  assert any(name.endswith("_hill.png") for name in results["files"])
  for model, groups in (("bert", workloads.BERT_GROUPS), ("resnet", workloads.RESNET_GROUPS)):
    points = results[model]["noise"]["points"]
    assert [p["step"] for p in points] == [0, 2]
    assert points[0]["eval_loss"] == "nan" and np.isfinite(points[-1]["eval_loss"])  # none before training
    entry = points[-1]["batch_sizes"]["8"]
    assert set(entry["groups"]) <= set(groups)
    assert np.isfinite(entry["pooled"]["alpha_mohammadi"]) and entry["variance_final"] > 0
    sweep = results[model]["sweep"]
    for name in ("sgd", "adam"):  # the best learning rate is the grid point with the lowest mean loss
      assert set(sweep[name]["grid"]) == {str(float(lr)) for lr in config[f"{model}_{name}_lrs"]}  # no extension
      grid_losses = {float(lr): stats["eval_loss_mean"] for lr, stats in sweep[name]["grid"].items()}
      assert sweep[name]["best_learning_rate"] == min(grid_losses, key=grid_losses.get)
  assert set(results["rq1"]) == {"bert", "resnet"}
  header = (tmp_path / "results.csv").read_text().splitlines()[0]
  assert header == "model,part,step,batch_size,group,optimizer,learning_rate,seed,metric,value"
  summary = (tmp_path / "summary.md").read_text()
  assert "RQ1 verdict" in summary and "Per parameter group" in summary
  assessed = verdict.assess_rq1(results["rq1"])  # summary.md states the report's verdict, by the same rule
  assert f"**Verdict: {assessed['verdict']}.**" in summary


def test_trajectory_paused_at_its_stops_equals_one_uninterrupted_run(tmp_path):
  config = study.StudyConfig.from_config(tiny.get_config())
  workload = workloads.bert_workload(config, str(tmp_path))
  # The end-to-end test's sweep length: the same step key, so one process compiles the step once.
  spec = training.optimizer(workload.trajectory_optimizer, workload.decay, total_steps=config.sweep_steps)
  # One compiled step for every learning rate of a sweep: the peak learning rate lives in the state.
  assert training.compiled_steps(workload, spec.replace(learning_rate=0.5)) is training.compiled_steps(workload, spec)
  stops = list(training.trajectory(workload, spec, seed=1, batch_size=8, stops=[0, 1, 2],
                                   workdir=str(tmp_path / "paused")))
  # Each segment resumes from the checkpoint the previous one left at its stop.
  assert [(stop, run.get("start_step"), run.get("steps")) for stop, _, run in stops] == [
      (0, None, None), (1, 0, 1), (2, 1, 2)]
  whole = training.train(workload, spec, seed=1, batch_size=8, workdir=str(tmp_path / "whole"))
  jax.tree.map(np.testing.assert_array_equal, stops[-1][1], training.PARALLELISM.to_host(whole["state"]).params)
  assert stops[-1][2]["train_loss_last10"] == whole["train_loss_last10"]  # the losses before the pause count
  assert stops[-1][2]["eval_loss"] == whole["eval_loss"] and np.isfinite(whole["eval_loss"])
  assert not whole["diverged"] and whole["steps"] == 2


def test_a_best_learning_rate_at_an_end_of_the_grid_extends_the_sweep(monkeypatch):
  """The comparison's learning rates (a fake run: a loss smallest at 0.01 for Adam and 0.03 for SGD in log lr,
  one seed of SGD at 0.3 diverging): each sweep runs past the grid's end until its best is inside, or the
  extensions run out."""
  calls = []

  def fake_train(workload, spec, *, seed, batch_size, workdir):
    calls.append((spec.name, spec.learning_rate, seed))
    optimum = 0.01 if spec.name == "adam" else 0.03
    loss = 5.0 + np.log10(spec.learning_rate / optimum) ** 2 + 0.01 * (seed % 2)
    return {"eval_loss": float("inf") if spec.learning_rate >= 0.3 and seed % 2 else loss, "eval_accuracy": 0.1}

  monkeypatch.setattr(training, "train", fake_train)
  workload = types.SimpleNamespace(name="fake", decay="linear")
  config = dataclasses.replace(study.StudyConfig.from_config(tiny.get_config()), sweep_max_extensions=2)
  rows = []
  results = study._optimizer_comparison(workload, config, {"adam": (3e-4, 1e-3), "sgd": (0.1, 0.3)}, 8, "unused", rows)
  adam, sgd = results["adam"], results["sgd"]
  # Adam: 0.0003 and 0.001, best the larger; then 0.003 and 0.01, each best in turn: after two extensions (the
  # limit) the best is still the largest that ran, and marked.
  assert list(adam["grid"]) == ["0.0003", "0.001", "0.003", "0.01"] and adam["best_learning_rate"] == 0.01
  assert adam["best_at_grid_edge"] and adam["configured_grid"] == [3e-4, 1e-3]
  # SGD: 0.3 diverged in one seed (mean inf), 0.1 best at the low end, then 0.03 best, 0.01 worse: inside.
  assert list(sgd["grid"]) == ["0.01", "0.03", "0.1", "0.3"] and sgd["best_learning_rate"] == 0.03
  assert not sgd["best_at_grid_edge"] and sgd["eval_loss_mean"] == pytest.approx(5.005)
  assert sgd["grid"]["0.3"]["diverged_seeds"] == 1 and sgd["grid"]["0.3"]["eval_loss_std"] == float("inf")
  assert len(calls) == 2 * (4 + 4) and len(rows) == 2 * len(calls)  # every seed of every point, two metrics
  entry = {"pooled": {"alpha_mohammadi": 1.5, "alpha_hill": 1.5}, "alpha_hill_norms": 3.0, "variance_growth": 1.0,
           "groups": {}}
  noise = {"main_batch_size": 8, "points": [{"batch_sizes": {8: entry}}]}
  numbers = study.rq1_numbers({"bert": {"noise": noise, "sweep": {**results, "gap_eval_loss": 0.0,
                                                                    "gap_relative": 0.0, "gap_eval_loss_median": 0.0,
                                                                    "gap_in_seed_std": 0.0}}})
  assert numbers["bert"]["best_at_grid_edge"] == ["adam"]
  assert verdict.assess_rq1(numbers)["edges"] == ["adam on BERT"]
  # Every seed of every learning rate diverging: the smallest is reported (scored inf) and marked.
  monkeypatch.setattr(training, "train", lambda *args, **kwargs: {"eval_loss": float("nan"), "eval_accuracy": 0.0})
  diverged = study._optimizer_comparison(workload, config, {"sgd": (0.1, 0.3), "adam": (1e-3,)}, 8, "unused",
                                         [])["sgd"]
  assert diverged["best_learning_rate"] == 0.01 and diverged["best_at_grid_edge"]  # went down twice
  assert diverged["eval_loss_mean"] == float("inf")


def test_rq1_verdict_follows_the_numbers():
  def fake(alpha, gap):
    entry = {"pooled": {"alpha_mohammadi": alpha, "alpha_hill": alpha}, "alpha_hill_norms": 3.0,
             "variance_growth": 1.0, "groups": {"g": {"alpha_mohammadi": alpha}}}
    return {"noise": {"main_batch_size": 8, "points": [{"batch_sizes": {8: entry}}]},
            "sweep": {"gap_eval_loss": gap, "gap_relative": gap, "gap_in_seed_std": 1.0,
                      "gap_eval_loss_median": gap}}
  supported = verdict.assess_rq1(study.rq1_numbers({"bert": fake(1.5, 0.3), "resnet": fake(1.9, 0.0)}))
  assert supported["verdict"] == verdicts.SUPPORTED
  # BERT's tail index within the margin of ResNet's: no call on that row, so no overall call.
  close = verdict.assess_rq1(study.rq1_numbers({"bert": fake(1.85, 0.3), "resnet": fake(1.9, 0.0)}))
  assert close["rows"][0]["verdict"] == verdicts.INCONCLUSIVE and close["rows"][2]["verdict"] == verdicts.SUPPORTED
  assert close["verdict"] == verdicts.INCONCLUSIVE
  opposite = verdict.assess_rq1(study.rq1_numbers({"bert": fake(2.0, -0.1), "resnet": fake(1.5, 0.0)}))
  assert opposite["verdict"] == verdicts.NOT_SUPPORTED


def test_cli_overrides_and_bad_config():
  args = cli.parse_args(["--out", "x", "--quick", "--models", "resnet", "--seeds", "2"])
  config = cli.config_from_args(args)
  assert config.models == ("resnet",) and config.sweep_seeds == 2
  assert config.mode == "quick" and config.train_steps == quick.get_config().train_steps
  config.models = ("vit",)
  with pytest.raises(ValueError, match="models"):
    study.run("unused", config)
