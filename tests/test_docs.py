"""The user documents against what they document: the README's headline table against the recorded summaries,
its library example and the docstrings' examples run, and every public name documented."""
from __future__ import annotations

import doctest
import importlib
import inspect
import json
import os
import re

import pytest

import acclip_optax
from experiments.batch_size import verdict as batch_size_verdict
from experiments.comparison import verdict as comparison_verdict
from experiments.decay import verdict as decay_verdict
from experiments.stability import verdict as stability_verdict
from experiments.synthetic import verdict as synthetic_verdict

ROOT = os.path.join(os.path.dirname(__file__), "..")
DOCS = os.path.join(ROOT, "docs")

# The modules whose public names (their __all__) make up the API reference: the package, and the noise
# toolkit and its figures, which it exposes as modules.
PUBLIC_MODULES = ("acclip_optax", "acclip_optax.noise", "acclip_optax.noise_plots")

# How the headline table names the registry's optimizers.
DISPLAY_NAMES = {"adam": "Adam", "adamw": "AdamW", "acclip": "ACClip", "acclip_ports": "ports' ACClip",
                 "gclip": "GClip", "zclip": "ZClip", "adagc": "AdaGC", "autoclip": "AutoClip", "spam": "SPAM"}


def _read(*path: str) -> str:
  with open(os.path.join(ROOT, *path), encoding="utf-8") as f:
    return f.read()


def _json(*path: str):
  return json.loads(_read(*path))


def _headline_rows() -> dict[str, dict[str, str]]:
  """The README's results table, by research question ("RQ1" ...): its cells by column name."""
  section = _read("README.md").split("\n## Results\n", 1)[1].split("\n## ", 1)[0]
  lines = [line for line in section.splitlines() if line.startswith("|")]
  header = [cell.strip() for cell in lines[0].strip("|").split("|")]
  rows = {}
  for line in lines[2:]:
    cells = dict(zip(header, (cell.strip() for cell in line.strip("|").split("|"))))
    rows[cells["question"].split()[0]] = cells
  return rows


def _verdict_cell(verdict: str) -> str:
  """A verdict as the table prints it; the rules' 'inconclusive at this scale' is 'inconclusive' there."""
  return f"**{verdict.replace(' at this scale', '')}**"


def _signed_percent(value: float) -> str:
  return f"{'+' if value > 0 else '−'}{abs(value):.1f}%"


def _seed_stats(stats) -> str:
  return f"{stats['mean']:.3f} ± {stats['std']:.3f}"


def _quick_comparison_summary(quick):
  """The quick BERT comparison's recorded numbers in the shape the verdict rules read."""
  return {"optimizers": {name: {metric: record[metric] for metric in ("eval_loss", "eval_accuracy")
                                if metric in record}
                         for name, record in quick["bert_comparison"].items() if "eval_loss" in record}}


def _expected_rows():
  """Per research question: the verdicts and the key-number strings the recorded summaries give."""
  quick = _json("docs", "results", "quick_summary.json")
  synthetic = _json("docs", "synthetic_full", "summary.json")
  bert = _json("docs", "bert_full_later", "results.json")
  quick_bert = _quick_comparison_summary(quick)
  rows = {}

  rq1 = quick["rq1"]
  rows["RQ1"] = (rq1["verdict"], "not run", [
      f"BERT {rq1['tail_index_mohammadi']['bert']:.2f} vs ResNet {rq1['tail_index_mohammadi']['resnet']:.2f}",
      f"{_signed_percent(rq1['sgd_minus_adam_percent']['bert'])} on BERT",
      f"{_signed_percent(rq1['sgd_minus_adam_percent']['resnet'])} on ResNet"])

  quick_p90, full_p90 = quick["rq2"]["p90"]["quadratic_kappa2"], synthetic["rq2"]["quadratic_kappa2"]
  rows["RQ2"] = (quick["rq2"]["verdict"], synthetic_verdict.assess_rq2(synthetic)["verdict"], [
      f"α = {synthetic['rq2']['alpha']:g}",
      f"{quick_p90['sgd']:.3g} vs {quick_p90['gclip']:.3g} (quick)",
      f"{full_p90['sgd_tuned_p90']:.3g} vs {full_p90['gclip_tuned_p90']:.3g} (full)"])

  quick_slopes, full_slopes = quick["rq3"]["slope_vs_d"], synthetic["rq3"]["1.2"]
  rows["RQ3"] = (quick["rq3"]["verdict"], synthetic_verdict.assess_rq3(synthetic)["verdict"], [
      f"α = {quick['rq3']['alpha']:g}",
      f"{quick_slopes['gclip']:.2f} vs {quick_slopes['cclip']:.2f} (quick)",
      f"{full_slopes['gclip_tuned_slope_vs_d']:.3f} vs {full_slopes['cclip_tuned_slope_vs_d']:.3f} (full)"])

  def loss(summary, name):
    return _seed_stats(summary["optimizers"][name]["eval_loss"])

  rows["RQ4"] = (comparison_verdict.assess_rq4(quick_bert)["verdict"],
                 comparison_verdict.assess_rq4(bert)["verdict"], [
      f"{loss(quick_bert, 'acclip')} vs {loss(quick_bert, 'adam')} (quick)",
      f"{loss(bert, 'acclip')} vs {loss(bert, 'adam')} (full)"])

  best = lambda summary, names: comparison_verdict._best(summary, names)  # pylint: disable=protected-access
  quick_new, quick_adam = quick["rq5"]["best_later_method"], quick["rq5"]["better_adam"]
  new_means = {name: quick_bert["optimizers"][name]["eval_loss"]["mean"]
               for name in comparison_verdict.POST_PAPER_METHODS if name in quick_bert["optimizers"]}
  assert new_means[quick_new] == min(new_means.values()), "quick_summary.json's best later method"
  assert quick_adam == best(quick_bert, comparison_verdict.ADAM_BASELINES)
  full_new, full_adam = (best(bert, comparison_verdict.POST_PAPER_METHODS),
                         best(bert, comparison_verdict.ADAM_BASELINES))
  rows["RQ5"] = (comparison_verdict.assess_rq5(quick_bert)["verdict"],
                 comparison_verdict.assess_rq5(bert)["verdict"], [
      f"{DISPLAY_NAMES[quick_new]} {loss(quick_bert, quick_new)} vs {DISPLAY_NAMES[quick_adam]} "
      f"{loss(quick_bert, quick_adam)} (quick)",
      f"{DISPLAY_NAMES[full_new]} {loss(bert, full_new)} vs {DISPLAY_NAMES[full_adam]} {loss(bert, full_adam)} "
      "(full)"])
  return quick, rows


@pytest.mark.parametrize("question", ["RQ1", "RQ2", "RQ3", "RQ4", "RQ5"])
def test_readme_headline_row_equals_the_recorded_summaries(question):
  quick, expected = _expected_rows()
  quick_verdict, full_verdict, numbers = expected[question]
  row = _headline_rows()[question]
  assert quick_verdict == quick[question.lower()]["verdict"], "the rule disagrees with the quick report"
  assert row["quick"] == _verdict_cell(quick_verdict)
  assert row["full"] == (full_verdict if full_verdict == "not run" else _verdict_cell(full_verdict))
  for number in numbers:
    assert number in row["key numbers"], f"{question}: {number!r} not in {row['key numbers']!r}"


def test_readme_rq6_row_equals_the_quick_stability_summary():
  summary = _json("docs", "stability_quick", "summary.json")
  row = _headline_rows()["RQ6"]
  assert row["quick"] == _verdict_cell(stability_verdict.assess_rq6(summary)["verdict"])
  margins = {m["margin"] for m in summary["margins"].values()}
  failures = {m["first_failure"] for m in summary["margins"].values()}
  assert len(margins) == len(failures) == 1, "the row's sentence assumes one margin for every method"
  assert (f"{margins.pop():g} for all {len(summary['margins'])} methods, every one collapses at {failures.pop():g}"
          in row["key numbers"])


def test_readme_rq6_full_cell_equals_the_full_stability_summary():
  summary = _json("docs", "stability_full", "summary.json")
  cell = _verdict_cell(stability_verdict.assess_rq6(summary)["verdict"])
  if not summary["complete"]:
    cell += f" (partial: {summary['runs_done']} of {summary['runs_planned']} runs)"
  assert _headline_rows()["RQ6"]["full"] == cell
  margins = summary["margins"]
  assert (f"AdamW trains at {margins['adamw']['margin']:g} and collapses at {margins['adamw']['first_failure']:g}"
          in _headline_rows()["RQ6"]["key numbers"])


def _full_cell(study: str, verdict_of) -> str:
  """The headline table's full cell of a study whose full runs may still be going: "running" until a
  summary is committed under docs/<study>_full/, then its verdict (with "partial" while incomplete)."""
  path = os.path.join(DOCS, f"{study}_full", "summary.json")
  if not os.path.exists(path):
    return "running"
  summary = _json("docs", f"{study}_full", "summary.json")
  cell = _verdict_cell(verdict_of(summary)["verdict"])
  return cell if summary["complete"] else cell + f" (partial: {summary['cells_done']} of {summary['cells_planned']} cells)"


def test_readme_rq7_row_equals_the_factorial_summaries():
  summary = _json("docs", "decay_quick", "summary.json")
  row = _headline_rows()["RQ7"]
  assert row["quick"] == _verdict_cell(decay_verdict.assess_rq7(summary)["verdict"])
  assert row["full"] == _full_cell("decay", decay_verdict.assess_rq7)
  gaps = ", ".join(f"{mode} {decay_verdict.gap(summary['cells'], mode)['gap']:+.3f}" for mode in summary["cells"])
  assert gaps in row["key numbers"], (gaps, row["key numbers"])
  assert _json("docs", "results", "quick_summary.json")["rq7"]["verdict"] == decay_verdict.assess_rq7(summary)["verdict"]
  full = _json("docs", "decay_full", "summary.json")  # the full mode's numbers too, RQ4's pairing among them
  found = [tuple(map(float, re.search(r"gap ([+-][\d.]+), spread ([\d.]+)", r["ours"]).groups()))
           for r in decay_verdict.assess_rq7(full)["rows"]]
  full_numbers = row["key numbers"].split("(quick);", 1)[1]
  assert [f"{gap:+.3f}" for gap, _ in found] == re.findall(r"(?<!\d)[+-]\d\.\d{3}", full_numbers), full_numbers
  spreads = [spread for _, spread in found]
  assert f"({min(spreads):.3f}-{max(spreads):.3f})" in full_numbers, full_numbers


def test_readme_rq8_row_equals_the_batch_size_summaries():
  summary = _json("docs", "batch_size_quick", "summary.json")
  assessed = batch_size_verdict.assess_rq8(summary)
  row = _headline_rows()["RQ8"]
  assert row["quick"] == _verdict_cell(assessed["verdict"])
  assert row["full"] == _full_cell("batch_size", batch_size_verdict.assess_rq8)
  sizes = summary["config"]["batch_sizes"]
  assert (f"{assessed['gap_smallest']:+.3f} at batch {sizes[0]}, {assessed['gap_full']:+.3f} with the full batch "
          f"of {sizes[-1]} sequences") in row["key numbers"]
  assert _json("docs", "results", "quick_summary.json")["rq8"]["verdict"] == assessed["verdict"]
  full = _json("docs", "batch_size_full", "summary.json")
  assessed, sizes = batch_size_verdict.assess_rq8(full), full["config"]["batch_sizes"]
  assert (f"{assessed['gap_smallest']:+.3f} at batch {sizes[0]}, {assessed['gap_full']:+.3f} with the full batch "
          f"of {sizes[-1]}") in row["key numbers"].split("(quick);", 1)[1]


def test_no_quick_comparison_optimizer_is_tuned_at_the_edge_of_what_it_ran():
  run = _json("docs", "results", "quick_avx512", "results.json")
  for name, result in run["parts"]["bert"]["summary"]["optimizers"].items():
    assert result["best_at_edge"] is None, name
  for summary in (_json("docs", "decay_quick", "summary.json"), _json("docs", "batch_size_quick", "summary.json")):
    for cells in summary["cells"].values():
      assert all(cell["best_at_edge"] is None for cell in cells.values())


def test_readme_headline_rows_link_to_existing_results_pages():
  for question, row in _headline_rows().items():
    for target in re.findall(r"\]\((docs/results/[^)#]+)", row["details"]):
      assert os.path.exists(os.path.join(ROOT, target)), f"{question} links to a missing {target}"


def test_readme_library_example_runs(capsys):
  code = _read("README.md").split("```python", 1)[1].split("```", 1)[0]
  exec(compile(code, "README.md", "exec"), {"__name__": "readme_example"})  # pylint: disable=exec-used
  assert "clip_fraction" in capsys.readouterr().out


def test_the_muon_page_example_runs(capsys):
  code = _read("docs", "muon_and_clipping.md").split("```python", 1)[1].split("```", 1)[0]
  exec(compile(code, "docs/muon_and_clipping.md", "exec"), {"__name__": "muon_example"})  # pylint: disable=exec-used
  assert "global_norm" in capsys.readouterr().out


def _public_objects():
  for module_name in PUBLIC_MODULES:
    module = importlib.import_module(module_name)
    for name in module.__all__:
      yield f"{module_name}.{name}", getattr(module, name)


@pytest.mark.parametrize("qualified_name, obj", list(_public_objects()), ids=lambda x: x if isinstance(x, str) else "")
def test_public_name_has_a_docstring_with_references(qualified_name, obj):
  """Every public name has a docstring; a method's names the paper once, in its transformation's docstring
  (a state says whose it is: "State of `qk_clip`...")."""
  doc = inspect.getdoc(obj)
  assert doc and doc.strip(), f"{qualified_name} has no docstring"
  if inspect.isclass(obj) and doc.startswith(("State of `", "Part of the state of `")):
    owner = doc.split("`", 2)[1]
    assert "References:" in inspect.getdoc(getattr(acclip_optax, owner)), qualified_name
    return
  assert "References:" in doc, f"{qualified_name}'s docstring has no References: section"


def _public_doctests():
  """(qualified name, its doctest) of every public object whose docstring has examples, found on the object
  itself (the package re-exports names defined in private modules, which a doctest run over the package
  would not collect)."""
  finder = doctest.DocTestFinder(recurse=False)
  for qualified_name, obj in _public_objects():
    if not inspect.ismodule(obj):
      for test in finder.find(obj, qualified_name):
        if test.examples:
          yield qualified_name, test


@pytest.mark.parametrize("qualified_name, test", list(_public_doctests()),
                         ids=lambda x: x if isinstance(x, str) else "")
def test_docstring_examples_run(qualified_name, test):
  runner = doctest.DocTestRunner(optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
  runner.run(test)
  result = runner.summarize(verbose=False)
  assert result.attempted and result.failed == 0, (
      f"{result.failed} of {result.attempted} doctest examples failed in {qualified_name}")


def test_every_public_function_of_the_library_has_an_example():
  """Every transformation, optimizer and statistic a user imports from `acclip_optax` shows its use."""
  missing = [name for name in acclip_optax.__all__ if inspect.isfunction(getattr(acclip_optax, name))
             and ">>>" not in (inspect.getdoc(getattr(acclip_optax, name)) or "")]
  assert not missing, f"no example in the docstring of {missing}"


def _page_table(page: str, heading: str) -> list[dict[str, str]]:
  """The first table after `heading` on a docs/results page, as rows of cells by column name."""
  section = _read("docs", "results", page).split(heading, 1)[1]
  lines = []
  for line in section.splitlines():
    if line.startswith("|"):
      lines.append(line)
    elif lines:
      break
  header = [cell.strip() for cell in lines[0].strip("|").split("|")]
  return [dict(zip(header, (cell.strip().strip("*") for cell in line.strip("|").split("|")))) for line in lines[2:]]


# How the results pages name the registry's optimizers in their tables.
PAGE_NAMES = {"AutoClip + AdamW": "autoclip", "ZClip + AdamW": "zclip", "AdaGC + AdamW": "adagc", "SPAM": "spam",
              "AdamW": "adamw", "ACClip (ports' rule)": "acclip_ports", "LAMB": "lamb", "SGD (momentum 0.9)": "sgd",
              "GClip": "gclip", "Adam (coupled L2)": "adam", "ACClip (paper's rule)": "acclip", "CClip": "cclip",
              "Adam": "adam", "SGD": "sgd", "SGD + momentum": "sgd_momentum", "Stable-SPAM": "stable_spam",
              "skip-step around AdamW": "skip_step_on_spikes"}


def test_bert_comparison_page_full_table_equals_the_recorded_summary():
  optimizers = _json("docs", "bert_full_later", "results.json")["optimizers"]
  rows = _page_table("bert_comparison.md", "\n## Full\n")
  assert {PAGE_NAMES[row["optimizer"]] for row in rows} == set(optimizers)
  for row in rows:
    record = optimizers[PAGE_NAMES[row["optimizer"]]]
    assert row["held-out MLM loss"] == _seed_stats(record["eval_loss"]), row["optimizer"]
    accuracy = record["eval_accuracy"]
    assert row["held-out MLM accuracy"] == f"{accuracy['mean']:.3f} ± {accuracy['std']:.3f}", row["optimizer"]
    assert float(row["best lr"]) == record["best_learning_rate"], row["optimizer"]


def test_synthetic_page_full_table_equals_the_recorded_summary():
  strongly_convex = _json("docs", "synthetic_full", "summary.json")["strongly_convex"]
  later = _json("docs", "synthetic_full_later", "summary.json")["strongly_convex"]
  for problem, by_alpha in later.items():  # the methods run later; the ones both ran agree exactly
    for alpha, by_method in by_alpha.items():
      for method, settings in by_method.items():
        first = strongly_convex[problem][alpha].setdefault(method, settings)
        for setting, stats in settings.items():
          assert (first[setting]["median"], first[setting]["p90"]) == (stats["median"], stats["p90"]), (
              problem, alpha, method, setting)
  columns = {"α = 1.1, κ = 2": ("quadratic_kappa2", "1.1"), "α = 1.1, κ = 100": ("quadratic_kappa100", "1.1"),
             "α = 2, κ = 2": ("quadratic_kappa2", "2"), "α = 2, κ = 100": ("quadratic_kappa100", "2")}
  rows = _page_table("synthetic.md", "\n## Every method at α = 1.1 and α = 2\n")
  assert sorted(PAGE_NAMES[row["method"]] for row in rows) == sorted(strongly_convex["quadratic_kappa2"]["1.1"])
  for row in rows:
    for column, (problem, alpha) in columns.items():
      p90 = strongly_convex[problem][alpha][PAGE_NAMES[row["method"]]]["tuned"]["p90"]
      assert row[column] == f"{p90:.3g}", (row["method"], column)


def test_synthetic_page_quick_table_equals_the_quick_summary():
  p90 = _json("docs", "results", "quick_summary.json")["synthetic_p90"]
  columns = {"α = 1.1, κ = 2": "kappa2_alpha1.1", "α = 1.1, κ = 100": "kappa100_alpha1.1",
             "α = 2, κ = 2": "kappa2_alpha2", "α = 2, κ = 100": "kappa100_alpha2"}
  section = _read("docs", "results", "synthetic.md").split("\nQuick ([quick_summary.json]", 1)[1]
  lines = [line for line in section.split("\n\n", 2)[1].splitlines() if line.startswith("|")]
  header = [cell.strip() for cell in lines[0].strip("|").split("|")]
  rows = [dict(zip(header, (cell.strip() for cell in line.strip("|").split("|")))) for line in lines[2:]]
  assert sorted(PAGE_NAMES[row["method"]] for row in rows) == sorted(p90)
  for row in rows:
    for column, key in columns.items():
      assert float(row[column]) == p90[PAGE_NAMES[row["method"]]][key], (row["method"], column)


def _agrees(recorded: float, measured: float) -> bool:
  """`recorded` is `measured` rounded to the decimals it was written with."""
  text = repr(float(recorded))
  decimals = len(text.split(".")[1]) if "." in text and "e" not in text else 0
  return abs(recorded - measured) <= 0.5 * 10.0 ** -decimals + 1e-12


def test_quick_summary_equals_the_recorded_quick_run():
  """quick_summary.json (the numbers the README quotes) against results.json of a recorded quick run on an
  AVX-512 CPU: every verdict, the BERT and synthetic numbers equal, except where `rerun_on_avx512` lists what
  that CPU gave (SGD's loss by token frequency, ResNet's noise numbers)."""
  quick = _json("docs", "results", "quick_summary.json")
  run = _json("docs", "results", "quick_avx512", "results.json")
  assert run["mode"] == "quick"
  assert {q.lower(): v["verdict"] for q, v in run["research_questions"].items() if q != "RQ6"} == {
      q: quick[q]["verdict"] for q in ("rq1", "rq2", "rq3", "rq4", "rq5", "rq7", "rq8")}

  optimizers = run["parts"]["bert"]["summary"]["optimizers"]
  moved = quick["rerun_on_avx512"]["bert_comparison"]  # what the AVX-512 run gave where it differs
  checked = 0
  for name, record in quick["bert_comparison"].items():
    record = {**record, **moved.get(name, {})}
    measured = optimizers[name]
    if "best_learning_rate" in record:
      assert record["best_learning_rate"] == measured["best_learning_rate"], name
    for metric in ("eval_loss", "eval_accuracy"):
      for stat in record.get(metric, {}):
        assert _agrees(record[metric][stat], measured[metric][stat]), (name, metric, stat)
        checked += 1
    for bucket, (rec, meas) in enumerate(zip(record["eval_loss_by_frequency"], measured["eval_loss_by_frequency"])):
      for stat in rec:
        assert _agrees(rec[stat], meas[stat]), (name, "eval_loss_by_frequency", bucket, stat)
        checked += 1
  assert checked > 50

  noise = run["parts"]["noise"]["summary"]["rq1"]
  rq1 = quick["rq1"]
  assert _agrees(rq1["tail_index_mohammadi"]["bert"], noise["bert"]["alpha_mohammadi_pooled_final"])
  assert _agrees(rq1["tail_index_hill"]["bert"], noise["bert"]["alpha_hill_pooled_final"])
  assert _agrees(rq1["sgd_minus_adam_percent"]["bert"], 100 * noise["bert"]["sgd_minus_adam_relative"])
  resnet = quick["rerun_on_avx512"]["rq1_resnet"]
  assert _agrees(resnet["tail_index_mohammadi"], noise["resnet"]["alpha_mohammadi_pooled_final"])
  assert _agrees(resnet["tail_index_hill"], noise["resnet"]["alpha_hill_pooled_final"])
  assert _agrees(resnet["sgd_minus_adam_percent"], 100 * noise["resnet"]["sgd_minus_adam_relative"])

  synthetic = run["parts"]["synthetic"]["summary"]
  for problem, p90 in quick["rq2"]["p90"].items():
    for method, value in p90.items():
      assert _agrees(value, synthetic["rq2"][problem][f"{method}_tuned_p90"]), (problem, method)
  for method, value in quick["rq3"]["slope_vs_d"].items():
    assert _agrees(value, synthetic["rq3"][f"{quick['rq3']['alpha']:g}"][f"{method}_tuned_slope_vs_d"]), method
  problems = {"kappa2": "quadratic_kappa2", "kappa100": "quadratic_kappa100"}
  for method, values in quick["synthetic_p90"].items():
    for key, value in values.items():
      problem, alpha = key.split("_alpha")
      measured = synthetic["strongly_convex"][problems[problem]][alpha][method]["tuned"]["p90"]
      assert value == float(f"{measured:.3g}"), (method, key)
  for alpha, value in quick["rq2"]["gclip_slopes"].items():
    assert _agrees(value, synthetic["rates"]["by_alpha"][alpha]["gclip_theory_slope"]), alpha
