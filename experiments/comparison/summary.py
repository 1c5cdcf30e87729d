"""The comparison's tables for the report (Markdown lines from a finished comparison's summary)."""
from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from experiments.common.results import format_number, format_seed_statistics, markdown_table


def _best_text(result: Mapping[str, Any]) -> str:
  """The best learning rate, flagged when it sits at an end of its grid (the optimum may lie outside)."""
  best = result["best_learning_rate"]
  if best is None:
    return "— (all diverged)"
  return f"{best:g}" + (" (grid edge)" if edge_of(result) else "")


def edge_of(result: Mapping[str, Any]) -> str | None:
  """"low"/"high" when an optimizer's best learning rate is the smallest/largest it ran (summaries from before
  the sweep's extensions did not record it: judged against the learning rates run)."""
  if "best_at_edge" in result:
    return result["best_at_edge"]
  best, swept = result.get("best_learning_rate"), result.get("learning_rates", ())
  if best is None or len(swept) < 2:
    return None
  return "low" if best == min(swept) else "high" if best == max(swept) else None


def report_lines(summary: Mapping[str, Any]) -> list[str]:
  """The comparison's tables for report.md: results per optimizer, the sweep, fine-tuning."""
  settings = summary["settings"]
  optimizers = summary["optimizers"]
  lines = [
      f"Setup: {summary.get('setup') or settings.get('description', '')}. Same model, corpus, data order (a function of the seed), steps "
      "and warm-up for every optimizer; the learning rate is chosen on the validation documents with seed "
      f"{settings['seeds'][0]}, then rerun with seeds {', '.join(map(str, settings['seeds'][1:]))}; the "
      "reported numbers come from other, held-out documents that chose nothing. "
      f"{summary['optimizer_settings']}",
      "",
      "Final held-out MLM loss and accuracy at the best learning rate: mean ± std (ddof=1) [min, max] over "
      "the seeds.",
      "",
      markdown_table(
          ["optimizer", "learning rates swept", "best lr", "held-out MLM loss", "held-out MLM accuracy",
           "mean clip fraction (ACClip, SPAM: coordinates; AdaGC: tensors; GClip, ZClip, AutoClip: steps)",
           "diverged lrs (loss nan or > ln V)"],
          [[name, ", ".join(f"{lr:g}" for lr in r["learning_rates"]), _best_text(r),
            format_seed_statistics(r["eval_loss"], with_range=True),
            format_seed_statistics(r["eval_accuracy"], with_range=True),
            format_seed_statistics(r["mean_clip_fraction"], with_range=True),
            ", ".join(f"{lr:g}" for lr in r["diverged_learning_rates"]) or "none"]
           for name, r in optimizers.items()]),
      "",
      "Learning-rate sweep: final validation MLM loss per peak learning rate (seed "
      f"{settings['seeds'][0]}; nan = diverged).",
      "",
      markdown_table(
          ["optimizer", "validation loss by learning rate"],
          [[name, ", ".join(f"{p['learning_rate']:g}: {format_number(p['validation_loss'])}"
                            for p in r["sweep"])] for name, r in optimizers.items()]),
      "",
  ]
  lines += frequency_lines(optimizers, summary.get("figures", {}).get("loss_by_token_frequency"))
  finetune = summary.get("finetune", {})
  if finetune.get("status") == "ok":
    lines += ["SQuAD v1.1 fine-tuning (dev set, one run each):", "",
              markdown_table(["pre-trained with / fine-tuned with", "exact match", "F1", "lr"],
                                    [[name, run.get("exact_match"), run.get("f1"),
                                      run.get("learning_rate", run.get("status"))]
                                     for name, run in finetune["runs"].items()]), ""]
  else:
    lines += [f"SQuAD v1.1 fine-tuning: skipped ({finetune.get('reason', 'not run')}).", ""]
  return lines


def frequency_lines(optimizers: Mapping[str, Mapping[str, Any]], figure: str | None = None) -> list[str]:
  """The held-out MLM loss by training-set token frequency (mean ± std over seeds), one row per optimizer;
  `figure`: the PNG that plots it against Adam, if one was drawn (it needs Adam's bucket losses and
  another optimizer's)."""
  with_buckets = {name: r for name, r in optimizers.items() if r.get("eval_loss_by_frequency")}
  if not with_buckets:
    return []
  buckets = next(r["frequency_buckets"] for r in with_buckets.values() if r.get("frequency_buckets"))
  headers = ["optimizer"] + [f"bucket {b}: {bucket['tokens']} tokens, {100 * bucket['train_share']:.0f}% of "
                             "training tokens" for b, bucket in enumerate(buckets)]
  return ["Held-out MLM loss by the masked token's training-set frequency (bucket 0 the most frequent "
          "tokens; each bucket about a quarter of the training tokens, the last also every token never seen "
          "in training): mean ± std over the seeds at the best learning rate. "
          + (f"Figure: {figure} (each optimizer minus Adam)." if figure else
             "No figure: it plots each other optimizer minus Adam, and needs Adam's bucket losses and another's."), "",
          markdown_table(headers, [[name] + [format_seed_statistics(s) for s in r["eval_loss_by_frequency"]]
                                   for name, r in with_buckets.items()]), ""]


def corpus_text(corpus: Mapping[str, Any]) -> str:
  """One sentence on the corpus a comparison loaded (from `_shared_vocabulary`'s record of it)."""
  documents = corpus["documents"]
  return (f"BERT corpus: {corpus['corpus_name']} (`corpus={corpus['corpus']}`): {sum(documents.values())} "
          f"documents, {documents['train']} for training ({corpus['train_tokens']:,} WordPiece tokens), "
          f"{documents['eval']} held out for the reported numbers, {documents['validation']} for choosing "
          "learning rates.")


def single_run_command(settings: Any, optimizer: str, learning_rate: float, seed: int,
                       workdir: str) -> str:
  """The `experiments.bert.main` command line that repeats one pre-training run of the comparison."""
  flags = []
  fields = dict(settings.overrides, corpus=settings.corpus)
  fields.update(optimizer=optimizer, learning_rate=learning_rate, seed=seed, **settings.optimizer_fields.get(optimizer, {}))
  for name, value in fields.items():
    if isinstance(value, Mapping):
      flags += [f"--config.{name}.{k}={v}" for k, v in value.items()]
    else:
      flags.append(f"--config.{name}={value}")
  return (f"python -m experiments.bert.main --config experiments/bert/configs/{settings.config_name}.py "
          f"--workdir {workdir} " + " ".join(flags))
