"""The comparison's SQuAD v1.1 fine-tuning: each pair of pre-training and fine-tuning optimizers, from the
best-learning-rate encoders, with the official EM and F1."""
from __future__ import annotations

import os
import time
from collections.abc import Mapping
from typing import Any

from experiments.squad import train as squad
from experiments.squad.configs import default as squad_config


def squad_files(squad_dir: str) -> tuple[str, str]:
  """(train, dev) SQuAD v1.1 paths in ``squad_dir``; FileNotFoundError naming what is missing."""
  if not os.path.isdir(squad_dir):
    raise FileNotFoundError(f"--squad-dir {squad_dir!r} is not a folder")
  paths = tuple(os.path.join(squad_dir, name) for name in ("train-v1.1.json", "dev-v1.1.json"))
  missing = [p for p in paths if not os.path.isfile(p)]
  if missing:
    raise FileNotFoundError(f"--squad-dir {squad_dir!r} lacks {', '.join(map(os.path.basename, missing))}")
  return paths


def finetune(out_dir: str, settings: Any, optimizers: Mapping[str, Mapping[str, Any]],
              squad_dir: str) -> dict[str, Any]:
  """SQuAD v1.1 EM/F1 of each (pre-training optimizer, fine-tuning optimizer) pair of `settings.finetune_optimizers`.

  Each pre-trained encoder is the best-learning-rate run of the first seed; each fine-tuning optimizer runs at
  its best pre-training learning rate times ``settings.finetune_learning_rate_scale``.
  """
  train_file, dev_file = squad_files(squad_dir)
  runs = {}
  for pretrained in settings.finetune_optimizers:
    result = optimizers.get(pretrained)
    if not result or not result["seeds"]:
      runs[f"{pretrained}_pretrained"] = {"status": "no pre-trained encoder (not run, or every lr diverged)"}
      continue
    pretrained_workdir = os.path.join(out_dir, result["workdirs"][result["seeds"][0]])
    for finetuner in settings.finetune_optimizers:
      finetuner_best = optimizers.get(finetuner, {}).get("best_learning_rate")
      if finetuner_best is None:
        runs[f"{pretrained}_pretrained/{finetuner}_finetuned"] = {
            "status": f"no learning rate for {finetuner} (not run, or every lr diverged)"}
        continue
      config = squad_config.get_config()
      config.update(dict(settings.finetune_overrides), train_file=train_file, dev_file=dev_file,
                    optimizer=finetuner,
                    learning_rate=finetuner_best * settings.finetune_learning_rate_scale,
                    seed=settings.seeds[0])
      name = f"{pretrained}_pretrained/{finetuner}_finetuned"
      start = time.perf_counter()
      scores = squad.finetune(config, os.path.join(out_dir, "squad", name), pretrained_workdir)
      runs[name] = {"exact_match": float(scores["exact_match"]), "f1": float(scores["f1"]),
                    "train_questions_skipped": scores["train_questions_skipped"], "diverged": scores["diverged"],
                    "learning_rate": config.learning_rate, "wall_s": time.perf_counter() - start}
      print(f"[comparison] SQuAD {name}: EM {scores['exact_match']:.2f}, F1 {scores['f1']:.2f}", flush=True)
  return {"status": "ok", "train_file": train_file, "dev_file": dev_file, "runs": runs}
