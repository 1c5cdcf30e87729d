"""The BERT optimizer comparison (RQ4: the paper's ACClip against Adam; RQ5: the clipping methods that followed it
against the paper's rules and Adam(W)): a learning-rate sweep per optimizer, seeds, fine-tuning.

Protocol, identical for every optimizer (only the optimizer and its peak learning rate change):

1. Pretrain the same BERT config on the same corpus, data order, number of steps and warm-up, with seed
   ``seeds[0]`` at learning rates of the optimizer's grid (`sweep_learning_rates`: the middle three, then
   one grid step further out while the best sits at an end of what ran, past the grid's ends by up to
   `sweep.MAX_EXTENSIONS` points; a best still at an end is marked `best_at_edge`). The best learning rate is the one
   with the lowest final MLM loss on the validation split; a run whose loss is not finite, or above ln(vocab
   size) (worse than a uniform prediction, the loss at initialisation), counts as diverged and is never
   chosen.
2. Rerun the best learning rate with the other seeds (the sweep's run is the first seed), and report the
   final held-out MLM loss and accuracy as mean, standard deviation (ddof=1) and range over the seeds.
3. With SQuAD v1.1 files, fine-tune the Adam- and ACClip-pretrained checkpoints (best lr, first seed) with
   Adam and with ACClip, and report exact match and F1.

Learning-rate grids depend on the update's scale: the paper's ACClip moves by the clipped momentum, whose
size is the gradient's (SGD-like, like SGD and GClip), while Adam, AdamW, LAMB and the ports' ACClip
variant divide by a second-moment estimate, so their steps are about the learning rate itself.
"""
from __future__ import annotations

import dataclasses
import math
import os
from collections.abc import Mapping, Sequence
from typing import Any

import ml_collections
import numpy as np

from experiments.common import optimizers as optimizers_lib
from experiments.common import results
from experiments.common import study_cli
from experiments.common import workdir_lock
from experiments.comparison import finetune
from experiments.comparison import plots
from experiments.comparison import summary as summary_lib
from experiments.comparison.runs import (  # pylint: disable=unused-import (the study's names, used by others)
    RUN_RESULT_FILENAME, TEST_ACCURACY, TEST_LOSS, TRAIN_SET_ACCURACY, TRAIN_SET_LOSS, VALIDATION_ACCURACY,
    VALIDATION_LOSS, pretrain, run_config, run_workdir)
from experiments.comparison.sweep import (MAX_EXTENSIONS, at_edge, best_learning_rate, is_diverged,
                                         sweep_learning_rates)
from experiments.bert import input_pipeline

PYTHON_DOC_SOURCES = "/usr/share/doc/python3.11/html/_sources"


def check_corpus(corpus: str) -> None:
  """FileNotFoundError saying how to install the full mode's corpus when it is missing (no fallback)."""
  if corpus == PYTHON_DOC_SOURCES and not os.path.isdir(corpus):
    raise FileNotFoundError(f"The full BERT comparison trains on {corpus}, which is missing: install it with "
                            "`apt-get install python3.11-doc` (or run the quick mode, which uses pydoc_data.topics).")


@dataclasses.dataclass(frozen=True)
class ComparisonSettings:
  """The comparison a config describes (configs/quick.py, configs/full.py); every optimizer gets the same.

  Attributes:
    mode: the config's name ("quick", "full" or a test's).
    config_name: the BERT config module under experiments/bert/configs/ that every run starts from.
    overrides: config fields set for every run (steps, warm-up, batch, sequence length, model size, ...).
    corpus: the pretraining text (a `config.corpus` value of the BERT driver).
    learning_rates: optimizer name -> peak learning rates swept (the grid of its registry learning-rate
      scale, or its exception); the optimizers compared are its keys, in the config's order.
    optimizer_fields: per-optimizer config fields on top of `overrides`.
    seeds: the sweep runs with seeds[0]; the best learning rate is rerun with the others.
    finetune_optimizers: the SQuAD fine-tuning pairs are made of these.
    finetune_overrides: SQuAD config fields for every fine-tuning run.
    finetune_learning_rate_scale: a fine-tuning run's peak learning rate is its optimizer's best
      pre-training learning rate times this (BERT: 1e-4 pre-training, 3e-5 fine-tuning).
    expected_time: how long the config takes, in words (from the config).
    checkpoint_runs: every run keeps checkpoints, so a preempted run resumes (fine-tuning keeps those of the
      runs it starts from in any case).
    selection_metric: the final metric a sweep minimises (the validation loss; an optimisation study the
      training-set loss).
    corpus_sha256: the corpus's `input_pipeline.documents_sha256` as the study loaded it ("" before it
      did): a finished run recorded on another corpus is not reused (`runs.pretrain`).
  """
  mode: str
  config_name: str
  overrides: dict[str, Any]
  corpus: str
  learning_rates: dict[str, tuple[float, ...]]
  optimizer_fields: dict[str, dict[str, Any]]
  seeds: tuple[int, ...]
  finetune_optimizers: tuple[str, ...]
  finetune_overrides: dict[str, Any]
  finetune_learning_rate_scale: float
  expected_time: str
  checkpoint_runs: bool = False
  selection_metric: str = VALIDATION_LOSS
  corpus_sha256: str = ""

  @classmethod
  def from_config(cls, config: Mapping[str, Any]) -> "ComparisonSettings":
    """The settings of a comparison config (a ConfigDict, or the dict a results.json recorded).

    Raises:
      ValueError: an optimizer the registry does not have, no optimizer, or no seed.
    """
    config = ml_collections.ConfigDict(dict(config)).to_dict()
    names = list(config["optimizers"])
    unknown = [name for name in names if name not in optimizers_lib.REGISTRY]
    if unknown or not names:
      raise ValueError(f"optimizers={names!r}: give one or more of {', '.join(optimizers_lib.REGISTRY)}")
    if not config["seeds"]:
      raise ValueError("seeds=(): the comparison needs at least one seed")
    exceptions = config["learning_rate_grid_exceptions"]
    grids = {name: tuple(exceptions[name] if name in exceptions else
                         config["learning_rate_grids"][optimizers_lib.REGISTRY[name].learning_rate_scale])
             for name in dict.fromkeys(names)}
    return cls(mode=config["mode"], config_name=config["bert_config"], overrides=dict(config["overrides"]),
               corpus=config["corpus"], learning_rates=grids,
               optimizer_fields={k: dict(v) for k, v in config["optimizer_fields"].items()},
               seeds=tuple(config["seeds"]), finetune_optimizers=tuple(config["finetune_optimizers"]),
               finetune_overrides=dict(config["finetune_overrides"]),
               finetune_learning_rate_scale=float(config["finetune_learning_rate_scale"]),
               expected_time=config["expected_time"],
               checkpoint_runs=bool(config.get("checkpoint_runs", False)),
               selection_metric=config.get("selection_metric", VALIDATION_LOSS))

  @property
  def description(self) -> str:
    """The setup in words, made from the config every run starts from (see `setup_text`)."""
    return setup_text(self)


def merged(base: Mapping[str, Any], changes: Mapping[str, Any]) -> dict[str, Any]:
  """`base` with `changes` over it, nested dicts merged key by key (a study's run fields over the comparison's)."""
  out = dict(base)
  for key, value in changes.items():
    out[key] = merged(out[key], value) if isinstance(value, Mapping) and isinstance(out.get(key), Mapping) else value
  return out


def study_comparison(name: str, optimizers: Sequence[str], overrides: Mapping[str, Any],
                     seeds: Sequence[int] = (), **changes: Any) -> ComparisonSettings:
  """The comparison config `name` (configs/<name>.py) as a study runs it: its `optimizers`, its run fields
  with the study's `overrides` merged over them, its seeds or the study's `seeds` when given, and `changes`
  to other settings (e.g. `selection_metric`)."""
  config = study_cli.study_config("experiments.comparison", name)
  config.optimizers = tuple(optimizers)
  if seeds:
    config.seeds = tuple(seeds)
  compared = ComparisonSettings.from_config(config)
  return dataclasses.replace(compared, overrides=merged(compared.overrides, overrides), **changes)


def with_flags(config: ml_collections.ConfigDict, weight_decay: float | None = None,
               optimizers: Sequence[str] | None = None) -> ml_collections.ConfigDict:
  """A copy of a comparison config with the command line's --weight-decay and --optimizers applied.

  Args:
    config: a comparison config.
    weight_decay: the weight decay of every optimizer; None: the BERT config's (0.01). Decoupled decay
      shrinks the weights by lr x weight decay per step, so one value favours the optimizers whose
      learning rates are small; 0 takes that confounder out of the comparison.
    optimizers: registry names to run, in this order; None: the config's.

  Raises:
    ValueError: a negative or non-finite weight decay, an unknown optimizer, or no optimizer.
  """
  config = ml_collections.ConfigDict(config.to_dict())
  if weight_decay is not None:
    if not (math.isfinite(weight_decay) and weight_decay >= 0):
      raise ValueError(f"weight_decay must be a finite number >= 0, got {weight_decay!r}")
    config.overrides.weight_decay = float(weight_decay)
  if optimizers is not None:
    config.optimizers = tuple(dict.fromkeys(optimizers))
  ComparisonSettings.from_config(config)  # checks the names
  return config


def setup_text(settings: ComparisonSettings, with_decay: bool = True, batch_text: str | None = None) -> str:
  """The comparison's setup in words, every number read from the config its runs start from (with_decay:
  ending with the weight decay every optimizer shares; batch_text: the batch size in words, when the runs do
  not share the config's)."""
  config = run_config(settings, "adam", 1.0, settings.seeds[0])
  model = config.model
  sizes = sorted({len(grid) for grid in settings.learning_rates.values()})
  grid_text = (f"a grid of {'/'.join(map(str, sizes))} learning rates per optimizer, swept from its middle 3 "
               f"outwards while the best sits at an end, past the grid's ends by up to {MAX_EXTENSIONS} "
               "more each way")
  return (f"BERT with {model.num_layers} layers, hidden {model.hidden_size}, {model.num_heads} heads, "
          f"intermediate {model.intermediate_size}, a {config.vocab_size}-token WordPiece vocabulary; "
          f"{config.num_train_steps} steps of {batch_text or config.batch_size} x {config.max_seq_len} tokens (warm-up "
          f"{config.warmup_steps}, {config.learning_rate_decay} decay) on "
          f"{input_pipeline.corpus_name(config.corpus)} ({config.eval_fraction:.0%} of the documents held "
          f"out for the reported numbers and {config.validation_fraction:.0%} for choosing the learning "
          f"rate, at most {config.max_eval_sequences} sequences each); {grid_text}; seeds "
          f"{', '.join(map(str, settings.seeds))}"
          + (f"; weight decay {config.weight_decay:g} for every optimizer" if with_decay else ""))


def optimizer_settings_text(settings: ComparisonSettings) -> str:
  """The optimizer hyperparameters every run shares, and the per-optimizer exceptions, in words."""
  base = run_config(settings, "adamw", 1.0, settings.seeds[0])
  exceptions = "; ".join(f"{name}: " + ", ".join(f"{k} {v}" for k, v in fields.items())
                         for name, fields in settings.optimizer_fields.items())
  return (f"Optimizer settings: {base.learning_rate_decay} decay after warm-up, weight decay "
          f"{base.weight_decay} ({base.weight_decay_mode}, off biases and LayerNorm), b1 {base.b1 if base.b1 is not None else 'default (0.9)'}, b2 {base.b2}, "
          f"eps {base.eps}, SGD/GClip momentum {base.momentum}, GClip threshold {base.clip_threshold}, "
          f"ACClip alpha {base.alpha if base.alpha is not None else 'default (1)'}, pre-clipping "
          f"{base.grad_clip_norm or 'none'}; exceptions: {exceptions}. Decoupled decay shrinks the weights "
          "by lr x weight decay per step, so at the SGD-scale learning rates of SGD, GClip and the paper's "
          "ACClip (0.1-1) it is 10-1000 times stronger than at Adam-scale ones (0.001-0.01).")


def _shared_vocabulary(settings: ComparisonSettings, vocab_dir: str) -> tuple[str, dict[str, Any]]:
  """The WordPiece vocabulary every run uses, trained once on the training documents (the driver's split),
  and what the corpus held: its name, documents per split, training tokens and fingerprint ("sha256")."""
  config = run_config(settings, "adam", 1.0, settings.seeds[0])
  check_corpus(config.corpus)
  documents = input_pipeline.load_documents(config.corpus, max_documents=config.get("max_documents"))
  splits = input_pipeline.split_documents(documents, config.eval_fraction, config.validation_fraction)
  os.makedirs(vocab_dir, exist_ok=True)
  vocab_path = input_pipeline.prepare_vocab(config, vocab_dir, splits[0])
  tokenizer = input_pipeline.load_tokenizer(vocab_path, config.lowercase)
  train_tokens = sum(len(e.ids) for e in tokenizer.encode_batch(splits[0], add_special_tokens=False))
  corpus = {"corpus": config.corpus, "corpus_name": input_pipeline.corpus_name(config.corpus),
            "documents": dict(zip(("train", "eval", "validation"), map(len, splits))),
            "train_tokens": train_tokens, "sha256": input_pipeline.documents_sha256(documents)}
  return vocab_path, corpus


def with_shared_vocabulary(settings: ComparisonSettings, out_dir: str) -> tuple[ComparisonSettings, dict[str, Any]]:
  """(`settings` whose runs use one vocabulary, trained once into `out_dir/vocabulary`, and keep checkpoints
  as `settings.checkpoint_runs` says; what the corpus held): how a study writing to `out_dir` runs its cells."""
  vocab_path, corpus = _shared_vocabulary(settings, os.path.join(out_dir, "vocabulary"))
  return dataclasses.replace(settings, overrides={**settings.overrides, "vocab_file": vocab_path,
                                                  "save_checkpoints": settings.checkpoint_runs},
                             corpus_sha256=corpus["sha256"]), corpus


def _num_buckets(seed_runs: Mapping[int, Mapping[str, Any]]) -> int:
  """How many frequency buckets the runs' held-out losses have (0 when none ran)."""
  finals = [run["final"] for run in seed_runs.values()]
  return min((sum(1 for key in final if key.startswith(f"{TEST_LOSS}_bucket")) for final in finals), default=0)


def _final(run: Mapping[str, Any], key: str) -> float | None:
  value = run["final"].get(key)
  return float(value) if value is not None else None


def _compare_optimizer(settings: ComparisonSettings, out_dir: str, optimizer: str,
                       grid: Sequence[float], keep_checkpoints: bool = False) -> dict[str, Any]:
  """The sweep over ``grid`` (`sweep_learning_rates`) with the first seed, then the best learning rate with
  the other seeds; keep_checkpoints: the first seed's runs must keep their final checkpoints."""
  first_seed, other_seeds = settings.seeds[0], settings.seeds[1:]
  runs = {}

  def validation_loss(lr: float) -> float | None:
    runs[lr] = pretrain(settings, out_dir, optimizer, lr, first_seed, keep_checkpoint=keep_checkpoints)
    return _final(runs[lr], settings.selection_metric)

  # A final loss above ln(vocab size) is worse than predicting every token uniformly: a blow-up, even if finite.
  divergence_loss = math.log(int(run_config(settings, optimizer, 1.0, first_seed).vocab_size))
  swept = sweep_learning_rates(grid, validation_loss, divergence_loss=divergence_loss)
  sweep = {lr: runs[lr] for lr in swept}
  best = best_learning_rate(swept, divergence_loss)
  seed_runs = {}
  if best is not None:
    seed_runs[first_seed] = sweep[best]
    for seed in other_seeds:
      seed_runs[seed] = pretrain(settings, out_dir, optimizer, best, seed)
  clip_threshold = float(run_config(settings, optimizer, 1.0, first_seed).clip_threshold)
  clip_fractions = []
  for run in seed_runs.values():
    _, values = plots.clip_series(plots.records(out_dir, run), optimizer, clip_threshold)
    if len(values):
      clip_fractions.append(float(np.mean(values)))
  return {
      "grid": sorted(float(lr) for lr in grid),
      "learning_rates": list(sweep),
      "sweep": [{"learning_rate": lr, "validation_loss": _final(run, VALIDATION_LOSS),
                 "validation_accuracy": _final(run, VALIDATION_ACCURACY), "workdir": run["workdir"],
                 "wall_s": run["wall_s"],
                 **({settings.selection_metric: _final(run, settings.selection_metric)}
                    if settings.selection_metric != VALIDATION_LOSS else {})} for lr, run in sweep.items()],
      "diverged_learning_rates": [lr for lr, loss in swept.items() if is_diverged(loss, divergence_loss)],
      "divergence_loss": divergence_loss,
      "best_learning_rate": best,
      # "low"/"high": the best is the smallest/largest learning rate run, even after the sweep's extensions.
      "best_at_edge": at_edge(swept, divergence_loss),
      "seeds": list(seed_runs),
      "eval_loss": results.seed_statistics([_final(r, TEST_LOSS) for r in seed_runs.values()]),
      "eval_accuracy": results.seed_statistics([_final(r, TEST_ACCURACY) for r in seed_runs.values()]),
      **({key: results.seed_statistics([_final(r, key) for r in seed_runs.values()])
          for key in (TRAIN_SET_LOSS, TRAIN_SET_ACCURACY)}
         if seed_runs and all(TRAIN_SET_LOSS in r["final"] for r in seed_runs.values()) else {}),
      "mean_clip_fraction": results.seed_statistics(clip_fractions) if clip_fractions else None,
      # Held-out MLM loss by the label's training-set frequency (bucket 0 the most frequent tokens).
      "eval_loss_by_frequency": [results.seed_statistics([_final(r, f"{TEST_LOSS}_bucket{b}")
                                                          for r in seed_runs.values()])
                                 for b in range(_num_buckets(seed_runs))],
      "frequency_buckets": next(iter(seed_runs.values()))["final"].get("frequency_buckets") if seed_runs else None,
      "clip_threshold": clip_threshold,
      "workdirs": {seed: run["workdir"] for seed, run in seed_runs.items()},
      "wall_s": sum(run["wall_s"] for run in list(sweep.values()) + list(seed_runs.values())[1:]),
  }


@workdir_lock.owns_output_folder
def run(out_dir: str, config: ml_collections.ConfigDict, squad_dir: str | None = None) -> dict[str, Any]:
  """Runs the comparison a config describes into ``out_dir``; returns its summary (also results.json there).

  Args:
    out_dir: the output folder; rerunning into it reuses every finished run.
    config: a comparison config (configs/quick.py, configs/full.py), recorded in the summary.
    squad_dir: a folder with SQuAD v1.1 train-v1.1.json and dev-v1.1.json; None skips fine-tuning.

  Returns:
    ``{'optimizers': {name: {'best_learning_rate', 'eval_loss': stats, 'eval_accuracy': stats, 'sweep',
    ...}}, 'finetune': {'status': 'ok' | 'skipped', ...}, 'figures': {...}, 'settings': {...}}`` where
    stats are `seed_statistics` over the seeds at the best learning rate.
  """
  settings = ComparisonSettings.from_config(config)
  os.makedirs(out_dir, exist_ok=True)
  # Checkpoints: for fine-tuning (it starts from a run's end) and, with checkpoint_runs, for a preempted run
  # to resume where SIGTERM stopped it. One shared vocabulary spares every run its WordPiece training.
  shared = dict(save_checkpoints=settings.checkpoint_runs or bool(squad_dir))
  shared["vocab_file"], corpus = _shared_vocabulary(settings, os.path.join(out_dir, "vocabulary"))
  settings = dataclasses.replace(settings, overrides={**settings.overrides, **shared}, corpus_sha256=corpus["sha256"])
  optimizers = {}
  for optimizer, grid in settings.learning_rates.items():
    optimizers[optimizer] = _compare_optimizer(
        settings, out_dir, optimizer, grid,
        keep_checkpoints=bool(squad_dir) and optimizer in settings.finetune_optimizers)
  num_train_steps = int(run_config(settings, "adam", 1.0, 0)["num_train_steps"])
  summary = {
      "mode": settings.mode,
      "config": config.to_dict(),
      "setup": setup_text(settings),
      "corpus": corpus,
      "data_description": [summary_lib.corpus_text(corpus)],
      "optimizer_settings": optimizer_settings_text(settings),
      "optimizers": optimizers,
      "figures": plots.plot_figures(out_dir, optimizers, num_train_steps),
      "finetune": (finetune.finetune(out_dir, settings, optimizers, squad_dir) if squad_dir else
                   {"status": "skipped", "reason": "no --squad-dir given"}),
      "settings": dataclasses.asdict(settings),
  }
  results.write_json(os.path.join(out_dir, "results.json"), summary)
  return summary
