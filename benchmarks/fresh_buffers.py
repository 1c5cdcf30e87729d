"""What one pass over a large array costs on this backend: reading it, writing it in place, writing a new one.

Usage (from the repository root):
  python benchmarks/fresh_buffers.py [--rows 30522] [--cols 768] [--rounds 9] [--calls 5]

The array is BERT-base's largest leaf (the word embeddings, 30522 x 768 float32, 94 MB) by default. Three
compiled steps, timed round-robin, median over rounds:

* read: the array's dot product with itself (one read, a scalar out);
* write in place: x * 2 with x donated, so XLA writes the result into x's buffer (one read, one write);
* write a new buffer: x * 2 without donation (one read, one write into memory the step allocates).

An optimizer step whose compiled program materialises a full-size temporary (a copy kept for a select, a
clip bound, a mask to count) pays the third row for it, not the second. With the process's minor page
faults per call (`getrusage`, where the OS has it), the table shows whether the difference is the kernel
mapping the new buffer's pages on first touch: docs/benchmarks.md has the measured rows and what
`GLIBC_TUNABLES=glibc.malloc.hugetlb=1` (transparent huge pages for glibc's large allocations) changes.
"""
from __future__ import annotations

import argparse
import os
import statistics
import time

import jax
import jax.numpy as jnp

try:
  import resource
except ImportError:  # not on Windows: the page-fault column is left empty
  resource = None


def _minor_faults() -> int | None:
  return resource.getrusage(resource.RUSAGE_SELF).ru_minflt if resource else None


def measure(rows: int, cols: int, rounds: int, calls: int) -> dict[str, tuple[float, float | None]]:
  """name -> (median seconds per call, minor page faults per call or None), timed round-robin."""
  x = jax.random.normal(jax.random.key(0), (rows, cols), jnp.float32)
  donated = x * 1.0
  read = jax.jit(lambda a: jnp.vdot(a.ravel(), a.ravel()))
  in_place = jax.jit(lambda a: a * 2.0, donate_argnums=0)
  new_buffer = jax.jit(lambda a: a * 2.0)

  def run_read():
    read(x).block_until_ready()

  def run_in_place():
    nonlocal donated
    donated = in_place(donated)
    donated.block_until_ready()

  def run_new_buffer():
    new_buffer(x).block_until_ready()  # the result is dropped at once, as a step's temporaries are

  steps = {"read": run_read, "write in place (donated)": run_in_place, "write a new buffer": run_new_buffer}
  for step in steps.values():  # compile and touch everything once
    step()
  seconds = {name: [] for name in steps}
  faults = {name: [] for name in steps}
  for _ in range(rounds):
    for name, step in steps.items():
      faults_before, start = _minor_faults(), time.perf_counter()
      for _ in range(calls):
        step()
      seconds[name].append((time.perf_counter() - start) / calls)
      if faults_before is not None:
        faults[name].append((_minor_faults() - faults_before) / calls)
  return {name: (statistics.median(seconds[name]), statistics.median(faults[name]) if faults[name] else None)
          for name in steps}


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  parser.add_argument("--rows", type=int, default=30522)
  parser.add_argument("--cols", type=int, default=768)
  parser.add_argument("--rounds", type=int, default=9)
  parser.add_argument("--calls", type=int, default=5, help="calls per round")
  args = parser.parse_args()
  results = measure(args.rows, args.cols, args.rounds, args.calls)
  megabytes = args.rows * args.cols * 4 / 1e6
  print(f"float32 [{args.rows},{args.cols}] ({megabytes:.0f} MB), {jax.devices()[0].platform} "
        f"({jax.devices()[0].device_kind}), jax {jax.__version__}, GLIBC_TUNABLES="
        f"{os.environ.get('GLIBC_TUNABLES', '(unset)')}, median of {args.rounds} rounds of {args.calls} calls")
  print("| pass | ms | against a read | minor page faults per call |")
  print("|---|---:|---:|---:|")
  read_seconds = results["read"][0]
  for name, (seconds, faults) in results.items():
    fault_text = "n/a" if faults is None else f"{faults:,.0f}"
    print(f"| {name} | {seconds * 1e3:.2f} | {seconds / read_seconds:.1f}x | {fault_text} |")


if __name__ == "__main__":
  main()
