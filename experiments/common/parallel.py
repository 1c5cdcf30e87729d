"""How the drivers run on many devices: multi-host start-up, the pmap and mesh parallelisms, batches, RNG.

`create(config)` gives the run's parallelism (`config.parallelism`): `PmapParallelism` (the default) or
`MeshParallelism` (`jax.jit` over a ("data", "fsdp") mesh, `config.mesh_shape`, with params and optimizer
state sharded by `fsdp_spec`). Both give the same numbers; only memory per device and speed differ.

Layout conventions shared by the drivers:

* the *global batch* (config.batch_size) is split evenly over processes, and each process's part evenly
  over its local devices: a process holds `process_batch_size = global / process_count` rows, which
  `shard_batch` reshapes to `[local_device_count, per_device, ...]` for `pmap`;
* every process computes the same global batch order and takes its own rows (`process_rows`), so the
  examples a run sees do not depend on how many processes or devices it uses;
* dropout keys are derived inside the per-device step from one replicated key, the step and the *global*
  device index (`device_rng`), so they too are the same for every topology with the same device count, under
  pmap and under a mesh (whose device i, in row-major order, holds the rows device i holds under pmap).
"""
from __future__ import annotations

import functools
import logging
from typing import Any, Callable, Optional, Protocol

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


def device_rng(key: jax.Array, step: jax.Array, axis_name: Any = AXIS_NAME) -> jax.Array:
  """Inside a per-device step: a key unique to (key, step, global device index), the same on any host.

  `axis_name` is the pmap axis or the mesh's axes (`MESH_AXES`, whose index is the row-major device index).
  """
  return jax.random.fold_in(jax.random.fold_in(key, step), jax.lax.axis_index(axis_name))


def is_main_process() -> bool:
  """True on the process that writes logs, plots and progress bars."""
  return jax.process_index() == 0


# ---- the two ways to run a step on many devices ---------------------------------------------------------
#
# A driver writes its step as per-device code: `grads_fn(state, batch, *, axis_name)` sees this device's rows
# of the global batch, reduces over `axis_name` with `lax.psum`/`pmean`, and takes its dropout key from
# `device_rng(key, step, axis_name)`; `update_fn(state, grads, aux)` applies the optimizer. A `Parallelism`
# places states and batches, compiles the steps and fetches values to the host, so the training loop never
# asks which one it has.

MESH_AXES = ("data", "fsdp")
# Leaves with fewer elements stay replicated under FSDP: sharding them saves little and costs a collective.
FSDP_MIN_SIZE = 1024


def fsdp_spec(shape: tuple[int, ...], fsdp_size: int) -> jax.sharding.PartitionSpec:
  """The one FSDP rule, for params and optimizer state alike: the largest dimension that the fsdp axis size
  divides is split over "fsdp" (the first of equal ones); a leaf with fewer than `FSDP_MIN_SIZE` elements, or
  with no such dimension, is replicated. An optimizer state leaf shaped like a param gets the param's
  sharding, because the rule reads the shape only."""
  if fsdp_size == 1 or int(np.prod(shape, dtype=np.int64)) < FSDP_MIN_SIZE:
    return jax.sharding.PartitionSpec()
  candidates = [d for d, size in enumerate(shape) if size % fsdp_size == 0]
  if not candidates:
    return jax.sharding.PartitionSpec()
  dim = max(candidates, key=lambda d: (shape[d], -d))
  return jax.sharding.PartitionSpec(*(["fsdp" if d == dim else None for d in range(len(shape))]))


class PmapParallelism:
  """`jax.pmap` over the local devices (the default): states replicated, batches `[devices, rows, ...]`."""

  name = "pmap"
  axis_name = AXIS_NAME

  def place_state(self, state: Any) -> Any:
    return replicate(state)

  def place_batch(self, rows: Any) -> Any:
    return shard_batch(rows)

  def compile_train_step(self, grads_fn: Callable, update_fn: Callable) -> Callable:
    def step(state, batch):
      return update_fn(state, *grads_fn(state, batch, axis_name=self.axis_name))
    return jax.pmap(step, axis_name=self.axis_name, donate_argnums=(0,))

  def compile_eval_step(self, eval_fn: Callable) -> Callable:
    return jax.pmap(functools.partial(eval_fn, axis_name=self.axis_name), axis_name=self.axis_name)

  def compile_row_step(self, row_fn: Callable) -> Callable:
    """`row_fn(x, batch, *, axis_name)` whose outputs are per row (not summed over devices)."""
    return self.compile_eval_step(row_fn)

  def place_common_batch(self, rows: Any) -> Any:
    """A batch that every process holds whole (e.g. SQuAD's dev windows), split over the local devices."""
    return shard_batch(rows)

  def rows_to_host(self, tree: Any) -> Any:
    """A `compile_row_step` output as host arrays `[rows, ...]`."""
    return jax.tree.map(lambda x: np.asarray(jax.device_get(x)).reshape((-1,) + x.shape[2:]), tree)

  @functools.lru_cache(maxsize=None)
  def on_devices(self, fn: Callable) -> Callable:
    """`fn` of placed values (no batch, no collectives), run where they live (compiled once per fn)."""
    return jax.pmap(fn)

  def to_host(self, tree: Any) -> Any:
    """Host NumPy values of the first local device's copy."""
    return jax.tree.map(lambda x: np.asarray(x.addressable_shards[0].data[0]), tree)

  def checkpoint_state(self, state: Any) -> Any:
    """What a checkpoint stores: one host copy."""
    return self.to_host(state)

  def restore_template(self, host_state: Any) -> Any:
    return host_state


class MeshParallelism:
  """`jax.jit` over a `("data", "fsdp")` mesh of all devices (`config.parallelism = "mesh"`).

  The global batch is sharded over both axes (device i of the mesh, in row-major order, holds the rows that
  device i holds under pmap, and gets the same dropout key); params and optimizer state are sharded over
  "fsdp" by `fsdp_spec`. A train step runs `grads_fn` per device under `jax.shard_map` (the params are
  all-gathered into it, the gradients leave it summed over all devices) and `update_fn` on the sharded
  state, whose sharding it keeps. So with mesh shape (n, 1) it is data parallelism, and with (1, n) the
  state of each device is 1/n of the whole.

  Args:
    mesh_shape: (data, fsdp) sizes whose product is the device count; None: all devices on "data".
  """

  name = "mesh"
  axis_name = MESH_AXES

  def __init__(self, mesh_shape: tuple[int, int] | None = None):
    devices = jax.device_count()
    mesh_shape = tuple(mesh_shape) if mesh_shape else (devices, 1)
    if len(mesh_shape) != 2 or min(mesh_shape) < 1 or int(np.prod(mesh_shape)) != devices:
      raise ValueError(f"mesh_shape={mesh_shape} must be two sizes (data, fsdp) whose product is the device "
                       f"count {devices}")
    self.mesh = jax.make_mesh(mesh_shape, MESH_AXES,
                              axis_types=(jax.sharding.AxisType.Auto,) * 2)
    self.fsdp_size = mesh_shape[1]
    self._batch_sharding = jax.sharding.NamedSharding(self.mesh, jax.sharding.PartitionSpec(MESH_AXES))
    self._replicated = jax.sharding.NamedSharding(self.mesh, jax.sharding.PartitionSpec())

  def state_shardings(self, state: Any) -> Any:
    """The `fsdp_spec` sharding of every leaf (arrays, or their shapes under tracing)."""
    return jax.tree.map(
        lambda x: jax.sharding.NamedSharding(self.mesh, fsdp_spec(np.shape(x), self.fsdp_size)), state)

  def place_state(self, state: Any) -> Any:
    def put(x, sharding):
      if isinstance(x, jax.Array):  # a reshard; a no-op for an array Orbax restored into this sharding
        return jax.device_put(x, sharding)
      host = np.asarray(x)  # every process holds the whole value: each takes its devices' shards
      return jax.make_array_from_callback(host.shape, sharding, lambda index: host[index])
    return jax.tree.map(put, state, self.state_shardings(state))

  def place_batch(self, rows: Any) -> Any:
    """This process's rows (`process_rows`) as one global array sharded over the mesh."""
    return jax.tree.map(
        lambda x: jax.make_array_from_process_local_data(self._batch_sharding, np.asarray(x)), rows)

  def _per_device(self, fn: Callable) -> Callable:
    """fn(x, batch) run on each device's rows (`jax.shard_map`): x replicated in, results replicated out."""
    specs = (jax.sharding.PartitionSpec(), jax.sharding.PartitionSpec(MESH_AXES))
    return jax.shard_map(functools.partial(fn, axis_name=self.axis_name), mesh=self.mesh, in_specs=specs,
                         out_specs=jax.sharding.PartitionSpec(), check_vma=False)

  def compile_train_step(self, grads_fn: Callable, update_fn: Callable) -> Callable:
    per_device = self._per_device(grads_fn)

    def step(state, batch):
      # Only what the gradients read enters the per-device part (not the optimizer state).
      grads, aux = per_device(state.replace(opt_state=None), batch)
      new_state, metrics = update_fn(state, grads, aux)
      return jax.lax.with_sharding_constraint(new_state, self.state_shardings(new_state)), metrics

    return jax.jit(step, donate_argnums=(0,))

  def compile_eval_step(self, eval_fn: Callable) -> Callable:
    return jax.jit(self._per_device(eval_fn))

  def compile_row_step(self, row_fn: Callable) -> Callable:
    """`row_fn(x, batch, *, axis_name)` whose outputs are per row (not summed over devices)."""
    return jax.jit(jax.shard_map(
        functools.partial(row_fn, axis_name=self.axis_name), mesh=self.mesh,
        in_specs=(jax.sharding.PartitionSpec(), jax.sharding.PartitionSpec(MESH_AXES)),
        out_specs=jax.sharding.PartitionSpec(MESH_AXES), check_vma=False))

  def place_common_batch(self, rows: Any) -> Any:
    """A batch that every process holds whole (e.g. SQuAD's dev windows), as one array over the mesh."""
    return jax.tree.map(lambda x: jax.make_array_from_callback(
        np.shape(x), self._batch_sharding, lambda index, x=np.asarray(x): x[index]), rows)

  def rows_to_host(self, tree: Any) -> Any:
    """A `compile_row_step` output as host arrays `[rows, ...]`."""
    return self.to_host(tree)

  @functools.lru_cache(maxsize=None)
  def on_devices(self, fn: Callable) -> Callable:
    return jax.jit(fn, out_shardings=self._replicated)

  def to_host(self, tree: Any) -> Any:
    """Host NumPy values; a sharded array is gathered from every process."""
    from jax.experimental import multihost_utils  # pylint: disable=g-import-not-at-top

    def fetch(x):
      if x.is_fully_replicated:
        return np.asarray(x.addressable_shards[0].data)
      return np.asarray(x) if x.is_fully_addressable else multihost_utils.process_allgather(x, tiled=True)
    return jax.tree.map(fetch, tree)

  def checkpoint_state(self, state: Any) -> Any:
    """What a checkpoint stores: the sharded arrays themselves (Orbax writes each shard where it lives)."""
    return state

  def restore_template(self, host_state: Any) -> Any:
    """Shapes, dtypes and target shardings: Orbax restores each shard straight onto its device."""
    return jax.tree.map(lambda x, sharding: jax.ShapeDtypeStruct(np.shape(x), x.dtype, sharding=sharding),
                        host_state, self.state_shardings(host_state))


class Parallelism(Protocol):
  """What the training loop and the drivers need of a parallelism (`PmapParallelism`, `MeshParallelism`).

  States and batches go from the host to the devices (`place_state`, `place_batch`, `place_common_batch`)
  and back (`to_host`, `rows_to_host`); steps are compiled for the devices (`compile_train_step`,
  `compile_eval_step`, `compile_row_step`, `on_devices`); checkpoints are written from `checkpoint_state`
  and restored into `restore_template`.
  """

  def place_state(self, state: Any) -> Any: ...
  def place_batch(self, rows: Any) -> Any: ...
  def place_common_batch(self, rows: Any) -> Any: ...
  def compile_train_step(self, grads_fn: Callable, update_fn: Callable) -> Callable: ...
  def compile_eval_step(self, eval_fn: Callable) -> Callable: ...
  def compile_row_step(self, row_fn: Callable) -> Callable: ...
  def rows_to_host(self, tree: Any) -> Any: ...
  def on_devices(self, fn: Callable) -> Callable: ...
  def to_host(self, tree: Any) -> Any: ...
  def checkpoint_state(self, state: Any) -> Any: ...
  def restore_template(self, host_state: Any) -> Any: ...


def create(config) -> Parallelism:
  """The parallelism `config.parallelism` names ("pmap" or "mesh", with `config.mesh_shape`).

  One object per setting and process, so that the drivers' step caches (keyed by it) compile once.
  """
  mesh_shape = config.get("mesh_shape")
  return _create(config.get("parallelism", "pmap"), tuple(mesh_shape) if mesh_shape else None)


@functools.lru_cache(maxsize=None)
def _create(name: str, mesh_shape: tuple[int, int] | None) -> Parallelism:
  if name == "pmap":
    return PmapParallelism()
  if name == "mesh":
    return MeshParallelism(mesh_shape)
  raise ValueError(f"parallelism={name!r} must be 'pmap' or 'mesh'")
