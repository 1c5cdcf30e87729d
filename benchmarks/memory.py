"""Per-device memory of the BERT train step under the mesh path, from the compiled step's `memory_analysis()`.

For each BERT size, optimizer, parameter dtype and mesh shape (data, fsdp) over 8 devices (fake CPU devices
unless the machine has 8), the train step of `experiments.bert.train` is compiled from abstract inputs
(nothing is allocated) at two per-device batches of 128-token sequences. From XLA's per-device analysis:

    arguments = params + optimizer state + batch (the state's part is checked against the arithmetic:
                parameter count x bytes / fsdp for the sharded leaves, whole for the replicated ones)
    peak      = arguments + outputs - aliased (the donated state) + temporaries

Temporaries grow linearly with the batch, so two compiles give peak(b) = fixed + b * per_row, and the
largest per-device batch that fits in 16 GB (a TPU v3 core), 32 GB and 80 GB is floor((M - fixed) / per_row).
The per-row slope (activations) does not depend on the optimizer: it is measured with the first optimizer of
each (size, dtype, mesh) and reused for the others, which are compiled at the smaller batch only.
XLA's CPU analysis is a proxy for the accelerator's (fusion and layouts differ); the parameter and state
bytes are exact.

    python benchmarks/memory.py                          # the README's table (takes about 20 min on 2 CPUs)
    python benchmarks/memory.py --sizes mini --optimizers adamw --dtypes float32   # seconds
"""
from __future__ import annotations

import argparse
import os
import sys

DEVICES = 8
SEQ_LEN = 128
PREDICTIONS = 20
MEMORY_BUDGETS_GB = (16, 32, 80)


def _setup_devices() -> None:
  flag = f"--xla_force_host_platform_device_count={DEVICES}"
  if "jax" not in sys.modules and flag.split("=")[0] not in os.environ.get("XLA_FLAGS", ""):
    os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") + " " + flag).strip()


def measure(size: str, optimizer: str, dtype: str, mesh_shape: tuple[int, int],
            per_device_batch: int) -> dict[str, float]:
  """Per-device bytes of one compiled train step (see the module docstring)."""
  import jax  # pylint: disable=g-import-not-at-top
  import jax.numpy as jnp  # pylint: disable=g-import-not-at-top
  import importlib  # pylint: disable=g-import-not-at-top
  import numpy as np  # pylint: disable=g-import-not-at-top
  from experiments.bert import models, train  # pylint: disable=g-import-not-at-top
  from experiments.common import optimizers, parallel  # pylint: disable=g-import-not-at-top

  config = importlib.import_module(f"experiments.bert.configs.{size}").get_config()
  config.update(optimizer=optimizer, parallelism="mesh", mesh_shape=mesh_shape, max_seq_len=SEQ_LEN,
                max_predictions_per_seq=PREDICTIONS)
  model_config = models.BertConfig(vocab_size=30522, **config.model)
  par = parallel.create(config)
  spec = optimizers.OptimizerSpec.from_config(config, config.num_train_steps)
  steps = train.compiled_steps(model_config, spec.step_key(), par)
  params = jax.tree.map(lambda p: jax.ShapeDtypeStruct(p.shape, jnp.dtype(dtype)),
                        models.abstract_params(model_config, SEQ_LEN))
  opt_state = jax.eval_shape(spec.create().init, params)
  state = train.TrainState(step=jax.ShapeDtypeStruct((), jnp.int32), params=params, opt_state=opt_state,
                           rng=jax.ShapeDtypeStruct((2,), jnp.uint32))
  state = jax.tree.map(lambda x, sharding: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=sharding), state,
                       par.state_shardings(state))
  rows = per_device_batch * DEVICES
  batch_sharding = jax.sharding.NamedSharding(par.mesh, jax.sharding.PartitionSpec(parallel.MESH_AXES))
  batch = {name: jax.ShapeDtypeStruct(shape, dtype_, sharding=batch_sharding) for name, shape, dtype_ in [
      ("input_ids", (rows, SEQ_LEN), jnp.int32), ("token_type_ids", (rows, SEQ_LEN), jnp.int32),
      ("attention_mask", (rows, SEQ_LEN), jnp.int32), ("masked_positions", (rows, PREDICTIONS), jnp.int32),
      ("masked_labels", (rows, PREDICTIONS), jnp.int32), ("masked_weights", (rows, PREDICTIONS), jnp.float32)]}
  compiled = steps.train_step.lower(state, batch).compile()
  analysis = compiled.memory_analysis()

  def per_device_bytes(tree) -> int:
    total = 0
    for leaf in jax.tree.leaves(tree):
      shard = leaf.sharding.shard_shape(leaf.shape)
      total += int(np.prod(shard, dtype=np.int64)) * leaf.dtype.itemsize
    return total

  peak = (analysis.argument_size_in_bytes + analysis.output_size_in_bytes - analysis.alias_size_in_bytes
          + analysis.temp_size_in_bytes)
  num_params = sum(int(np.prod(p.shape)) for p in jax.tree.leaves(params))
  return {"num_params": num_params, "params": per_device_bytes(state.params),
          "opt_state": per_device_bytes(state.opt_state), "batch": per_device_bytes(batch),
          "arguments": analysis.argument_size_in_bytes, "temporaries": analysis.temp_size_in_bytes,
          "peak": peak}


def fitting_batches(small: dict, per_row: float, small_batch: int) -> list[int]:
  fixed = small["peak"] - small_batch * per_row
  return [max(0, int((budget * 1e9 - fixed) // per_row)) if per_row > 0 else -1 for budget in MEMORY_BUDGETS_GB]


def main(argv=None) -> None:
  parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--sizes", default="mini,base,large")
  parser.add_argument("--optimizers", default="adamw,acclip,acclip_ports,spam,zclip")
  parser.add_argument("--dtypes", default="float32,bfloat16")
  parser.add_argument("--meshes", default="8x1,1x8")
  parser.add_argument("--batches", default="4,8", help="the two per-device batches the fit is made from")
  args = parser.parse_args(argv)
  _setup_devices()
  import jax  # pylint: disable=g-import-not-at-top
  if jax.device_count() != DEVICES:
    raise SystemExit(f"memory.py needs {DEVICES} devices (fake CPU devices are set up when jax is not "
                     f"imported yet); it sees {jax.device_count()}")
  small_batch, large_batch = (int(b) for b in args.batches.split(","))
  print(f"jax {jax.__version__} on {jax.devices()[0].platform}, {DEVICES} devices; sequences of {SEQ_LEN} "
        f"tokens, {PREDICTIONS} predictions; per device, GB (1e9 bytes); fit from batches {small_batch} and "
        f"{large_batch} per device")
  print("| size | params | optimizer | dtype | mesh (data, fsdp) | params | opt. state | state arithmetic | "
        "temporaries (batch {0}) | peak (batch {0}) | largest batch in 16 / 32 / 80 GB |".format(small_batch))
  print("|---|---|---|---|---|---|---|---|---|---|---|")
  per_row = {}  # (size, dtype, mesh) -> peak bytes per row of the per-device batch
  for size in args.sizes.split(","):
    for optimizer in args.optimizers.split(","):
      for dtype in args.dtypes.split(","):
        for mesh in args.meshes.split(","):
          mesh_shape = tuple(int(n) for n in mesh.split("x"))
          small = measure(size, optimizer, dtype, mesh_shape, small_batch)
          if (size, dtype, mesh) not in per_row:
            large = measure(size, optimizer, dtype, mesh_shape, large_batch)
            per_row[size, dtype, mesh] = (large["peak"] - small["peak"]) / (large_batch - small_batch)
          fits = fitting_batches(small, per_row[size, dtype, mesh], small_batch)
          gb = lambda n: f"{n / 1e9:.3f}"  # pylint: disable=unnecessary-lambda-assignment
          print(f"| {size} | {small['num_params'] / 1e6:.1f}M | {optimizer} | {dtype} | {mesh_shape} | "
                f"{gb(small['params'])} | {gb(small['opt_state'])} | {gb(small['params'] + small['opt_state'])} "
                f"of {gb(small['arguments'] - small['batch'])} | {gb(small['temporaries'])} | "
                f"{gb(small['peak'])} | {' / '.join(map(str, fits))} |", flush=True)


if __name__ == "__main__":
  main()
