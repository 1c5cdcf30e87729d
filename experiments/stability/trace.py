"""The collapse through time: the first steps of one of the study's runs, with a checkpoint every few steps,
each diagnosed as the study diagnoses its final models (`diagnose`).

    python -m experiments.stability.trace --out DIR --method adamw --learning-rate 0.007 [--config full]
        [--until 400] [--every 20]

The run is the study's run of that method and peak learning rate (the study config's comparison, overrides
and seed: the same data order and learning-rate schedule), halted after ``--until`` steps
(``halt_after_steps``) with a checkpoint every ``--every`` steps, in ``DIR/runs/<method>/lr<lr>_seed<seed>``.
Rerunning the same command resumes a run stopped early. Written: ``DIR/trace.json`` and ``DIR/trace.md``,
one row per checkpoint: the learning rate, training loss, largest gradient norm and largest attention
logit since the previous checkpoint (from the run's metrics), the spread of the tokens' vectors at the embeddings and after the last
layer, the word embeddings' top-direction share, the attention-logit bound, the largest attention logit on the
held-out batches, the context dependence and the
number of distinct tokens predicted on the held-out batches.
"""
from __future__ import annotations

import argparse
import logging
import math
import os
import sys
from typing import Any

import ml_collections

from experiments.bert import train
from experiments.common import checkpoint
from experiments.common import metrics
from experiments.common import results
from experiments.common import study_cli
from experiments.common import workdir_lock
from experiments.comparison import study as comparison_study
from experiments.stability import diagnose
from experiments.stability import study

TRACE_FILENAME = "trace.json"


def check_arguments(config: ml_collections.ConfigDict, method: str, learning_rate: float, until: int,
                    every: int) -> study.StabilitySettings:
  """The study's settings; fails at once, before any data is read, on arguments that cannot make a trace.

  Raises:
    ValueError: a method the study does not run, a learning rate that is not a positive number, or `every`
      and `until` not 1 <= every <= until <= the run's steps.
  """
  settings = study.StabilitySettings.from_config(config)
  if method not in settings.methods:
    raise ValueError(f"--method {method!r} is not one of the study's methods ({', '.join(settings.methods)})")
  if not (math.isfinite(learning_rate) and learning_rate > 0):
    raise ValueError(f"--learning-rate {learning_rate} must be a positive number")
  steps = comparison_study.run_config(study.comparison_settings(settings), method, learning_rate,
                                      settings.seed).num_train_steps
  if not 1 <= every <= until <= steps:
    raise ValueError(f"--every {every} and --until {until} must satisfy 1 <= every <= until <= {steps} "
                     "(the run's steps)")
  return settings


def trace_config(config: ml_collections.ConfigDict, out_dir: str, method: str, learning_rate: float,
                 until: int, every: int) -> tuple[ml_collections.ConfigDict, Any]:
  """(the run's BERT config, the comparison settings) of a trace: the study's run, halted after `until`
  steps with a checkpoint every `every`; the vocabulary is trained into `out_dir/vocabulary` as the study's.

  Raises:
    ValueError: see `check_arguments`.
  """
  settings = check_arguments(config, method, learning_rate, until, every)
  compared, _ = study.prepared_comparison(settings, out_dir)
  run_config = comparison_study.run_config(compared, method, learning_rate, settings.seed)
  run_config.update(save_checkpoints=True, checkpoint_every_steps=every,
                    max_checkpoints_to_keep=until // every + 1, halt_after_steps=until, plot=False)
  return run_config, compared


def _since(records: list[dict[str, Any]], start: int, end: int, key: str) -> float | None:
  values = [r[key] for r in records if start < r["step"] <= end and r.get(key) is not None]
  return max(values) if values else None


@workdir_lock.owns_output_folder
def run(out_dir: str, config: ml_collections.ConfigDict, method: str, learning_rate: float, *, until: int,
        every: int) -> dict[str, Any]:
  """Trains (or resumes) the traced run into ``out_dir`` and diagnoses each of its checkpoints; returns the
  trace (also trace.json and trace.md there)."""
  os.makedirs(out_dir, exist_ok=True)
  run_config, compared = trace_config(config, out_dir, method, learning_rate, until, every)
  majority_token = study._cached_baselines(compared, out_dir)["eval"]["majority_token"]  # pylint: disable=protected-access
  workdir = comparison_study.run_workdir(out_dir, method, learning_rate, compared.seeds[0])
  checkpoints = os.path.join(workdir, "checkpoints")
  if checkpoint.newest_step(checkpoints) != until:
    train.train_and_evaluate(run_config, workdir)
  records = metrics.read_metrics(os.path.join(workdir, metrics.METRICS_FILENAME))
  by_step = {r["step"]: r for r in records if "train_loss" in r}
  batches, model_config = diagnose.held_out_batches(run_config, out_dir)
  points, previous = [], 0
  for step in sorted(int(name) for name in os.listdir(checkpoints) if name.isdigit()):
    _, params = diagnose.final_params(workdir, step)
    measured = diagnose.diagnose_params(params, model_config, batches, majority_token)
    logged = by_step.get(step, {})
    points.append({"step": step, "learning_rate": logged.get("learning_rate"),
                   "train_loss": logged.get("train_loss"), "grad_norm": logged.get("grad_norm"),
                   "max_grad_norm_since_previous": _since(records, previous, step, "grad_norm"),
                   "max_attention_logit_since_previous": _since(records, previous, step, "max_attention_logit"),
                   **measured})
    previous = step
  trace = {"method": method, "learning_rate": learning_rate, "until": until, "every": every,
           "workdir": os.path.relpath(workdir, out_dir), "majority_token": majority_token, "points": points}
  results.write_json(os.path.join(out_dir, TRACE_FILENAME), trace)
  results.write_text(os.path.join(out_dir, "trace.md"), "\n".join(markdown_lines(trace)) + "\n")
  return trace


def _number(value: Any, digits: int = 3) -> str:
  return "—" if value is None else f"{value:.{digits}g}"


def markdown_lines(trace: dict[str, Any]) -> list[str]:
  """trace.md: one row per checkpoint."""
  lines = [f"# Trace of {trace['method']} at peak learning rate {trace['learning_rate']:g}, steps 1 to "
           f"{trace['until']}", "",
           "Spread: the mean of ||h_i - h_mean|| / ||h_mean|| over the held-out tokens (near 0: one vector for "
           "every token); top share: the word embeddings' share in their top singular direction; context "
           "dependence: KL (nats) of each prediction to the mean prediction.", "",
           "| step | lr | train loss | largest grad norm since the previous row | spread at embeddings | "
           "spread after the last layer | embedding top share | attention-logit bound (largest layer) | "
           "largest attention logit since the previous row (training batches) | largest attention logit "
           "(held-out) | context dependence | distinct predictions | majority share |",
           "|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
  for p in trace["points"]:
    lines.append(f"| {p['step']} | {_number(p['learning_rate'])} | {_number(p['train_loss'], 4)} | "
                 f"{_number(p['max_grad_norm_since_previous'])} | {_number(p['position_spread'][0])} | "
                 f"{_number(p['position_spread'][-1])} | {_number(p['word_embedding_top_share'])} | "
                 f"{_number(max(p['attention_logit_bound']))} | "
                 f"{_number(p.get('max_attention_logit_since_previous'))} | {_number(p.get('max_attention_logit'))} | "
                 f"{_number(p['context_dependence'])} | "
                 f"{p['distinct_predictions']} | {_number(p['majority_prediction_share'])} |")
  return lines


def main(argv=None) -> int:
  logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
  parser = argparse.ArgumentParser(prog="python -m experiments.stability.trace", description=__doc__,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
  study_cli.add_config_arguments(parser, "experiments.stability")
  parser.add_argument("--method", required=True, help="one of the study config's methods")
  parser.add_argument("--learning-rate", type=float, required=True, help="the run's peak learning rate")
  parser.add_argument("--until", type=int, default=400, help="halt after this many steps (default 400)")
  parser.add_argument("--every", type=int, default=20, help="a checkpoint every this many steps (default 20)")
  args = parser.parse_args(sys.argv[1:] if argv is None else argv)
  config = study_cli.study_config("experiments.stability", study_cli.config_name(args))
  try:
    check_arguments(config, args.method, args.learning_rate, args.until, args.every)
  except ValueError as error:
    parser.error(str(error))
  trace = run(args.out, config, args.method, args.learning_rate, until=args.until, every=args.every)
  print(f"trace of {trace['method']} at {trace['learning_rate']:g}: {len(trace['points'])} checkpoints; "
        f"see {args.out}/trace.md")
  return 0


if __name__ == "__main__":
  sys.exit(main())
