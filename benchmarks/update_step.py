"""Times one jit-compiled optimizer step (update + optax.apply_updates) on a BERT-base-shaped tree.

Usage (from the repository root; `pip install -e .` or PYTHONPATH=.):
  python benchmarks/update_step.py [--repeats 7] [--warmup 2] [--layers 12] [--only NAME ...]
  python benchmarks/update_step.py --targets [--runs 3]   # the later methods' targets (TARGETS)
  python benchmarks/update_step.py --hlo NAME             # what XLA compiles NAME's step to

The tree has BERT-base's real leaf shapes (about 110M float32 parameters with 12 layers). Each step
donates the params and the optimizer state, so it runs in place like a training step. The candidates are
timed round-robin (one step of each per round) so that load from other processes hits them alike; the
table shows medians and ratios measured in this same run. The floor is a hand-written element-wise kernel
that moves the bytes ACClip must move: it reads params, grads and two state arrays and writes params and
the two state arrays. "+ clip_stats" also computes `acclip_optax.clip_stats` inside every step: the price
of a clip fraction kept up to date in the state (a reduction in the step stops XLA fusing the update).
"""
from __future__ import annotations

import argparse
import math
import statistics
import time
from collections.abc import Callable

import jax
import jax.numpy as jnp
import optax

import acclip_optax

HIDDEN, INTERMEDIATE, VOCAB, MAX_POSITIONS, TYPE_VOCAB = 768, 3072, 30522, 512, 2


def bert_base_shapes(num_layers: int) -> dict[str, tuple[int, ...]]:
  """The parameter shapes of BERT-base pretraining (MLM decoder tied to the word embeddings)."""
  shapes = {
      "embeddings/word": (VOCAB, HIDDEN),
      "embeddings/position": (MAX_POSITIONS, HIDDEN),
      "embeddings/token_type": (TYPE_VOCAB, HIDDEN),
      "embeddings/layer_norm/scale": (HIDDEN,),
      "embeddings/layer_norm/bias": (HIDDEN,),
  }
  for layer in range(num_layers):
    prefix = f"layer_{layer}/"
    for name in ("query", "key", "value", "attention_output"):
      shapes[prefix + name + "/kernel"] = (HIDDEN, HIDDEN)
      shapes[prefix + name + "/bias"] = (HIDDEN,)
    shapes[prefix + "intermediate/kernel"] = (HIDDEN, INTERMEDIATE)
    shapes[prefix + "intermediate/bias"] = (INTERMEDIATE,)
    shapes[prefix + "output/kernel"] = (INTERMEDIATE, HIDDEN)
    shapes[prefix + "output/bias"] = (HIDDEN,)
    for norm in ("attention_layer_norm", "output_layer_norm"):
      shapes[prefix + norm + "/scale"] = (HIDDEN,)
      shapes[prefix + norm + "/bias"] = (HIDDEN,)
  shapes.update({
      "pooler/kernel": (HIDDEN, HIDDEN),
      "pooler/bias": (HIDDEN,),
      "mlm/transform/kernel": (HIDDEN, HIDDEN),
      "mlm/transform/bias": (HIDDEN,),
      "mlm/layer_norm/scale": (HIDDEN,),
      "mlm/layer_norm/bias": (HIDDEN,),
      "mlm/output_bias": (VOCAB,),
      "nsp/kernel": (HIDDEN, 2),
      "nsp/bias": (2,),
  })
  return shapes


def random_tree(shapes: dict[str, tuple[int, ...]], key: jax.Array, scale: float) -> dict[str, jax.Array]:
  keys = jax.random.split(key, len(shapes))
  return {name: scale * jax.random.normal(k, shape, jnp.float32)
          for k, (name, shape) in zip(keys, shapes.items())}


def tree_bytes(tree) -> int:
  return sum(leaf.size * leaf.dtype.itemsize for leaf in jax.tree.leaves(tree))


def same_bytes_step(params, state, grads):
  """The memory-traffic floor: read p, g, s1, s2; write p, s1, s2; a few flops per coordinate."""
  first, second = state
  first = jax.tree.map(lambda s, g: 0.9 * s + 0.1 * g, first, grads)
  second = jax.tree.map(lambda s, g: 0.99 * s + 0.01 * jnp.abs(g), second, grads)
  params = jax.tree.map(lambda p, s: p - 1e-4 * s, params, first)
  return params, (first, second)


def optax_step(optimizer: optax.GradientTransformation) -> Callable:
  def step(params, state, grads):
    updates, state = optimizer.update(grads, state, params)
    return optax.apply_updates(params, updates), state
  return step


def with_clip_stats(optimizer: optax.GradientTransformation) -> tuple[Callable, Callable]:
  """The optimizer's step that also computes `clip_stats` every step (the state carries the stats)."""
  step = optax_step(optimizer)

  def init(params):
    state = optimizer.init(params)
    return state, acclip_optax.clip_stats(state)

  def step_with_stats(params, state_and_stats, grads):
    params, state = step(params, state_and_stats[0], grads)
    return params, (state, acclip_optax.clip_stats(state))

  return init, step_with_stats


def keeping_state_on_a_flag(optimizer: optax.GradientTransformation) -> optax.GradientTransformation:
  """`optimizer` whose new state is selected against the old one by a scalar flag (never set here), as
  `skip_step_on_spikes` keeps its inner state on a skipped step, without its gradient norm."""
  def update(updates, state, params=None):
    new_updates, new_state = optimizer.update(updates, state, params)
    keep_old = jnp.isnan(params["nsp/bias"][0])  # a scalar the compiler cannot fold; false here
    return new_updates, optax.tree.where(keep_old, state, new_state)
  return optax.GradientTransformation(optimizer.init, update)


def candidates() -> dict[str, tuple[Callable, Callable]]:
  """name -> (init(params) -> state, step(params, state, grads) -> (params, state))."""
  def from_optax(optimizer):
    return optimizer.init, optax_step(optimizer)

  zeros2 = lambda params: (jax.tree.map(jnp.zeros_like, params), jax.tree.map(jnp.zeros_like, params))
  return {
      "same-bytes kernel": (zeros2, same_bytes_step),
      "acclip alpha=1": from_optax(acclip_optax.acclip(1e-4, alpha=1.0)),
      "acclip alpha=1.5": from_optax(acclip_optax.acclip(1e-4, alpha=1.5)),
      "acclip alpha=2": from_optax(acclip_optax.acclip(1e-4, alpha=2.0)),
      "acclip alpha=1 bias_correction": from_optax(acclip_optax.acclip(1e-4, bias_correction=True)),
      "acclip alpha=1 + clip_stats": with_clip_stats(acclip_optax.acclip(1e-4)),
      "acclip alpha=1 mu bf16": from_optax(acclip_optax.acclip(1e-4, mu_dtype=jnp.bfloat16)),
      "acclip_ports": from_optax(acclip_optax.acclip_ports(1e-4)),
      "optax.adam": from_optax(optax.adam(1e-4)),
      "optax.adamw": from_optax(optax.adamw(1e-4)),
      "optax.sgd": from_optax(optax.sgd(1e-4)),
      # The spike-clipping methods; a global-norm method should cost sgd plus one read of the gradients,
      # which optax's own fixed-threshold clip shows.
      "optax.clip_by_global_norm + sgd": from_optax(optax.chain(optax.clip_by_global_norm(1.0), optax.sgd(1e-4))),
      # Skip-step's two parts apart: a global norm in front of AdamW ...
      "optax.clip_by_global_norm + adamw": from_optax(
          optax.chain(optax.clip_by_global_norm(1.0), optax.adamw(1e-4))),
      # The library's GClip (its norm computed apart from the update that follows) in front of AdamW.
      "clip_by_scheduled_global_norm + adamw": from_optax(
          optax.chain(acclip_optax.clip_by_scheduled_global_norm(1.0), optax.adamw(1e-4))),
      # ... and its other part: AdamW's new state selected against the old one.
      "optax.adamw, state kept on a flag": from_optax(keeping_state_on_a_flag(optax.adamw(1e-4))),
      "zclip + sgd": from_optax(optax.chain(acclip_optax.zclip(), optax.sgd(1e-4))),
      "autoclip + sgd": from_optax(optax.chain(acclip_optax.autoclip(), optax.sgd(1e-4))),
      "adagc + adamw": from_optax(optax.chain(acclip_optax.adagc(), optax.adamw(1e-4))),
      "spam": from_optax(acclip_optax.spam(1e-4)),
      "stable_spam": from_optax(acclip_optax.stable_spam(1e-4)),
      # Tested on the gradient norm only (the benchmark has no loss to pass as update(..., loss=...)).
      "skip_step_on_spikes(adamw)": from_optax(acclip_optax.skip_step_on_spikes(optax.adamw(1e-4))),
  }


# (candidate, its baseline, the largest ratio the target allows): the later methods' step near what they wrap.
TARGETS = (
    ("skip_step_on_spikes(adamw)", "optax.adamw", 1.3),
    ("clip_by_scheduled_global_norm + adamw", "optax.adamw", 1.3),
    ("optax.clip_by_global_norm + adamw", "optax.adamw", None),  # optax's own, kept as a row
    ("spam", "optax.adam", 1.3),
    ("stable_spam", "optax.adam", 1.5),
    ("acclip_ports", "optax.adam", 1.3),
    ("acclip alpha=1 + clip_stats", "acclip alpha=1", 1.3),
)


def time_steps(chosen: dict[str, tuple[Callable, Callable]], shapes, grads, repeats: int, warmup: int
               ) -> dict[str, dict]:
  """name -> {"median_s", "state_bytes"}: each candidate compiled, then timed round-robin."""
  key_params = jax.random.split(jax.random.PRNGKey(0))[0]
  runs = {}
  for name, (init, step) in chosen.items():
    params = random_tree(shapes, key_params, 0.02)
    state = init(params)
    compiled = jax.jit(step, donate_argnums=(0, 1)).lower(params, state, grads).compile()
    runs[name] = [compiled, params, state, [], tree_bytes(state)]
  for round_index in range(warmup + repeats):
    for run in runs.values():
      compiled, params, state = run[:3]
      start = time.perf_counter()
      params, state = compiled(params, state, grads)
      jax.block_until_ready((params, state))
      elapsed = time.perf_counter() - start
      run[1], run[2] = params, state
      if round_index >= warmup:
        run[3].append(elapsed)
  return {name: {"median_s": statistics.median(run[3]), "state_bytes": run[4]} for name, run in runs.items()}


def measure_targets(shapes, grads, runs: int, repeats: int, warmup: int) -> None:
  """Each target row against its baseline, `runs` times; every baseline's rows are one group (one process
  holding them all at once needs more memory than a 24 GB machine has), timed together."""
  chosen = candidates()
  groups: dict[str, list[str]] = {}
  for name, baseline, _ in TARGETS:
    groups.setdefault(baseline, []).append(name)
  ratios: dict[str, list[float]] = {name: [] for name, _, _ in TARGETS}
  for run in range(runs):
    for baseline, names in groups.items():
      timed = time_steps({n: chosen[n] for n in [baseline] + names}, shapes, grads, repeats, warmup)
      for name in names:
        ratios[name].append(timed[name]["median_s"] / timed[baseline]["median_s"])
      print(f"run {run + 1}: " + ", ".join(f"{n} {timed[n]['median_s'] * 1e3:.0f} ms" for n in [baseline] + names)
            + "; " + ", ".join(f"{n} {ratios[n][-1]:.2f}x" for n in names), flush=True)  # kept if stopped later
  print("| step | against | ratio, median [min-max] over runs | target | met |")
  print("|---|---|---:|---|---|")
  for name, baseline, limit in TARGETS:
    values = ratios[name]
    met = "" if limit is None else ("yes" if statistics.median(values) <= limit else "no")
    print(f"| {name} | {baseline} | {statistics.median(values):.2f} [{min(values):.2f}-{max(values):.2f}] | "
          f"{'' if limit is None else f'<= {limit}'} | {met} |")


def describe_hlo(name: str, shapes, grads) -> None:
  """The compiled step's top-level operations on full-size arrays: every pass over memory XLA emits (a fusion
  or a copy), what it reads and what it writes, so a step's cost can be traced to its passes."""
  import re  # pylint: disable=g-import-not-at-top
  init, step = candidates()[name]
  params = random_tree(shapes, jax.random.PRNGKey(0), 0.02)
  text = jax.jit(step, donate_argnums=(0, 1)).lower(params, init(params), grads).compile().as_text()
  largest = "[" + ",".join(str(d) for d in max(shapes.values(), key=math.prod)) + "]"
  itemsize = {"pred": 1, "s8": 1, "u8": 1, "bf16": 2, "f16": 2, "s32": 4, "f32": 4, "f64": 8}
  size = math.prod(max(shapes.values(), key=math.prod))
  full_size: dict[str, int] = {}  # value -> its bytes, for the values with as many entries as the largest leaf
  passes, moved = [], 0
  for line in text[text.index("ENTRY"):].splitlines():
    found = re.search(r"(%\S+) = (\w+)(\S*) (\w+)\((.*?)\)(.*)", line)
    if not found:
      continue
    value, dtype, op, operands = found.group(1), found.group(2), found.group(4), re.findall(r"%[\w.-]+", found.group(5))
    dims = re.match(r"\[([\d,]*)\]", found.group(3))
    if dims and math.prod(int(d) for d in dims.group(1).split(",") if d) == size:  # any shape: a reshaped leaf too
      full_size[value] = itemsize.get(dtype, 4) * size
    read = [o for o in operands if o in full_size]
    if op == "parameter" or not (value in full_size or read):
      continue
    moved += full_size.get(value, 0) + sum(full_size[o] for o in read)
    kind = re.search(r"kind=(\w+)", found.group(6))
    threads = re.search(r'outer_dimension_partitions":\["(\d+)"', found.group(6))
    # XLA:CPU splits a loop over threads by its outer dimension (`outer_dimension_partitions`); a library
    # call (kCustom: XNNPACK, Eigen) threads itself, which the HLO does not show.
    split = (f"{threads.group(1) if threads else 1} thread(s)" if op == "copy" or (kind and kind.group(1) != "kCustom")
             else "threads of its library")
    passes.append(f"{op} {value} -> {dtype}{found.group(3).split('{')[0]}{' ' + kind.group(1) if kind else ''}, "
                  f"{split}, reads {', '.join(operands)}")
  leaf_bytes = 4 * size
  print(f"{name}: {len(passes)} operations read or write the largest leaf's size {largest} (in any shape), moving "
        f"{moved / leaf_bytes:.2f} times its float32 bytes:")
  print("\n".join("  " + p for p in passes))


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--repeats", type=int, default=7, help="timed rounds (one step of each per round)")
  parser.add_argument("--warmup", type=int, default=2, help="untimed rounds after compilation")
  parser.add_argument("--layers", type=int, default=12, help="encoder layers (12 = BERT-base)")
  parser.add_argument("--only", nargs="*", help="time only these candidates (names as in the table)")
  parser.add_argument("--targets", action="store_true", help="time the rows of TARGETS against their baselines")
  parser.add_argument("--runs", type=int, default=3, help="with --targets: separate runs of every group")
  parser.add_argument("--hlo", metavar="NAME", help="print the passes over memory of NAME's compiled step")
  args = parser.parse_args()
  if args.repeats < 1 or args.warmup < 0 or args.layers < 1 or args.runs < 1:
    parser.error(f"need --repeats >= 1, --warmup >= 0, --layers >= 1, --runs >= 1; got {args.repeats}, "
                 f"{args.warmup}, {args.layers}, {args.runs}")

  if args.only and (args.targets or args.hlo):
    parser.error("--only chooses the candidates of the table; --targets and --hlo choose their own")
  shapes = bert_base_shapes(args.layers)
  grads = random_tree(shapes, jax.random.split(jax.random.PRNGKey(0))[1], 1e-3)
  num_params = sum(leaf.size for leaf in jax.tree.leaves(grads))
  chosen = candidates()
  names = ([args.hlo] if args.hlo else []) + list(args.only or [])
  unknown = sorted(set(names) - set(chosen))
  if unknown:
    parser.error(f"unknown candidate(s) {unknown}; choose from {sorted(chosen)}")
  print(f"BERT-base-shaped tree: {len(shapes)} leaves, {num_params / 1e6:.1f}M float32 params, "
        f"{jax.devices()[0].device_kind} ({jax.default_backend()}), jax {jax.__version__}, "
        f"{args.repeats} timed rounds")
  if args.hlo:
    describe_hlo(args.hlo, shapes, grads)
    return
  if args.targets:
    measure_targets(shapes, grads, args.runs, args.repeats, args.warmup)
    return
  if args.only:
    chosen = {name: chosen[name] for name in chosen if name in args.only}
  timed = time_steps(chosen, shapes, grads, args.repeats, args.warmup)
  medians = {name: found["median_s"] for name, found in timed.items()}
  param_bytes = num_params * 4
  reference = {"same-bytes kernel": "x same-bytes", "optax.adam": "x adam"}
  headers = ["step", "median ms"] + [title for name, title in reference.items() if name in medians]
  headers.append("state bytes / param bytes")
  print("| " + " | ".join(headers) + " |")
  print("|" + "---|" * len(headers))
  for name, median in medians.items():
    cells = [name, f"{median * 1e3:.0f}"]
    cells += [f"{median / medians[ref]:.2f}" for ref in reference if ref in medians]
    cells.append(f"{timed[name]['state_bytes'] / param_bytes:.2f}")
    print("| " + " | ".join(cells) + " |")


if __name__ == "__main__":
  main()
