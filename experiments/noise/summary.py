"""The noise study's written outputs besides the figures: the rows of results.csv and summary.md."""
from __future__ import annotations

from experiments.common import verdicts
from experiments.common.results import format_fixed
from experiments.noise import verdict
from experiments.noise import workloads

CSV_COLUMNS = ("model", "part", "step", "batch_size", "group", "optimizer", "learning_rate", "seed", "metric",
               "value")


def summary_markdown(results: dict) -> str:
  """The Markdown report of a finished study (tables of the key numbers and the RQ1 verdict)."""
  lines = ["# Gradient noise and SGD vs Adam: BERT vs ResNet (the paper's RQ1)", "",
           f"Mode: {results['mode']}, wall time {results['wall_s']:.0f} s. Tail index alpha: 2 is "
           "Gaussian-like, smaller is heavier-tailed (Mohammadi: block sums; Hill: k = 2% of the pooled, "
           "per-coordinate-standardised noise coordinates).", ""]
  for model in workloads.MODELS:
    if model not in results:
      continue
    result = results[model]
    lines += [f"## {model}: {result['description']}", "",
              "| step | batch | train loss | held-out loss | alpha Mohammadi | alpha Hill | Hill on norms | "
              "max/median norm | variance growth |", "|---|---|---|---|---|---|---|---|---|"]
    for point in result["noise"]["points"]:
      for batch_size, entry in point["batch_sizes"].items():
        lines.append(
            f"| {point['step']} | {batch_size} | {format_fixed(point['train_loss'], 3)} | "
            f"{format_fixed(point['eval_loss'], 3)} | "
            f"{format_fixed(entry['pooled']['alpha_mohammadi'])} | {format_fixed(entry['pooled']['alpha_hill'])} | "
            f"{format_fixed(entry['alpha_hill_norms'])} | {format_fixed(entry['noise_norm_max_over_median'])} | "
            f"{format_fixed(entry['variance_growth'])} |")
    last = result["noise"]["points"][-1]["batch_sizes"][str(result["noise"]["main_batch_size"])]
    lines += ["", f"Per parameter group at step {result['noise']['points'][-1]['step']} "
              f"(batch {result['noise']['main_batch_size']}):", "",
              "| group | coordinates | alpha Mohammadi | alpha Hill |", "|---|---|---|---|"]
    for group, stats in last["groups"].items():
      lines.append(f"| {group} | {stats['coordinates']} | {format_fixed(stats['alpha_mohammadi'])} | "
                   f"{format_fixed(stats['alpha_hill'])} |")
    sweep = result["sweep"]
    lines += ["", f"Optimizers ({results['config']['sweep_steps']} steps, {results['config']['sweep_seeds']} "
              "seeds; best learning rate by mean held-out loss, the grid extended past an end while the best "
              "sits there):", "",
              "| optimizer | best lr | held-out loss (mean ± std) | median | accuracy (mean ± std) | "
              "learning rates run | best lr at an edge of them |", "|---|---|---|---|---|---|---|"]
    for name in ("sgd", "adam"):
      stats = sweep[name]
      lines.append(f"| {name} | {stats['best_learning_rate']:g} | {format_fixed(stats['eval_loss_mean'], 3)} ± "
                   f"{format_fixed(stats['eval_loss_std'], 3)} | {format_fixed(stats['eval_loss_median'], 3)} | "
                   f"{format_fixed(stats['eval_accuracy_mean'], 3)} ± "
                   f"{format_fixed(stats['eval_accuracy_std'], 3)} | "
                   f"{', '.join(f'{float(lr):g}' for lr in stats['grid'])} | {stats['best_at_grid_edge']} |")
    lines += ["", f"SGD - Adam held-out loss: {format_fixed(sweep['gap_eval_loss'], 3)} "
              f"({format_fixed(100 * sweep['gap_relative'], 1)}% of Adam's; "
              f"{format_fixed(sweep['gap_in_seed_std'], 1)} seed standard deviations); of the seed medians: "
              f"{format_fixed(sweep['gap_eval_loss_median'], 3)}.", ""]
  rq1 = results["rq1"]
  if "bert" in rq1 and "resnet" in rq1:
    assessed = verdict.assess_rq1(rq1)  # the rule report.md applies too (experiments/noise/verdict.py)
    lines += ["## RQ1 verdict", "", "| measure | ours | verdict |", "|---|---|---|"]
    lines += [f"| {r['measure']} | {r['ours']} | {r['verdict']} |" for r in assessed["rows"]]
    lines += ["", f"Heaviest parameter group: BERT {rq1['bert']['heaviest_group_final']}, ResNet "
              f"{rq1['resnet']['heaviest_group_final']}.", "",
              f"Rule: {assessed['overall_rule']}.", "",
              f"**Verdict: {assessed['verdict']}.**{verdicts.edges_sentence(assessed.get('edges'))}", ""]
  lines += ["## Caveats", "",
            "- Small models and minutes of training, far from the paper's BERT-base and ResNet-50/ImageNet.",
            "- Both estimators assume a stable law; finite-variance heavy-ish noise (Student-t) also gives "
            "alpha < 2, and per-coordinate standardisation by the median makes sparse coordinates (rare "
            "tokens) look heavy-tailed: that is a property of their noise, not of a stable law.",
            "- Learning rates are chosen on the held-out set that scores them; a best learning rate still at an "
            f"edge of what ran (after up to {results['config'].get('sweep_max_extensions', 0)} extensions each "
            "way) may have its optimum beyond.", ""]
  return "\n".join(lines)
