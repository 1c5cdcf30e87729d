"""The BERT optimizer comparison (the paper's RQ4): a learning-rate sweep per optimizer, seeds, fine-tuning.

Protocol, identical for every optimizer (only the optimizer and its peak learning rate change):

1. Pretrain the same BERT config on the same corpus, data order, number of steps and warm-up, with seed
   ``seeds[0]`` at learning rates of the optimizer's grid (`sweep_learning_rates`: the middle three, then
   one grid step further out while the best sits at an end of what ran). The best learning rate is the one
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
import importlib
import json
import math
import os
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np

from experiments import report
from experiments.common import metrics

COMPARED_OPTIMIZERS = ("adam", "adamw", "acclip", "acclip_ports", "lamb", "sgd", "gclip")
FINETUNE_OPTIMIZERS = ("adam", "acclip")

# Peak learning rates, by the size of the update per coordinate (placed by short probe runs of the quick
# model so that each grid brackets its optimizer's best value):
# - Adam, AdamW and the ports' ACClip divide by a second-moment estimate: steps of about lr.
# - LAMB rescales each layer's Adam step to norm lr * ||w||; on the quick model its best lr sat a factor ~3
#   below Adam's.
# - SGD's optax momentum sums gradients (m = b1 m + g, size g / (1 - b1)); GClip is SGD with a global-norm
#   clip, so both move by lr * g / (1 - b1) at most.
# - The paper's ACClip averages them (m = b1 m + (1 - b1) g) and clips m to the running mean of |g|, biased
#   low early on: steps of at most lr * |g|, a factor ~10 below SGD's at the same lr.
_GRIDS = {
    "adam_like": {"quick": (3e-3, 1e-2, 3e-2), "full": (1e-3, 3e-3, 1e-2, 3e-2, 1e-1)},
    "lamb": {"quick": (3e-3, 1e-2, 3e-2), "full": (1e-3, 3e-3, 1e-2, 3e-2, 1e-1)},
    "sgd_like": {"quick": (0.1, 0.3, 1.0), "full": (0.03, 0.1, 0.3, 1.0, 3.0)},
    "acclip_paper": {"quick": (1.0, 3.0, 10.0), "full": (0.3, 1.0, 3.0, 10.0, 30.0)},
}
_FAMILY = {"adam": "adam_like", "adamw": "adam_like", "acclip_ports": "adam_like", "lamb": "lamb",
           "sgd": "sgd_like", "gclip": "sgd_like", "acclip": "acclip_paper"}


def learning_rate_grids(quick: bool) -> dict[str, tuple[float, ...]]:
  """The peak-learning-rate grid of every compared optimizer."""
  mode = "quick" if quick else "full"
  return {name: _GRIDS[_FAMILY[name]][mode] for name in COMPARED_OPTIMIZERS}


def is_diverged(loss: float | None, divergence_loss: float = math.inf) -> bool:
  """Whether a final loss means the run diverged: missing, not finite, or at least ``divergence_loss``."""
  return loss is None or not math.isfinite(loss) or loss >= divergence_loss


def best_learning_rate(final_losses: Mapping[float, float | None],
                       divergence_loss: float = math.inf) -> float | None:
  """The learning rate with the lowest final validation loss among the runs that did not diverge
  (`is_diverged`); None when every run diverged."""
  finite = {lr: loss for lr, loss in final_losses.items() if not is_diverged(loss, divergence_loss)}
  if not finite:
    return None
  return min(finite, key=lambda lr: (finite[lr], lr))


MIN_SWEEP_POINTS = 3


def sweep_learning_rates(grid: Sequence[float], validation_loss: Callable[[float], float | None],
                         min_points: int = MIN_SWEEP_POINTS,
                         divergence_loss: float = math.inf) -> dict[float, float | None]:
  """Validation losses of an adaptive sweep over ``grid``: learning rate -> ``validation_loss(lr)``.

  Runs the middle ``min_points`` values of the sorted grid, then, while the best learning rate
  (`best_learning_rate`) is the smallest or largest value run so far and the grid goes further that way,
  runs the next grid value beyond it; when every run so far diverged it goes down. It stops with the best
  inside the values run, or at an end of the grid (then the optimum may lie outside). A grid of at most
  ``min_points`` values is run whole, so every optimizer gets at least ``min(min_points, len(grid))`` runs
  and at most ``len(grid)``. ``divergence_loss`` is `best_learning_rate`'s.
  """
  grid = sorted(set(float(lr) for lr in grid))
  if not grid:
    raise ValueError("sweep_learning_rates: the learning-rate grid is empty")
  if min_points < 1:
    raise ValueError(f"sweep_learning_rates: min_points must be >= 1, got {min_points}")
  lo = max(0, (len(grid) - min_points) // 2)
  hi = min(len(grid), lo + min_points)  # runs grid[lo:hi]
  losses = {lr: validation_loss(lr) for lr in grid[lo:hi]}
  while True:
    best = best_learning_rate(losses, divergence_loss)
    if (best is None or best == grid[lo]) and lo > 0:
      lo -= 1
      losses[grid[lo]] = validation_loss(grid[lo])
    elif best is not None and best == grid[hi - 1] and hi < len(grid):
      hi += 1
      losses[grid[hi - 1]] = validation_loss(grid[hi - 1])
    else:
      return {lr: losses[lr] for lr in grid[lo:hi]}


def seed_statistics(values: Sequence[float]) -> dict[str, Any]:
  """Mean, sample standard deviation (ddof=1; None for one value), min, max and count of per-seed values.

  A non-finite value (a diverged seed) makes the mean and std non-finite on purpose: it must show.
  """
  values = [float(v) for v in values]
  if not values:
    return {"mean": None, "std": None, "min": None, "max": None, "n": 0, "values": []}
  array = np.asarray(values, dtype=np.float64)
  return {
      "mean": float(array.mean()),
      "std": float(array.std(ddof=1)) if len(values) > 1 else None,
      "min": float(array.min()),
      "max": float(array.max()),
      "n": len(values),
      "values": values,
  }


PYTHON_DOC_SOURCES = "/usr/share/doc/python3.11/html/_sources"

# Keys of `experiments.bert.train.train_and_evaluate`'s result and metrics.jsonl. The sweep chooses on the
# validation documents; the reported numbers come from other, held-out documents.
VALIDATION_LOSS, VALIDATION_ACCURACY = "validation_loss", "validation_accuracy"
TEST_LOSS, TEST_ACCURACY = "eval_loss", "eval_accuracy"
TRAIN_LOSS_CURVE, EVAL_LOSS_CURVE = "train_loss", "eval_loss"
CLIP_FRACTION, GLOBAL_NORM = "clip_fraction", "global_norm"  # acclip_optax.clip_stats keys


QUICK_CORPUS = "pydoc"  # the standard library's pydoc_data.topics: present on every machine
FULL_CORPUS = PYTHON_DOC_SOURCES  # about 12 MB of English prose from the Debian package python3.11-doc


def check_corpus(corpus: str) -> None:
  """FileNotFoundError saying how to install the full mode's corpus when it is missing (no fallback)."""
  if corpus == FULL_CORPUS and not os.path.isdir(corpus):
    raise FileNotFoundError(
        f"The full BERT comparison trains on {corpus}, which is missing: install it with "
        "`apt-get install python3.11-doc` (or run the quick mode, which uses pydoc_data.topics).")


def squad_files(squad_dir: str) -> tuple[str, str]:
  """(train, dev) SQuAD v1.1 paths in ``squad_dir``; FileNotFoundError naming what is missing."""
  if not os.path.isdir(squad_dir):
    raise FileNotFoundError(f"--squad-dir {squad_dir!r} is not a folder")
  paths = tuple(os.path.join(squad_dir, name) for name in ("train-v1.1.json", "dev-v1.1.json"))
  missing = [p for p in paths if not os.path.isfile(p)]
  if missing:
    raise FileNotFoundError(f"--squad-dir {squad_dir!r} lacks {', '.join(map(os.path.basename, missing))}")
  return paths


@dataclasses.dataclass(frozen=True)
class ComparisonSettings:
  """Sizes, grids and seeds of the comparison; every optimizer gets the same ones.

  Attributes:
    config_name: the BERT config module under experiments/bert/configs/ that every run starts from.
    overrides: config fields set for every run (steps, warm-up, batch, sequence length, model size, ...).
    corpus: the pretraining text (a `config.corpus` value of the BERT driver).
    learning_rates: optimizer name -> peak learning rates swept; the optimizers compared are its keys.
    seeds: the sweep runs with seeds[0]; the best learning rate is rerun with the others.
    finetune_overrides: SQuAD config fields for every fine-tuning run.
    finetune_learning_rate_scale: a fine-tuning run's peak learning rate is its optimizer's best
      pre-training learning rate times this (BERT: 1e-4 pre-training, 3e-5 fine-tuning).
  """
  config_name: str
  overrides: dict[str, Any]
  corpus: str
  learning_rates: dict[str, tuple[float, ...]]
  seeds: tuple[int, ...]
  finetune_overrides: dict[str, Any]
  finetune_learning_rate_scale: float

  @classmethod
  def from_dict(cls, stored: Mapping[str, Any]) -> "ComparisonSettings":
    """The settings as `dataclasses.asdict` wrote them to results.json (other keys are ignored)."""
    fields = {f.name for f in dataclasses.fields(cls)}
    values = {k: v for k, v in stored.items() if k in fields}
    values["learning_rates"] = {name: tuple(grid) for name, grid in values["learning_rates"].items()}
    values["seeds"] = tuple(values["seeds"])
    values.setdefault("corpus", QUICK_CORPUS)  # results.json files before the corpus was always recorded
    if values["corpus"] is None:
      values["corpus"] = QUICK_CORPUS
    return cls(**values)

  @property
  def description(self) -> str:
    """The setup in words, made from the config every run starts from (see `setup_text`)."""
    return setup_text(self)

  @classmethod
  def for_mode(cls, quick: bool, weight_decay: float | None = None,
               optimizers: Sequence[str] | None = None) -> "ComparisonSettings":
    """The quick (about 7 minutes on 2 CPU cores) or full comparison.

    Args:
      quick: the quick sizes.
      weight_decay: the weight decay of every optimizer; None: the BERT config's (0.01). Decoupled decay
        shrinks the weights by lr x weight decay per step, so one value favours the optimizers whose
        learning rates are small; 0 takes that confounder out of the comparison.
      optimizers: the subset of `COMPARED_OPTIMIZERS` to run, in this order; None: all of them.

    Raises:
      ValueError: a negative or non-finite weight decay, an unknown optimizer, or no optimizer.
    """
    if weight_decay is not None and not (math.isfinite(weight_decay) and weight_decay >= 0):
      raise ValueError(f"weight_decay must be a finite number >= 0, got {weight_decay!r}")
    grids = learning_rate_grids(quick)
    if optimizers is not None:
      unknown = [name for name in optimizers if name not in grids]
      if unknown or not optimizers:
        raise ValueError(f"optimizers={list(optimizers)!r}: give one or more of {', '.join(COMPARED_OPTIMIZERS)}")
      grids = {name: grids[name] for name in dict.fromkeys(optimizers)}
    if quick:
      overrides = dict(model=dict(hidden_size=64, intermediate_size=256), vocab_size=2048,
                       num_train_steps=200, warmup_steps=20, batch_size=16, max_seq_len=64,
                       eval_every_steps=100, log_every_steps=10, max_eval_sequences=128, eval_fraction=0.1,
                       validation_fraction=0.1)
      corpus = QUICK_CORPUS
    else:
      overrides = dict(num_train_steps=2000, warmup_steps=200, batch_size=32, max_seq_len=128,
                       eval_every_steps=250, log_every_steps=10, max_eval_sequences=1024, eval_fraction=0.05,
                       validation_fraction=0.05)
      corpus = FULL_CORPUS
    overrides.update(plot=False)
    if weight_decay is not None:
      overrides.update(weight_decay=float(weight_decay))
    return cls(config_name="tiny", overrides=overrides, corpus=corpus,
               learning_rates=grids, seeds=(0, 1, 2),
               finetune_overrides=dict(num_train_steps=200 if quick else 2000, max_seq_len=128,
                                       doc_stride=64, batch_size=16, warmup_fraction=0.1),
               finetune_learning_rate_scale=0.3)


def setup_text(settings: ComparisonSettings) -> str:
  """The comparison's setup in words, every number read from the config its runs start from."""
  from experiments.bert import input_pipeline  # pylint: disable=g-import-not-at-top
  config = _config(settings, "adam", 1.0, settings.seeds[0])
  model = config.model
  sizes = sorted({len(grid) for grid in settings.learning_rates.values()})
  grid_text = (f"{sizes[0]} learning rates per optimizer" if sizes == [3] else
               f"a grid of {'/'.join(map(str, sizes))} learning rates per optimizer, swept from its middle 3 "
               "outwards while the best sits at an end")
  return (f"BERT with {model.num_layers} layers, hidden {model.hidden_size}, {model.num_heads} heads, "
          f"intermediate {model.intermediate_size}, a {config.vocab_size}-token WordPiece vocabulary; "
          f"{config.num_train_steps} steps of {config.batch_size} x {config.max_seq_len} tokens (warm-up "
          f"{config.warmup_steps}, {config.learning_rate_decay} decay) on "
          f"{input_pipeline.corpus_name(config.corpus)} ({config.eval_fraction:.0%} of the documents held "
          f"out for the reported numbers and {config.validation_fraction:.0%} for choosing the learning "
          f"rate, at most {config.max_eval_sequences} sequences each); {grid_text}; seeds "
          f"{', '.join(map(str, settings.seeds))}; weight decay {config.weight_decay:g} for every optimizer")


# Per-optimizer fields on top of the BERT config (whose b2 = 0.999, eps = 1e-6 are Adam's BERT recipe).
# Adam as torch.optim.Adam and the paper's baseline: weight decay as L2 in the gradient (the factory's
# decoupled mode would make it AdamW). ACClip, both rules: b2 = 0.99 and eps = 1e-5, the defaults of the
# paper's Algorithm 1 as used by the public ports (shared/PAPER.md).
OPTIMIZER_FIELDS = {
    "adam": {"weight_decay_mode": "coupled"},
    "acclip": {"b2": 0.99, "eps": 1e-5},
    "acclip_ports": {"b2": 0.99, "eps": 1e-5},
}


def _config(settings: ComparisonSettings, optimizer: str, learning_rate: float, seed: int):
  """The BERT pretraining config of one run: the base config, the shared overrides, then the optimizer."""
  config_module = importlib.import_module(f"experiments.bert.configs.{settings.config_name}")
  config = config_module.get_config()
  fields = dict(settings.overrides, corpus=settings.corpus)
  fields.update(optimizer=optimizer, learning_rate=float(learning_rate), seed=int(seed))
  fields.update(OPTIMIZER_FIELDS.get(optimizer, {}))
  unknown = sorted(set(fields) - set(config.keys()))
  if unknown:
    raise ValueError(f"config {settings.config_name!r} has no field(s) {unknown}: the BERT config and "
                     "experiments.bert_comparison disagree")
  config.update(fields)
  return config


def _optimizer_settings_text(settings: ComparisonSettings) -> str:
  """The optimizer hyperparameters every run shares, and the per-optimizer exceptions, in words."""
  base = _config(settings, "adamw", 1.0, settings.seeds[0])
  exceptions = "; ".join(f"{name}: " + ", ".join(f"{k} {v}" for k, v in fields.items())
                         for name, fields in OPTIMIZER_FIELDS.items())
  return (f"Optimizer settings: {base.learning_rate_decay} decay after warm-up, weight decay "
          f"{base.weight_decay} ({base.weight_decay_mode}, off biases and LayerNorm), b1 {base.b1 if base.b1 is not None else 'default (0.9)'}, b2 {base.b2}, "
          f"eps {base.eps}, SGD/GClip momentum {base.momentum}, GClip threshold {base.clip_threshold}, "
          f"ACClip alpha {base.alpha if base.alpha is not None else 'default (1)'}, pre-clipping "
          f"{base.grad_clip_norm or 'none'}; exceptions: {exceptions}. Decoupled decay shrinks the weights "
          "by lr x weight decay per step, so at the SGD-scale learning rates of SGD, GClip and the paper's "
          "ACClip (0.1-1) it is 10-1000 times stronger than at Adam-scale ones (0.001-0.01).")


def _shared_vocabulary(settings: ComparisonSettings, vocab_dir: str) -> tuple[str, dict[str, Any]]:
  """The WordPiece vocabulary every run uses, trained once on the training documents (the driver's split),
  and what the corpus held: its name, documents per split and training tokens."""
  from experiments.bert import input_pipeline  # pylint: disable=g-import-not-at-top
  config = _config(settings, "adam", 1.0, settings.seeds[0])
  check_corpus(config.corpus)
  documents = input_pipeline.load_documents(config.corpus, max_documents=config.get("max_documents"))
  splits = input_pipeline.split_documents(documents, config.eval_fraction, config.validation_fraction)
  os.makedirs(vocab_dir, exist_ok=True)
  vocab_path = input_pipeline.prepare_vocab(config, vocab_dir, splits[0])
  tokenizer = input_pipeline.load_tokenizer(vocab_path, config.lowercase)
  train_tokens = sum(len(e.ids) for e in tokenizer.encode_batch(splits[0], add_special_tokens=False))
  corpus = {"corpus": config.corpus, "corpus_name": input_pipeline.corpus_name(config.corpus),
            "documents": dict(zip(("train", "eval", "validation"), map(len, splits))),
            "train_tokens": train_tokens}
  return vocab_path, corpus


def _run_name(optimizer: str, learning_rate: float, seed: int) -> str:
  return f"{optimizer}/lr{learning_rate:g}_seed{seed}"


RUN_RESULT_FILENAME = "run_result.json"


def _pretrain(settings: ComparisonSettings, out_dir: str, optimizer: str, learning_rate: float,
              seed: int) -> dict[str, Any]:
  """One pre-training run, or the result a finished run with the same config left in its workdir.

  A finished run writes `<workdir>/run_result.json` (its config, result and wall time), so rerunning an
  interrupted comparison into the same directory redoes only the runs that did not finish.
  """
  from experiments.bert import input_pipeline, train  # pylint: disable=g-import-not-at-top
  name = _run_name(optimizer, learning_rate, seed)
  workdir = os.path.join(out_dir, "runs", name)
  config = _config(settings, optimizer, learning_rate, seed)
  config_json = json.loads(config.to_json_best_effort())
  if config.vocab_file:  # by contents: a moved output directory still matches
    config_json["vocab_file"] = "sha256:" + input_pipeline.vocab_sha256(config.vocab_file)
  result_path = os.path.join(workdir, RUN_RESULT_FILENAME)
  if os.path.exists(result_path):
    with open(result_path) as f:
      saved = json.load(f)
    if saved.get("config") == config_json:
      print(f"[bert_comparison] {name}: finished before, reusing {result_path}", flush=True)
      return {"workdir": os.path.relpath(workdir, out_dir), "wall_s": saved["wall_s"],
              "final": saved["final"]}
  start = time.perf_counter()
  final = dict(train.train_and_evaluate(config, workdir))
  wall_s = time.perf_counter() - start
  print(f"[bert_comparison] {name}: " + ", ".join(
      f"{k} {final[k]:.4g}" for k in dict.fromkeys((VALIDATION_LOSS, TEST_LOSS, TEST_ACCURACY)) if k in final)
      + f" ({wall_s:.1f} s)", flush=True)
  with open(result_path + ".tmp", "w") as f:
    json.dump({"config": config_json, "final": final, "wall_s": wall_s}, f, default=str)
  os.replace(result_path + ".tmp", result_path)
  return {"workdir": os.path.relpath(workdir, out_dir), "wall_s": wall_s, "final": final}


def _final(run: Mapping[str, Any], key: str) -> float | None:
  value = run["final"].get(key)
  return float(value) if value is not None else None


def _compare_optimizer(settings: ComparisonSettings, out_dir: str, optimizer: str,
                       grid: Sequence[float]) -> dict[str, Any]:
  """The sweep over ``grid`` (`sweep_learning_rates`) with the first seed, then the best learning rate with
  the other seeds."""
  first_seed, other_seeds = settings.seeds[0], settings.seeds[1:]
  runs = {}

  def validation_loss(lr: float) -> float | None:
    runs[lr] = _pretrain(settings, out_dir, optimizer, lr, first_seed)
    return _final(runs[lr], VALIDATION_LOSS)

  # A final loss above ln(vocab size) is worse than predicting every token uniformly: a blow-up, even if finite.
  divergence_loss = math.log(int(_config(settings, optimizer, 1.0, first_seed).vocab_size))
  swept = sweep_learning_rates(grid, validation_loss, divergence_loss=divergence_loss)
  sweep = {lr: runs[lr] for lr in swept}
  best = best_learning_rate(swept, divergence_loss)
  seed_runs = {}
  if best is not None:
    seed_runs[first_seed] = sweep[best]
    for seed in other_seeds:
      seed_runs[seed] = _pretrain(settings, out_dir, optimizer, best, seed)
  clip_threshold = float(_config(settings, optimizer, 1.0, first_seed).clip_threshold)
  clip_fractions = []
  for run in seed_runs.values():
    _, values = clip_series(_records(out_dir, run), optimizer, clip_threshold)
    if len(values):
      clip_fractions.append(float(np.mean(values)))
  return {
      "grid": sorted(float(lr) for lr in grid),
      "learning_rates": list(sweep),
      "sweep": [{"learning_rate": lr, "validation_loss": _final(run, VALIDATION_LOSS),
                 "validation_accuracy": _final(run, VALIDATION_ACCURACY), "workdir": run["workdir"],
                 "wall_s": run["wall_s"]} for lr, run in sweep.items()],
      "diverged_learning_rates": [lr for lr, loss in swept.items() if is_diverged(loss, divergence_loss)],
      "divergence_loss": divergence_loss,
      "best_learning_rate": best,
      "seeds": list(seed_runs),
      "eval_loss": seed_statistics([_final(r, TEST_LOSS) for r in seed_runs.values()]),
      "eval_accuracy": seed_statistics([_final(r, TEST_ACCURACY) for r in seed_runs.values()]),
      "mean_clip_fraction": seed_statistics(clip_fractions) if clip_fractions else None,
      "clip_threshold": clip_threshold,
      "workdirs": {seed: run["workdir"] for seed, run in seed_runs.items()},
      "wall_s": sum(run["wall_s"] for run in list(sweep.values()) + list(seed_runs.values())[1:]),
  }


def _records(out_dir: str, run: Mapping[str, Any]) -> list[dict[str, Any]]:
  path = os.path.join(out_dir, run["workdir"], metrics.METRICS_FILENAME)
  return metrics.read_metrics(path) if os.path.exists(path) else []


def _plot_sweep(optimizers: Mapping[str, Mapping[str, Any]], path: str) -> str:
  """Final validation loss against the peak learning rate, one line per optimizer; x marks divergence."""
  import matplotlib  # pylint: disable=g-import-not-at-top
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top
  figure, axes = plt.subplots(figsize=(7, 4.5))

  def trained(result, loss):
    return not is_diverged(loss, result.get("divergence_loss", math.inf))

  finite_losses = [p["validation_loss"] for o in optimizers.values() for p in o["sweep"]
                   if trained(o, p["validation_loss"])]
  ceiling = max(finite_losses) if finite_losses else 1.0
  for index, (name, result) in enumerate(optimizers.items()):
    color = f"C{index % 10}"
    points = [(p["learning_rate"], p["validation_loss"]) for p in result["sweep"]]
    finite = [(lr, loss) for lr, loss in points if trained(result, loss)]
    if finite:
      axes.plot(*zip(*finite), "o-", color=color, label=name)
    diverged = [lr for lr, loss in points if not trained(result, loss)]
    if diverged:
      axes.plot(diverged, [ceiling] * len(diverged), "x", color=color, markersize=10)
  axes.set_xscale("log")
  axes.set_xlabel("peak learning rate")
  axes.set_ylabel("final validation MLM loss (seed 0)")
  axes.set_title("Learning-rate sweep (x: diverged, drawn at the largest other loss)")
  axes.grid(alpha=0.3)
  axes.legend(fontsize=8)
  figure.tight_layout()
  figure.savefig(path, dpi=120)
  plt.close(figure)
  return path


def clip_series(records: Sequence[Mapping[str, Any]], optimizer: str,
                clip_threshold: float) -> tuple[np.ndarray, np.ndarray]:
  """(steps, clip fraction) of one run from its metrics records.

  ACClip (both rules) and CClip log the fraction of coordinates clipped at each step; GClip logs the
  pre-clip global norm, and clips the whole step when it exceeds the threshold, so its value is 1.0 or 0.0
  (averaged over steps: the fraction of steps clipped). Other optimizers: empty arrays.
  """
  if optimizer == "gclip":
    steps, norms = metrics.metric_series(records, GLOBAL_NORM)
    return steps, (norms > clip_threshold).astype(np.float64)
  return metrics.metric_series(records, CLIP_FRACTION)


def _plot_clip_fractions(out_dir: str, optimizers: Mapping[str, Mapping[str, Any]], path: str,
                         smoothing: int) -> bool:
  """Clip fraction over training at the best learning rate (first seed); False if no run logged one."""
  import matplotlib  # pylint: disable=g-import-not-at-top
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top
  figure, axes = plt.subplots(figsize=(7, 4.5))
  drawn = False
  for index, (name, result) in enumerate(optimizers.items()):
    if not result["seeds"]:
      continue
    steps, values = clip_series(_records(out_dir, {"workdir": result["workdirs"][result["seeds"][0]]}), name,
                                result["clip_threshold"])
    if not len(values):
      continue
    if smoothing > 1 and len(values) >= smoothing:
      values = np.convolve(values, np.ones(smoothing) / smoothing, mode="valid")
      steps = steps[smoothing - 1:]
    label = f"{name} (steps clipped)" if name == "gclip" else f"{name} (coordinates clipped)"
    axes.plot(steps, values, color=f"C{index % 10}", label=label)
    drawn = True
  axes.set_xlabel("step")
  axes.set_ylabel(f"clip fraction (moving average over {smoothing} logged steps)")
  axes.set_ylim(-0.02, 1.02)
  axes.set_title("Clipping over training (best learning rate, seed 0)")
  axes.grid(alpha=0.3)
  if drawn:
    axes.legend(fontsize=8)
    figure.tight_layout()
    figure.savefig(path, dpi=120)
  plt.close(figure)
  return drawn


def _plot_figures(out_dir: str, optimizers: Mapping[str, Mapping[str, Any]],
                  num_train_steps: int) -> dict[str, str]:
  """The comparison's PNGs (paths relative to ``out_dir``)."""
  first_runs = {name: os.path.join(out_dir, result["workdirs"][result["seeds"][0]], metrics.METRICS_FILENAME)
                for name, result in optimizers.items() if result["seeds"]}
  figures = {"learning_rate_sweep": os.path.basename(
      _plot_sweep(optimizers, os.path.join(out_dir, "learning_rate_sweep.png")))}
  if first_runs:
    smoothing = max(1, num_train_steps // 40)
    metrics.plot_loss_curves(first_runs, os.path.join(out_dir, "loss_curves.png"),
                             metric_names=(TRAIN_LOSS_CURVE, EVAL_LOSS_CURVE), smoothing=smoothing,
                             title="MLM loss at the best learning rate (seed 0; solid train, dashed eval)")
    figures["loss_curves"] = "loss_curves.png"
  if _plot_clip_fractions(out_dir, optimizers, os.path.join(out_dir, "clip_fraction.png"),
                          smoothing=max(1, num_train_steps // 100)):
    figures["clip_fraction"] = "clip_fraction.png"
  return figures


def run(out_dir: str, settings: ComparisonSettings, squad_dir: str | None = None) -> dict[str, Any]:
  """Runs the comparison into ``out_dir`` and returns its summary (JSON-able; also results.json there).

  Returns:
    ``{'optimizers': {name: {'best_learning_rate', 'eval_loss': stats, 'eval_accuracy': stats, 'sweep',
    ...}}, 'finetune': {'status': 'ok' | 'skipped', ...}, 'figures': {...}, 'settings': {...}}`` where
    stats are `seed_statistics` over the seeds at the best learning rate.
  """
  os.makedirs(out_dir, exist_ok=True)
  # Checkpoints only matter to fine-tuning; one shared vocabulary spares every run its WordPiece training.
  shared = dict(save_checkpoints=bool(squad_dir))
  shared["vocab_file"], corpus = _shared_vocabulary(settings, os.path.join(out_dir, "vocabulary"))
  settings = dataclasses.replace(settings, overrides={**settings.overrides, **shared})
  optimizers = {}
  for optimizer, grid in settings.learning_rates.items():
    optimizers[optimizer] = _compare_optimizer(settings, out_dir, optimizer, grid)
  num_train_steps = int(_config(settings, "adam", 1.0, 0)["num_train_steps"])
  summary = {
      "setup": setup_text(settings),
      "corpus": corpus,
      "data_description": [corpus_text(corpus)],
      "optimizer_settings": _optimizer_settings_text(settings),
      "optimizers": optimizers,
      "figures": _plot_figures(out_dir, optimizers, num_train_steps),
      "finetune": (_finetune(out_dir, settings, optimizers, squad_dir) if squad_dir else
                   {"status": "skipped", "reason": "no --squad-dir given"}),
      "settings": dataclasses.asdict(settings),
  }
  report.write_json(os.path.join(out_dir, "results.json"), summary)
  return summary


def corpus_text(corpus: Mapping[str, Any]) -> str:
  """One sentence on the corpus a comparison loaded (from `_shared_vocabulary`'s record of it)."""
  documents = corpus["documents"]
  return (f"BERT corpus: {corpus['corpus_name']} (`corpus={corpus['corpus']}`): {sum(documents.values())} "
          f"documents, {documents['train']} for training ({corpus['train_tokens']:,} WordPiece tokens), "
          f"{documents['eval']} held out for the reported numbers, {documents['validation']} for choosing "
          "learning rates.")


def _finetune(out_dir: str, settings: ComparisonSettings, optimizers: Mapping[str, Mapping[str, Any]],
              squad_dir: str) -> dict[str, Any]:
  """SQuAD v1.1 EM/F1 of each (pre-training optimizer, fine-tuning optimizer) pair of FINETUNE_OPTIMIZERS.

  Each pre-trained encoder is the best-learning-rate run of the first seed; each fine-tuning optimizer runs at
  its best pre-training learning rate times ``settings.finetune_learning_rate_scale``.
  """
  from experiments.squad import train as squad  # pylint: disable=g-import-not-at-top
  from experiments.squad.configs import default as squad_config  # pylint: disable=g-import-not-at-top
  train_file, dev_file = squad_files(squad_dir)
  runs = {}
  for pretrained in FINETUNE_OPTIMIZERS:
    result = optimizers.get(pretrained)
    if not result or not result["seeds"]:
      runs[f"{pretrained}_pretrained"] = {"status": "no pre-trained encoder (not run, or every lr diverged)"}
      continue
    pretrained_workdir = os.path.join(out_dir, result["workdirs"][result["seeds"][0]])
    for finetuner in FINETUNE_OPTIMIZERS:
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
      print(f"[bert_comparison] SQuAD {name}: EM {scores['exact_match']:.2f}, F1 {scores['f1']:.2f}", flush=True)
  return {"status": "ok", "train_file": train_file, "dev_file": dev_file, "runs": runs}


# Measured: one full-mode run (tiny config, 2000 steps of 32 x 128 tokens, evaluations included) took 13-14
# minutes pinned to one core of the 2-core development CPU (2.6 steps/s), about 9 minutes on both; the mode is
# 7 x (3 to 5 sweep runs + 2 seeds) = 35 to 49 runs.
FULL_MODE_EXPECTED_TIME = ("8 to 11 hours on one CPU core (measured: 13-14 minutes per run, 35 to 49 runs), "
                           "5 to 8 hours on 2; on one GPU: not measured (no GPU was lent). Rerunning the "
                           "same command continues an interrupted comparison")


def single_run_command(settings: ComparisonSettings, optimizer: str, learning_rate: float, seed: int,
                       workdir: str) -> str:
  """The `experiments.bert.main` command line that repeats one pre-training run of the comparison."""
  flags = []
  fields = dict(settings.overrides, corpus=settings.corpus)
  fields.update(optimizer=optimizer, learning_rate=learning_rate, seed=seed, **OPTIMIZER_FIELDS.get(optimizer, {}))
  for name, value in fields.items():
    if isinstance(value, Mapping):
      flags += [f"--config.{name}.{k}={v}" for k, v in value.items()]
    else:
      flags.append(f"--config.{name}={value}")
  return (f"python -m experiments.bert.main --config experiments/bert/configs/{settings.config_name}.py "
          f"--workdir {workdir} " + " ".join(flags))


def _best_text(result: Mapping[str, Any]) -> str:
  """The best learning rate, flagged when it sits at an end of its grid (the optimum may lie outside)."""
  best, grid = result["best_learning_rate"], result.get("grid", result["learning_rates"])
  if best is None:
    return "— (all diverged)"
  return f"{best:g}" + (" (grid edge)" if best in (min(grid), max(grid)) else "")


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
      report.markdown_table(
          ["optimizer", "learning rates swept", "best lr", "held-out MLM loss", "held-out MLM accuracy",
           "mean clip fraction (ACClip: coordinates, GClip: steps)", "diverged lrs (loss nan or > ln V)"],
          [[name, ", ".join(f"{lr:g}" for lr in r["learning_rates"]), _best_text(r),
            report.format_seed_statistics(r["eval_loss"], with_range=True),
            report.format_seed_statistics(r["eval_accuracy"], with_range=True),
            report.format_seed_statistics(r["mean_clip_fraction"], with_range=True),
            ", ".join(f"{lr:g}" for lr in r["diverged_learning_rates"]) or "none"]
           for name, r in optimizers.items()]),
      "",
      "Learning-rate sweep: final validation MLM loss per peak learning rate (seed "
      f"{settings['seeds'][0]}; nan = diverged).",
      "",
      report.markdown_table(
          ["optimizer", "validation loss by learning rate"],
          [[name, ", ".join(f"{p['learning_rate']:g}: {report.format_number(p['validation_loss'])}"
                            for p in r["sweep"])] for name, r in optimizers.items()]),
      "",
  ]
  finetune = summary.get("finetune", {})
  if finetune.get("status") == "ok":
    lines += ["SQuAD v1.1 fine-tuning (dev set, one run each):", "",
              report.markdown_table(["pre-trained with / fine-tuned with", "exact match", "F1", "lr"],
                                    [[name, run.get("exact_match"), run.get("f1"),
                                      run.get("learning_rate", run.get("status"))]
                                     for name, run in finetune["runs"].items()]), ""]
  else:
    lines += [f"SQuAD v1.1 fine-tuning: skipped ({finetune.get('reason', 'not run')}).", ""]
  return lines
