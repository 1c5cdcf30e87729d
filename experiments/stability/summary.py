"""The stability study's written outputs: summary.md, and the tables the reproduction's report shows (RQ6)."""
from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from experiments.common.results import format_fixed, markdown_table
from experiments.stability import verdict


def _intervention_text(run: Mapping[str, Any]) -> str:
  found = run.get("intervention")
  return f"{found['fraction']:.3g} {found['kind']}" if found else "—"


def run_rows(summary: Mapping[str, Any]) -> list[list[Any]]:
  """One row per point (run or recorded), methods in config order, learning rates ascending."""
  rows = []
  for name, points in summary["points"].items():
    for point in points:
      lr = point["learning_rate"]
      run = summary["runs"].get(f"{name}/lr{lr:g}")
      if run is None:
        rows.append([name, f"{lr:g}", point["status"], "recorded", "—", "—", format_fixed(point["validation_loss"], 3),
                     "—", "—", "—"])
        continue
      described = run["description"]
      best = (f"{format_fixed(described['best_eval_accuracy'], 3)} ({described['best_eval_accuracy_step']})"
              if "best_eval_accuracy" in described else "—")
      rows.append([name, f"{lr:g}", run["status"], "run", format_fixed(run["eval_loss"], 3),
                   format_fixed(run["eval_accuracy"], 3), format_fixed(run["validation_loss"], 3), run["spikes"],
                   _intervention_text(run), best])
  return rows


RUN_HEADERS = ["method", "peak lr", "status", "source", "held-out loss", "held-out accuracy", "validation loss",
               "loss spikes", "clipped / skipped", "best held-out accuracy (step)"]


def margin_rows(summary: Mapping[str, Any]) -> list[list[Any]]:
  """One row per method; a partial study's note names the learning rates of the method not run yet (its
  margin is then provisional)."""
  rows = []
  planned = summary.get("config", {}).get("learning_rates", {})
  at_edge = verdict.margins(summary["points"])  # recomputed: summaries before 2026-12 did not record at_edge
  best = verdict.best_learning_rates(summary["points"])
  for name, found in summary["margins"].items():
    pending = sorted(set(planned.get(name, ())) - {r["learning_rate"] for r in summary["runs"].values()
                                                   if r["method"] == name})
    notes = ([] if found["monotone"] else ["a smaller lr fails"]) + (
        ["trains at the largest lr it has: its margin may lie beyond"] if at_edge[name]["at_edge"] else []) + (
        [f"its lowest validation loss is at the smallest lr it has ({best[name]['best']:g}): its best lr may lie "
         "lower"] if best[name]["at_low_edge"] else []) + (
        [f"not run yet: {', '.join(f'{lr:g}' for lr in pending)}"] if pending else [])
    steps = verdict.margin_steps(summary, name)
    at_margin = summary["runs"].get(f"{name}/lr{found['margin']:g}") if found["margin"] is not None else None
    rows.append([name, f"{found['margin']:g}" if found["margin"] is not None else "none",
                 f"{found['first_failure']:g}" if found["first_failure"] is not None else "none in the grid",
                 "—" if name == verdict.BASELINE else (f"{steps:+d}" if steps is not None else "—"),
                 format_fixed(at_margin["eval_loss"], 3) if at_margin else "—",
                 at_margin["spikes"] if at_margin else "—", "; ".join(notes)])
  return rows


MARGIN_HEADERS = ["method", "margin (largest lr that trains)", "first lr that fails", "grid steps vs AdamW",
                  "held-out loss at the margin (run)", "spikes at the margin", "note"]


def collapse_lines(summary: Mapping[str, Any]) -> list[str]:
  """What the collapsed runs' metrics say, one line per collapsed or diverged run, made from the numbers."""
  majority = summary["baselines"]["eval"]["majority_accuracy"]
  lines = []
  for key, run in summary["runs"].items():
    if run["status"] == verdict.TRAINS:
      continue
    described = run["description"]
    if "best_eval_accuracy" not in described:
      shape = "no held-out evaluation was logged"
    elif described["learned"]:
      shape = (f"the held-out accuracy rose to {format_fixed(described['best_eval_accuracy'], 3)} (step "
               f"{described['best_eval_accuracy_step']}) and "
               + (f"was back at the majority accuracy by step {described['returned_step']}"
                  if described["returned_step"] is not None else "did not fall back to the majority accuracy"))
    else:
      shape = (f"the held-out accuracy never rose above the majority accuracy (best "
               f"{format_fixed(described['best_eval_accuracy'], 3)} at step {described['best_eval_accuracy_step']})")
    losses = (f"; training loss lowest {format_fixed(described['lowest_train_loss'], 2)} at step "
              f"{described['lowest_train_step']}, {format_fixed(described['final_train_loss'], 2)} at the end"
              if "lowest_train_loss" in described else "")
    norms = (f"; gradient norm largest {format_fixed(described['max_grad_norm'], 3)} at step "
             f"{described['max_grad_norm_step']}, median {format_fixed(described['grad_norm_first_tenth'], 3)} in the "
             f"first tenth of the run and {format_fixed(described['grad_norm_last_tenth'], 3)} in the last"
             if "max_grad_norm" in described else "")
    lines.append(f"- {key} ({run['status']}): {shape}{losses}{norms}; {run['spikes']} loss spike(s).")
  if not lines:
    return ["No run collapsed or diverged."]
  return [f"Majority accuracy (held-out) {format_fixed(majority, 3)}. Per collapsed or diverged run:", ""] + lines


DIAGNOSIS_HEADERS = ["run", "status", "context dependence (KL, nats)", "majority-token predictions",
                     "distinct predictions", "token spread, embeddings -> last layer", "attention logit bound (max)",
                     "smallest LayerNorm scale", "embedding top-direction share", "output-bias entropy"]


def diagnosis_rows(summary: Mapping[str, Any]) -> list[list[Any]]:
  """One row per run that kept its checkpoint (`diagnose`), from its final model."""
  rows = []
  for key, run in summary["runs"].items():
    found = run.get("diagnosis")
    if not found:
      continue
    spread = found["position_spread"]
    rows.append([key, run["status"], f"{found['context_dependence']:.3g}",
                 format_fixed(found["majority_prediction_share"], 3), found["distinct_predictions"],
                 f"{spread[0]:.3g} -> {spread[-1]:.3g}", f"{max(found['attention_logit_bound']):.3g}",
                 f"{min(found['layer_norm_scale'].values()):.3g}", format_fixed(found["word_embedding_top_share"], 3),
                 format_fixed(found["output_bias_entropy"], 2)])
  return rows


def report_lines(summary: Mapping[str, Any]) -> list[str]:
  """The tables the reproduction's report shows under RQ6."""
  held_out = summary["baselines"]["eval"]
  lines = [summary["setup"], "",
           f"A context-free predictor on the held-out masked tokens: majority accuracy "
           f"{format_fixed(held_out['majority_accuracy'], 3)} (one token everywhere), unigram loss "
           f"{format_fixed(held_out['unigram_loss'], 3)} (the training frequencies); divergence: a validation loss "
           f"above {format_fixed(summary['divergence_loss'], 3)}.", ""]
  if not summary.get("complete", True):
    lines += [f"**Partial: {summary['runs_done']} of {summary['runs_planned']} runs done.**", ""]
  lines += [markdown_table(MARGIN_HEADERS, margin_rows(summary)), "",
            markdown_table(RUN_HEADERS, run_rows(summary)), ""]
  lines += collapse_lines(summary) + [""]
  rows = diagnosis_rows(summary)
  if rows:
    lines += ["The final models (`experiments.stability.diagnose`: context dependence is the mean KL divergence "
              "between each masked position's prediction and the average prediction, 0 when the input does not "
              "matter; token spread is the mean distance of a token's hidden vector from the batch mean, relative "
              "to the mean's norm, 0 when every token is the same vector):", "",
              markdown_table(DIAGNOSIS_HEADERS, rows), ""]
  return lines


def summary_markdown(summary: Mapping[str, Any]) -> str:
  """summary.md of a (possibly partial) study."""
  assessed = verdict.assess_rq6(summary)
  lines = ["# The stability margin: how far each method stretches the stable learning rate (RQ6)", "",
           f"Mode: {summary['mode']}; {summary['runs_done']} of {summary['runs_planned']} runs done; wall time "
           f"of the runs {summary['run_wall_s'] / 60:.1f} min.", ""]
  lines += report_lines(summary)
  lines += ["## RQ6 verdict", "", markdown_table(["measure", "ours", "verdict"],
                                                  [[r["measure"], r["ours"], r["verdict"]] for r in assessed["rows"]]),
            "", f"Rule: {assessed['overall_rule']}.", "", f"**Verdict: {assessed['verdict']}.**", ""]
  if assessed["logit_cap"]["verdict"] is not None:
    lines += ["Added question: does capping the attention logits (QK-clip) stretch the stable learning rate where "
              f"gradient clipping does not? Rule: {assessed['logit_cap']['rule']}. "
              f"**Verdict: {assessed['logit_cap']['verdict']}.**", ""]
  lines += ["## Caveats", "",
            "- One seed per point: a margin one grid step from another's is not a difference.",
            "- Points from the recorded summary are judged on their final validation loss and accuracy only (no "
            "curves).",
            "- A run whose accuracy never rose above the majority accuracy counts as collapsed: at these sizes "
            "that cannot be told apart from a run that has not learned yet.",
            "- A tiny BERT and 2000 steps at most: the loss spikes of large-model training may not occur here.", ""]
  return "\n".join(lines)
