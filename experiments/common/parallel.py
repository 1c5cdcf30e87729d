"""Data-parallel plumbing for `jax.pmap` drivers: multi-host start-up, replication, batch sharding, RNG.

Layout conventions shared by the drivers:

* the *global batch* (config.batch_size) is split evenly over processes, and each process's part evenly
  over its local devices: a process holds `process_batch_size = global / process_count` rows, which
  `shard_batch` reshapes to `[local_device_count, per_device, ...]` for `pmap`;
* every process computes the same global batch order and takes its own rows (`process_rows`), so the
  examples a run sees do not depend on how many processes or devices it uses;
* dropout keys are derived inside the pmapped step from one replicated key, the step and the *global*
  device index (`device_rng`), so they too are the same for every topology with the same device count.
"""
from __future__ import annotations

import logging
from typing import Any, Optional

import jax
import numpy as np

AXIS_NAME = "batch"


def maybe_initialize_distributed(config) -> None:
  """Calls `jax.distributed.initialize` when `config.distributed` is true; a no-op otherwise.

  Reads `coordinator_address`, `num_processes` and `process_id` from the config when they are set
  (None: let JAX detect them from the cluster environment, e.g. on TPU pods or SLURM). Calling it
  again once JAX is initialised is harmless.
  """
  if not config.get("distributed", False):
    return
  if jax.distributed.is_initialized():
    return
  kwargs = {
      name: config.get(name)
      for name in ("coordinator_address", "num_processes", "process_id")
      if config.get(name) is not None
  }
  logging.info("jax.distributed.initialize(%s)", kwargs)
  jax.distributed.initialize(**kwargs)


def replicate(tree: Any) -> Any:
  """Puts one copy of every leaf on each local device, stacked along a new leading device axis."""
  devices = jax.local_devices()
  # The mesh axis must carry the pmap axis name: with jax 0.10 a pmapped step returns arrays sharded over a
  # mesh axis of that name, and inputs on a differently named mesh make the second step compile again.
  mesh = jax.sharding.Mesh(np.array(devices), (AXIS_NAME,))
  sharding = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec(AXIS_NAME))

  def put(x):
    x = np.asarray(jax.device_get(x))
    return jax.device_put(np.broadcast_to(x, (len(devices),) + x.shape), sharding)

  return jax.tree.map(put, tree)


def unreplicate_to_host(tree: Any) -> Any:
  """The first device's copy of a replicated tree, as host NumPy arrays (for checkpoints and logs)."""
  return jax.device_get(jax.tree.map(lambda x: x.addressable_shards[0].data[0]
                                     if isinstance(x, jax.Array) else x[0], tree))


def process_batch_size(global_batch_size: int) -> int:
  """Rows of the global batch that this process feeds; clear error when the division is not exact."""
  devices = jax.device_count()
  if global_batch_size % devices:
    raise ValueError(
        f"batch_size={global_batch_size} does not divide by the device count {devices} "
        f"({jax.process_count()} process(es) x {jax.local_device_count()} local devices); "
        f"use a multiple of {devices}")
  return global_batch_size // jax.process_count()


def process_rows(global_batch_size: int) -> slice:
  """The slice of global-batch rows that belongs to this process."""
  size = process_batch_size(global_batch_size)
  start = jax.process_index() * size
  return slice(start, start + size)


def shard_batch(batch: Any, local_device_count: Optional[int] = None) -> Any:
  """Reshapes each leaf of a process batch `[rows, ...]` to `[devices, rows // devices, ...]`."""
  devices = local_device_count or jax.local_device_count()

  def shard(x):
    x = np.asarray(x)
    if x.shape[0] % devices:
      raise ValueError(
          f"a batch of {x.shape[0]} rows does not divide by the local device count {devices}; "
          f"use a batch size that is a multiple of {devices * jax.process_count()}")
    return x.reshape((devices, x.shape[0] // devices) + x.shape[1:])

  return jax.tree.map(shard, batch)


def device_rng(key: jax.Array, step: jax.Array, axis_name: str = AXIS_NAME) -> jax.Array:
  """Inside a pmapped function: a key unique to (key, step, global device index), the same on any host."""
  return jax.random.fold_in(jax.random.fold_in(key, step), jax.lax.axis_index(axis_name))


def is_main_process() -> bool:
  """True on the process that writes logs, plots and progress bars."""
  return jax.process_index() == 0
