"""BERT MLM train-step throughput: our pmapped Flax step vs PyTorch `transformers.BertForMaskedLM`.

For each model config (tiny, mini, optionally base) at the same batch and sequence length, times

* ours: `experiments.bert.train`'s pmapped train step (forward, backward, gradient `psum`, optimizer update)
  with AdamW and with ACClip, built by the shared optimizer factory; its MLM head projects only the masked
  positions onto the vocabulary (as the original BERT), and a second AdamW row projects all positions (as
  `BertForMaskedLM` does), which compares the same arithmetic;
* PyTorch: `BertForMaskedLM` (same sizes, dropout 0.1, labels only on the masked 15%) with
  `torch.optim.AdamW`, `loss.backward(); optimizer.step(); optimizer.zero_grad()`;

on the same random batches, with both frameworks restricted to the same CPU cores (`--threads`, set as the
process's CPU affinity before JAX starts, and `torch.set_num_threads`). All candidates of a config warm up
(the JAX compiles happen there), then `--steps` rounds each time one step of every candidate in turn, so a
changing load on a shared machine hits them alike; the table gives medians in tokens/s
(batch * seq_len / step time). Prints a Markdown table with our/PyTorch ratios (> 1: ours is faster).

Install the baseline first (the CPU build; plain `pip install torch` pulls CUDA):
    pip install torch==2.13.0 && pip install transformers
Run (from a checkout: the script puts the repository root on sys.path for `experiments`):
    python benchmarks/bert_step.py                       # tiny and mini, batch 32, seq 128
    python benchmarks/bert_step.py --configs base --batch-size 8 --steps 3 --warmup 1 --settle 0
    python benchmarks/bert_step.py --no-torch --optimizers adamw,adamw+gclip,acclip,acclip_ports,zclip,adagc,autoclip,\
        spam,stable_spam,skip_step_on_spikes
The base line takes about 5.5 minutes and 11 GB of memory on 2 CPU cores (10-22 s a step).
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # experiments/


def parse_args(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--configs", default="tiny,mini", help="comma-separated BERT config names")
  parser.add_argument("--batch-size", type=int, default=32)
  parser.add_argument("--seq-len", type=int, default=128)
  parser.add_argument("--steps", type=int, default=10, help="timed steps per measurement")
  parser.add_argument("--warmup", type=int, default=2, help="untimed steps first (JAX compiles here)")
  parser.add_argument("--settle", type=int, default=1,
                      help="untimed steps of a candidate right before each of its timed steps")
  parser.add_argument("--threads", type=int, default=len(os.sched_getaffinity(0)),
                      help="CPU cores for both frameworks (default: all this process may use)")
  parser.add_argument("--no-torch", action="store_true", help="skip the PyTorch baseline")
  parser.add_argument("--dtype", default="float32", help="our model's compute dtype (float32, bfloat16)")
  parser.add_argument("--optimizers", default="adamw,acclip",
                      help="comma-separated registry names (adamw first: every row is compared with it); those "
                           "after adamw and acclip run under the first --parallelism only; NAME+gclip puts the "
                           "library's global-norm clip (threshold 1, the drivers' grad_clip_norm) in front")
  parser.add_argument("--parallelism", default="pmap",
                      help="comma-separated: pmap and/or mesh (jit over a (data, fsdp) mesh, all on data)")
  return parser.parse_args(argv)


def restrict_threads(threads: int) -> None:
  """Pins this process to `threads` cores before JAX or PyTorch start their thread pools."""
  cores = sorted(os.sched_getaffinity(0))
  if not 1 <= threads <= len(cores):
    raise ValueError(f"--threads={threads} must lie in [1, {len(cores)}] (the cores this process may use)")
  os.sched_setaffinity(0, cores[:threads])


def random_mlm_batches(count: int, batch_size: int, seq_len: int, vocab_size: int, seed: int = 0):
  """`count` batches of random token ids, 15% of each row masked (labels -100 elsewhere, as in torch)."""
  import numpy as np  # pylint: disable=g-import-not-at-top
  rng = np.random.default_rng(seed)
  batches = []
  for _ in range(count):
    input_ids = rng.integers(5, vocab_size, size=(batch_size, seq_len), dtype=np.int32)
    # BERT's count: round(15%) of the tokens per row, at uniformly drawn positions.
    ranks = np.argsort(rng.random((batch_size, seq_len)), axis=1)
    masked = ranks < round(0.15 * seq_len)
    batches.append({
        "input_ids": input_ids,
        "token_type_ids": np.zeros_like(input_ids),
        "attention_mask": np.ones_like(input_ids),
        "labels": np.where(masked, input_ids, -100).astype(np.int32),
    })
  return batches


def interleaved_median_seconds(steps: dict, num_batches: int, warmup: int, rounds: int,
                               settle: int = 1) -> dict:
  """Median seconds per step of each `steps[name](batch_index)` (which must block until done).

  All candidates warm up first (JAX compiles there), then each round times one step of every candidate in
  turn, so a change in the load of a shared machine hits all of them alike. Before its timed step each
  candidate runs `settle` untimed steps: a step that directly follows a memory-hungry one (the
  all-positions head allocates and frees a 0.5 GB logits array at tiny) pays for that one's page
  traffic, so without them the candidate timed after the all-positions AdamW measures slower than it is.
  """
  for step in steps.values():
    for index in range(warmup):
      step(index % num_batches)
  times = {name: [] for name in steps}
  for round_index in range(rounds):
    for name, step in steps.items():
      index = (warmup + round_index) % num_batches
      for _ in range(settle):
        step(index)
      start = time.perf_counter()
      step(index)
      times[name].append(time.perf_counter() - start)
  return {name: statistics.median(values) for name, values in times.items()}


def torch_step(model_config, batches, threads: int):
  """A `step(batch_index)` of `BertForMaskedLM` with `torch.optim.AdamW`, on the GPU when torch sees one."""
  import torch  # pylint: disable=g-import-not-at-top
  import transformers  # pylint: disable=g-import-not-at-top
  torch.set_num_threads(threads)
  device = "cuda" if torch.cuda.is_available() else "cpu"
  torch.manual_seed(0)
  config = transformers.BertConfig(
      vocab_size=model_config.vocab_size, hidden_size=model_config.hidden_size,
      num_hidden_layers=model_config.num_layers, num_attention_heads=model_config.num_heads,
      intermediate_size=model_config.intermediate_size,
      max_position_embeddings=model_config.max_position_embeddings,
      type_vocab_size=model_config.type_vocab_size, hidden_dropout_prob=model_config.dropout_rate,
      attention_probs_dropout_prob=model_config.attention_dropout_rate, hidden_act="gelu")
  model = transformers.BertForMaskedLM(config).to(device).train()
  optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4, weight_decay=0.01)
  torch_batches = [{k: torch.from_numpy(v).long().to(device) for k, v in batch.items()} for batch in batches]

  def step(index):
    loss = model(**torch_batches[index]).loss
    loss.backward()
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    loss.item()

  return step


def model_config_for(name: str, vocab_size: int, seq_len: int, dtype: str = "float32"):
  """The BERT sizes of `experiments/bert/configs/<name>.py`, with BERT's vocabulary size and `dtype`."""
  import importlib  # pylint: disable=g-import-not-at-top
  from experiments.bert import models  # pylint: disable=g-import-not-at-top
  try:
    module = importlib.import_module(f"experiments.bert.configs.{name}")
  except ModuleNotFoundError as error:
    raise ValueError(f"--configs: no BERT config named {name!r} in experiments/bert/configs") from error
  sizes = dict(module.get_config().model, dtype=dtype)
  sizes["max_position_embeddings"] = max(sizes["max_position_embeddings"], seq_len)
  return models.BertConfig(vocab_size=vocab_size, **sizes)


def our_step(model_config, batches, optimizer: str, predictions: int, parallelism: str = "pmap"):
  """A `step(batch_index)` of our compiled BERT train step (`experiments.bert.train.compiled_steps`, under
  `parallelism`: "pmap" or "mesh" with all devices on "data"), `predictions` per row."""
  import jax  # pylint: disable=g-import-not-at-top
  import jax.numpy as jnp  # pylint: disable=g-import-not-at-top
  import numpy as np  # pylint: disable=g-import-not-at-top
  from experiments.bert import models  # pylint: disable=g-import-not-at-top
  from experiments.bert import train  # pylint: disable=g-import-not-at-top
  from experiments.bert.configs import default  # pylint: disable=g-import-not-at-top
  from experiments.common import optimizers  # pylint: disable=g-import-not-at-top
  from experiments.common import parallel  # pylint: disable=g-import-not-at-top

  config = default.get_config()
  config.optimizer, clipped = optimizer.removesuffix("+gclip"), optimizer.endswith("+gclip")
  config.grad_clip_norm = 1.0 if clipped else 0.0  # the drivers' pre-clip: the library's GClip in front
  config.parallelism = parallelism
  total_steps = len(batches)
  config.warmup_steps = 1
  spec = optimizers.OptimizerSpec.from_config(config, total_steps)
  tx = spec.create()
  par = parallel.create(config)
  model = models.BertForMaskedLM(model_config)
  seq_len = batches[0]["input_ids"].shape[1]
  tokens = jnp.zeros((1, seq_len), jnp.int32)
  params = jax.jit(lambda key: model.init(key, tokens, tokens, tokens, tokens[:, :predictions],
                                          deterministic=True)["params"])(jax.random.key(0))
  state = par.place_state(train.TrainState(
      step=jnp.zeros((), jnp.int32), params=params, opt_state=tx.init(params),
      rng=jax.random.key_data(jax.random.key(1))))
  del params
  p_train_step = train.compiled_steps(model_config, spec.step_key(), par).train_step

  def to_ours(batch):
    """Positions of the masked tokens first, padded (weight 0) to `predictions` per row."""
    labels = batch["labels"]
    order = np.argsort(labels < 0, axis=1, kind="stable")[:, :predictions]
    masked_labels = np.take_along_axis(labels, order, axis=1)
    weights = (masked_labels >= 0).astype(np.float32)
    ours = {k: batch[k] for k in ("input_ids", "token_type_ids", "attention_mask")}
    ours.update(masked_positions=order.astype(np.int32), masked_labels=np.maximum(masked_labels, 0),
                masked_weights=weights)
    return par.place_batch(ours)

  our_batches = [to_ours(batch) for batch in batches]

  def step(index):
    nonlocal state
    state, metrics = p_train_step(state, our_batches[index])
    jax.block_until_ready(metrics["train_loss"])

  return step


def main(argv=None) -> None:
  args = parse_args(argv)
  restrict_threads(args.threads)
  # Import JAX only now, so its thread pool sees the restricted affinity.
  import jax  # pylint: disable=g-import-not-at-top

  vocab_size = 30522
  predictions = round(0.15 * args.seq_len) + 1  # BERT's max_predictions_per_seq (20 at seq 128)
  tokens_per_step = args.batch_size * args.seq_len
  # Ours gathers the masked positions before the vocabulary projection, as the original BERT does;
  # 'all positions' projects every token, as transformers.BertForMaskedLM does (the same FLOPs as PyTorch).
  # (optimizer, MLM head, predictions, parallelism): AdamW and ACClip under each parallelism; the
  # all-positions head once, under the first.
  parallelisms = args.parallelism.split(",")
  gathered = f"{predictions} gathered"
  optimizers = args.optimizers.split(",")
  if optimizers[0] != "adamw":
    raise SystemExit(f"--optimizers must start with adamw (every row is compared with it); got {args.optimizers}")
  paired = [name for name in optimizers if name in ("adamw", "acclip")]
  variants = tuple((optimizer, gathered, predictions, par) for par in parallelisms for optimizer in paired)
  variants += tuple((optimizer, gathered, predictions, parallelisms[0]) for optimizer in optimizers
                    if optimizer not in paired)
  variants += (("adamw", "all positions", args.seq_len, parallelisms[0]),)
  rows = []
  for name in args.configs.split(","):
    model_config = model_config_for(name, vocab_size, args.seq_len, args.dtype)
    batches = random_mlm_batches(args.warmup + args.steps, args.batch_size, args.seq_len, vocab_size)
    steps = {} if args.no_torch else {"torch": torch_step(model_config, batches, args.threads)}
    for variant in variants:
      optimizer, _, head_predictions, parallelism = variant
      steps[variant] = our_step(model_config, batches, optimizer, head_predictions, parallelism)
    seconds = interleaved_median_seconds(steps, len(batches), args.warmup, args.steps, args.settle)
    del steps
    torch_seconds = seconds.get("torch")
    for variant in variants:
      rows.append((name, *variant[:2], variant[3], seconds[variant], torch_seconds))
    print(f"  {name}: " + ", ".join(f"{k if isinstance(k, str) else ' '.join(k[:2] + k[3:])} "
                                   f"{tokens_per_step / v:,.0f} tokens/s" for k, v in seconds.items()),
          file=sys.stderr)

  device = jax.devices()[0]
  print(f"\nBERT MLM train step ({args.dtype}), batch {args.batch_size} x seq {args.seq_len}, vocab {vocab_size}, "
        f"{args.threads} thread(s), {device.platform} ({device.device_kind}), median of {args.steps} steps "
        f"after {args.warmup} warm-up, {args.settle} settling step(s) before each\n")
  print("| config | ours: optimizer | ours: MLM head | parallelism | ours tokens/s | vs ours AdamW, same head "
        "and parallelism | PyTorch AdamW tokens/s | ours / PyTorch |")
  print("|---|---|---|---|---:|---:|---:|---:|")
  adamw_seconds = {(name, head, par): seconds for name, optimizer, head, par, seconds, _ in rows
                   if optimizer == "adamw"}
  for name, optimizer, head, par, seconds, torch_seconds in rows:
    ours_rate = tokens_per_step / seconds
    if torch_seconds is None:
      torch_cell = ratio_cell = "n/a"
    else:
      torch_rate = tokens_per_step / torch_seconds
      torch_cell, ratio_cell = f"{torch_rate:,.0f}", f"{ours_rate / torch_rate:.2f}"
    print(f"| {name} | {optimizer} | {head} | {par} | {ours_rate:,.0f} | "
          f"{adamw_seconds[name, head, par] / seconds:.2f} | "
          f"{torch_cell} | {ratio_cell} |")


if __name__ == "__main__":
  main()
