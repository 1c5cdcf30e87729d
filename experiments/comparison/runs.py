"""The comparison's runs: one BERT pre-training run per (optimizer, learning rate, seed), its config, its
workdir, and the reuse of a finished run (`pretrain`), which every study built on the comparison shares."""
from __future__ import annotations

import importlib
import json
import os
import time
from typing import Any

from experiments.bert import input_pipeline
from experiments.bert import train
from experiments.common import results
from experiments.common import training_loop

# Keys of `experiments.bert.train.train_and_evaluate`'s result: the sweep chooses on the validation documents,
# the reported numbers come from other, held-out ones; with static masking, the whole training set's loss.
VALIDATION_LOSS, VALIDATION_ACCURACY = "validation_loss", "validation_accuracy"
TEST_LOSS, TEST_ACCURACY = "eval_loss", "eval_accuracy"
TRAIN_SET_LOSS, TRAIN_SET_ACCURACY = "train_set_loss", "train_set_accuracy"


def run_config(settings: Any, optimizer: str, learning_rate: float, seed: int):
  """The BERT pretraining config of one run: the base config, the shared overrides, then the optimizer."""
  config_module = importlib.import_module(f"experiments.bert.configs.{settings.config_name}")
  config = config_module.get_config()
  fields = dict(settings.overrides, corpus=settings.corpus)
  fields.update(optimizer=optimizer, learning_rate=float(learning_rate), seed=int(seed))
  fields.update(settings.optimizer_fields.get(optimizer, {}))
  unknown = sorted(set(fields) - set(config.keys()))
  if unknown:
    raise ValueError(f"config {settings.config_name!r} has no field(s) {unknown}: the BERT config and "
                     "experiments.bert_comparison disagree")
  config.update(fields)
  return config


def _run_name(optimizer: str, learning_rate: float, seed: int) -> str:
  return f"{optimizer}/lr{learning_rate:g}_seed{seed}"


def run_workdir(out_dir: str, optimizer: str, learning_rate: float, seed: int) -> str:
  """The workdir of one pre-training run of a study writing to `out_dir`."""
  return os.path.join(out_dir, "runs", _run_name(optimizer, learning_rate, seed))


RUN_RESULT_FILENAME = "run_result.json"
# Config fields that change no number a run reports: a finished run is reused whatever they were.
# (save_checkpoints: runs before 2026-12 saved none when no SQuAD folder was given.)
NOT_COMPARED_FOR_REUSE = ("save_checkpoints",)
# The wall time of a run's segments before a preemption notice stopped it (removed when it finishes).
PREEMPTED_WALL_FILENAME = "preempted_wall_s.json"


def _differing_fields(recorded: dict[str, Any], config_json: dict[str, Any], config_name: str) -> list[str]:
  """The fields in which a finished run's recorded config differs from this run's.

  A field the recorded config lacks was added to the BERT config after that run; it differs only when
  this run sets it away from its default (the behaviour every run had before the field existed).
  """
  defaults = json.loads(importlib.import_module(
      f"experiments.bert.configs.{config_name}").get_config().to_json_best_effort())
  def differs(key):
    if key in NOT_COMPARED_FOR_REUSE:
      return False
    if key not in recorded and key in defaults:
      return config_json.get(key) != defaults[key]
    return recorded.get(key) != config_json.get(key)
  return sorted(key for key in set(recorded) | set(config_json) if differs(key))


def _check_corpus(settings: Any, final: dict[str, Any], where: str) -> None:
  """ValueError when a run's recorded corpus fingerprint is not the study's (both known)."""
  theirs, ours = final.get("corpus_sha256"), getattr(settings, "corpus_sha256", "")
  if theirs and ours and theirs != ours:
    raise ValueError(
        f"{where} was trained on another corpus than this study loaded (corpus_sha256 {theirs[:12]}... against "
        f"{ours[:12]}...): the corpus changed (another release of a package, an edited file); runs of two "
        "corpora are not one study. Give the study another --out, or restore the corpus it began with.")


def pretrain(settings: Any, out_dir: str, optimizer: str, learning_rate: float, seed: int, *,
             keep_checkpoint: bool = False) -> dict[str, Any]:
  """One pre-training run, or the result a finished run with the same config left in its workdir.

  A finished run writes `<workdir>/run_result.json` (its config, result and wall time), so rerunning an
  interrupted comparison into the same directory redoes only the runs that did not finish (an unfinished
  one resumes from its checkpoint). A finished run whose config differs in a field that changes a number
  (all but `NOT_COMPARED_FOR_REUSE`), or whose corpus fingerprint differs from `settings.corpus_sha256`
  (when both are known), is another experiment's: it is an error, never overwritten.
  The recorded wall time of a run that a preemption notice stopped and a rerun resumed is the sum of its
  segments (kept in `PREEMPTED_WALL_FILENAME` in between).
  keep_checkpoint: the run must leave its final checkpoint (SQuAD fine-tunes from it), so a finished run
  recorded with save_checkpoints off is redone.

  Raises:
    ValueError: the workdir holds a finished run of another setup, or the run just made read another corpus
      than the study (it changed while the study ran; no result is written).
  """
  name = _run_name(optimizer, learning_rate, seed)
  workdir = run_workdir(out_dir, optimizer, learning_rate, seed)
  config = run_config(settings, optimizer, learning_rate, seed)
  config_json = json.loads(config.to_json_best_effort())
  if config.vocab_file:  # by contents: a moved output directory still matches
    config_json["vocab_file"] = "sha256:" + input_pipeline.vocab_sha256(config.vocab_file)
  result_path = os.path.join(workdir, RUN_RESULT_FILENAME)
  if os.path.exists(result_path):
    saved = results.read_json(result_path, required=("config", "final", "wall_s"), remedy=(
        "Delete it to redo that run (its checkpoint, if any, resumes it), or restore it from a copy."))
    recorded = saved.get("config", {})
    differing = _differing_fields(recorded, config_json, settings.config_name)
    if differing:
      raise ValueError(f"{workdir} holds a finished run of another setup (it differs in {', '.join(differing)}); "
                       "give the comparison another --out, or move that run away")
    _check_corpus(settings, saved["final"], f"the finished run in {workdir}")
    if not (keep_checkpoint and recorded.get("save_checkpoints") is False):
      print(f"[comparison] {name}: finished before, reusing {result_path}", flush=True)
      return {"workdir": os.path.relpath(workdir, out_dir), "wall_s": saved["wall_s"],
              "final": saved["final"]}
    print(f"[comparison] {name}: finished before without its final checkpoint, which fine-tuning needs; "
          "redoing it", flush=True)
    os.remove(result_path)
  # A run stopped by a preemption notice resumes from its checkpoint: its wall time is the segments' sum.
  preempted_path = os.path.join(workdir, PREEMPTED_WALL_FILENAME)
  before_s = results.read_json(preempted_path, required=("wall_s",), remedy=(
      "Delete it: the run's recorded wall time then counts only the segments from here on."))["wall_s"] if (
          os.path.exists(preempted_path)) else 0.0
  start = time.perf_counter()
  try:
    final = dict(train.train_and_evaluate(config, workdir))
  except training_loop.Preempted as preempted:
    if preempted.checkpoint_step is None:  # the rerun starts over
      if os.path.exists(preempted_path):
        os.remove(preempted_path)
    else:
      results.write_json(preempted_path, {"wall_s": before_s + time.perf_counter() - start})
    raise
  wall_s = before_s + time.perf_counter() - start
  _check_corpus(settings, final, f"the run just finished in {workdir}")
  print(f"[comparison] {name}: " + ", ".join(
      f"{k} {final[k]:.4g}" for k in dict.fromkeys((VALIDATION_LOSS, TEST_LOSS, TEST_ACCURACY)) if k in final)
      + f" ({wall_s:.1f} s)", flush=True)
  results.write_json(result_path, {"config": config_json, "final": final, "wall_s": wall_s})
  if os.path.exists(preempted_path):
    os.remove(preempted_path)
  return {"workdir": os.path.relpath(workdir, out_dir), "wall_s": wall_s, "final": final}
