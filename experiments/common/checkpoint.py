"""Resumable runs: a thin wrapper over Orbax's `CheckpointManager` that never starts fresh by accident.

A checkpoint holds two items under `<workdir>/checkpoints/<step>/`:

* `state`: a pytree of arrays (params, optimizer state, step, RNG key data, ... whatever the driver saves),
  written with `ocp.args.StandardSave` and restored against a template of the same structure;
* `meta`: a JSON dict (data position, the run's `signature`: model and optimizer settings that must match
  for a resume to be meaningful).

`restore_latest` returns None only when the directory holds no checkpoint at all. Anything else that stops
an exact resume — unreadable files, a different tree structure, different shapes or dtypes, a different
signature, an array whose bytes changed since it was saved (`fingerprints`, two checksums per array kept in
`meta`) — raises `CheckpointError` naming the directory, the step and the problem. `latest_meta` reads
only the metadata of the newest checkpoint, to learn a run's settings before building the state template.
"""
from __future__ import annotations

import errno
import json
import logging
import os
import re
import shutil
import sys
from typing import Any, Callable, Mapping, Optional

import jax
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp


# Signature fields added after checkpoints were first written: compared only when the checkpoint recorded
# them, so that an older checkpoint still resumes.
COMPARED_WHEN_SAVED = ("corpus_sha256",)


class CheckpointError(ValueError):
  """A checkpoint exists but cannot be used to resume this run."""


def check_halt_after_steps(halt_after_steps: int, checkpoint_step: int, directory: str) -> None:
  """CheckpointError when a run would resume past the step it is told to halt at (0: no halt)."""
  if halt_after_steps and checkpoint_step > halt_after_steps:
    raise CheckpointError(
        f"halt_after_steps={halt_after_steps} is before checkpoint step {checkpoint_step} in {directory}, "
        f"where this run would resume; give halt_after_steps=0 (run to the end) or >= {checkpoint_step}, "
        "or use a new workdir")


class DiskFull(OSError):
  """The disk filled up while the run wrote a file (errno ENOSPC); the message names the file and the newest
  good checkpoint, where a rerun resumes once there is space."""

  def __str__(self) -> str:
    return self.strerror


_UNFINISHED_SUFFIX = ".orbax-checkpoint-tmp"


def newest_step(directory: str) -> Optional[int]:
  """The newest finished checkpoint's step in `directory` (None: none): Orbax writes a step into a
  temporary folder and gives it its number only once it is complete."""
  steps = [int(name) for name in (os.listdir(directory) if os.path.isdir(directory) else []) if name.isdigit()]
  return max(steps, default=None)


def _newest_text(directory: str) -> str:
  """Where a rerun of the same command resumes."""
  step = newest_step(directory)
  if step is None:
    return f"there is no checkpoint in {directory} yet, so it starts over"
  return f"it resumes from the newest good checkpoint, step {step} in {directory}"


def remove_unfinished_checkpoints(directory: str) -> list[str]:
  """Deletes the temporary folders of checkpoints whose write did not finish; returns their paths."""
  removed = []
  for name in (os.listdir(directory) if os.path.isdir(directory) else []):
    if _UNFINISHED_SUFFIX in name:
      shutil.rmtree(os.path.join(directory, name), ignore_errors=True)
      removed.append(os.path.join(directory, name))
  return removed


_NO_SPACE = re.compile(r"No space left on device|os_error_code='28'|ENOSPC")
# TensorStore's words for the file (then the folder) it failed to write, most precise first.
_FAILED_FILE = (re.compile(r'Failed writing: "([^"]+)"'), re.compile(r'local file "([^"]+)"'))


def disk_full_error(error: BaseException, checkpoint_directory: str,
                    what: Optional[str] = None, where: Optional[str] = None) -> Optional[DiskFull]:
  """A DiskFull naming the file and the newest good checkpoint in `checkpoint_directory` when `error` (or
  an error it was raised from) is a full disk: an OSError with errno ENOSPC, or TensorStore's
  RESOURCE_EXHAUSTED "No space left on device" as Orbax passes it on; None for any other error. `where`:
  the path to name when the error names none."""
  while error is not None:
    if isinstance(error, DiskFull):
      return error
    if isinstance(error, OSError) and error.errno == errno.ENOSPC:
      path = error.filename
      break
    if _NO_SPACE.search(str(error)):
      path = next((match.group(1) for match in (p.search(str(error)) for p in _FAILED_FILE) if match), None)
      break
    error = error.__cause__ or error.__context__
  else:
    return None
  path = path or where
  target = f"{what} ({path})" if what and path else what or path or "a file of the run"
  return DiskFull(errno.ENOSPC, f"Writing {target} failed: no space left on device. "
                                f"Free some space and rerun the same command: {_newest_text(checkpoint_directory)}.",
                  path)


# Position weights of the second checksum, w_i = i * M + 1 (mod 2**32): Knuth's multiplicative-hash
# constant, so that a permutation or a moved block changes it where the plain sum does not.
_POSITION_MULTIPLIER = 2654435761


def _words(leaf: Any, xp) -> Any:
  """The array's elements as uint32 words (xp: numpy or jax.numpy): 32-bit types bit for bit, narrower ones
  widened, 64-bit ones as two words each; flattened in C order."""
  dtype = np.dtype(leaf.dtype)
  if dtype == np.bool_:
    return xp.ravel(leaf).astype(xp.uint32)
  unsigned = {1: np.uint8, 2: np.uint16, 4: np.uint32, 8: np.uint32}[dtype.itemsize]
  if xp is np:
    return np.ascontiguousarray(leaf).view(unsigned).ravel().astype(np.uint32, copy=False)
  return jax.lax.bitcast_convert_type(leaf, unsigned).ravel().astype(np.uint32)


def _checksums(words: Any, xp) -> Any:
  """[sum of the words, sum of word_i * w_i], both modulo 2**32 (uint32 arithmetic wraps on every backend)."""
  positions = xp.arange(words.size, dtype=xp.uint32) * xp.uint32(_POSITION_MULTIPLIER) + xp.uint32(1)
  return xp.stack([xp.sum(words, dtype=xp.uint32), xp.sum(words * positions, dtype=xp.uint32)])


@jax.jit
def _device_checksums(leaves: list) -> list:
  """`_checksums` of arrays that live on devices, computed where they are (sharded ones too): two numbers
  per array come back to the host, not the arrays."""
  return [_checksums(_words(leaf, jnp), jnp) for leaf in leaves]


def fingerprints(tree: Any) -> dict[str, list[int]]:
  """Two 32-bit checksums of every array of `tree`, by key path: the sum of its uint32 words and their sum
  weighted by position, both modulo 2**32 (a changed, swapped or shifted word changes one or both).

  Host arrays are summed on the host, device arrays on their devices (`jax.Array`s, sharded or not): the same
  numbers either way.
  """
  flat = [(path, leaf) for path, leaf in jax.tree_util.tree_flatten_with_path(tree)[0] if hasattr(leaf, "dtype")]
  on_devices = [leaf for _, leaf in flat if isinstance(leaf, jax.Array)]
  device_sums = iter(jax.device_get(_device_checksums(on_devices)) if on_devices else [])
  found = {}  # in the tree's leaf order, which `CheckpointManager` compares by
  for path, leaf in flat:
    if isinstance(leaf, jax.Array):
      sums = next(device_sums)
    else:
      with np.errstate(over="ignore"):
        sums = _checksums(_words(np.asarray(leaf), np), np)
    found[jax.tree_util.keystr(path)] = [int(v) for v in sums]
  return found


def _leaf_description(tree: Any) -> dict[str, tuple]:
  flat, _ = jax.tree_util.tree_flatten_with_path(tree)
  return {jax.tree_util.keystr(path): (tuple(np.shape(leaf)), np.dtype(
              leaf.dtype if hasattr(leaf, "dtype") else np.result_type(leaf)).name)
          for path, leaf in flat}


class CheckpointManager:
  """Saves and restores (state pytree, JSON metadata) pairs at integer steps.

  Args:
    directory: where the step folders go (created if missing).
    max_to_keep: how many of the newest checkpoints to keep.
    async_save: write in a background thread (Orbax's asynchronous checkpointing); `close()` waits.

  Example:
    >>> manager = CheckpointManager("/tmp/run/checkpoints")
    >>> manager.save(10, {"params": params}, {"data_position": 10})
    >>> restored = manager.restore_latest({"params": params})  # (state, meta) or None
  """

  def __init__(self, directory: str, *, max_to_keep: int = 2, async_save: bool = False):
    self.directory = os.path.abspath(directory)
    options = ocp.CheckpointManagerOptions(
        max_to_keep=max_to_keep, create=True, enable_async_checkpointing=async_save)
    self._manager = ocp.CheckpointManager(self.directory, options=options)

  def all_steps(self) -> list[int]:
    """The steps of the checkpoints on disk, oldest first."""
    return sorted(self._manager.all_steps())

  def latest_step(self) -> Optional[int]:
    return self._manager.latest_step()

  def save(self, step: int, state: Any, meta: Mapping[str, Any]) -> None:
    """Writes `state` (arrays) and `meta` (JSON-able) as checkpoint `step`.

    Raises:
      DiskFull: the disk filled up during the write (naming the file and the newest good checkpoint); the
        unfinished step's temporary folder is removed, the earlier checkpoints are untouched.
      CheckpointError: any other failure to write (the same clean-up).
    """
    # A failed write's other writes finish into a closed event loop, as on a failed restore, some while
    # the save is still running: their errors are noise, dropped from before the save, kept after a failure.
    previous_hooks = sys.unraisablehook, sys.excepthook
    _ignore_closed_event_loop_callbacks()
    _ignore_closed_event_loop_errors()
    meta = dict(meta, fingerprints=fingerprints(state))
    try:
      self._manager.save(step, args=ocp.args.Composite(state=ocp.args.StandardSave(state),
                                                       meta=ocp.args.JsonSave(meta)))
    except Exception as error:  # Orbax raises ValueError, OSError, ... from its writer threads
      logging.getLogger("asyncio").addFilter(_drop_unretrieved_task_errors)
      try:
        self._manager.wait_until_finished()  # Orbax's threads may still write into the temporary folder
      except Exception:  # pylint: disable=broad-except  (the same failure again)
        pass
      remove_unfinished_checkpoints(self.directory)
      out_of_space = disk_full_error(error, self.directory, what=f"checkpoint step {step}",
                                     where=os.path.join(self.directory, str(step)))
      if out_of_space is not None:
        raise out_of_space from None
      raise CheckpointError(f"cannot write checkpoint step {step} in {self.directory} "
                            f"({type(error).__name__}: {error}); a rerun of the same command: "
                            f"{_newest_text(self.directory)}") from error
    sys.unraisablehook, sys.excepthook = previous_hooks

  def restore_latest(self, template: Any,
                     signature: Optional[Mapping[str, Any]] = None) -> Optional[tuple[Any, dict]]:
    """The newest checkpoint as (state, meta), or None when there is none.

    Args:
      template: a pytree with the structure, shapes and dtypes the state must have (e.g. a fresh state).
      signature: JSON-able settings that must equal `meta["signature"]` of the checkpoint (those of
        `COMPARED_WHEN_SAVED` only when the checkpoint has them).

    Raises:
      CheckpointError: the checkpoint is unreadable or does not match `template` or `signature`.
    """
    self._check_no_unlisted_steps()
    step = self.latest_step()
    if step is None:
      return None
    where = f"checkpoint step {step} in {self.directory}"
    meta = self._read_meta(step)
    if signature is not None:
      saved = meta.get("signature")
      expected = {k: v for k, v in _json_normalise(signature).items()
                  if k not in COMPARED_WHEN_SAVED or k in (saved or {})}
      if saved != expected:
        differences = sorted(
            k for k in set(expected) | set(saved or {}) if (saved or {}).get(k) != expected.get(k))
        raise CheckpointError(
            f"{where} was written by a different run setup: {', '.join(differences)} differ "
            f"(checkpoint: { {k: (saved or {}).get(k) for k in differences} }, "
            f"this run: { {k: expected.get(k) for k in differences} }). "
            "Use a new workdir or the original settings.")
    # A ShapeDtypeStruct with a sharding (the mesh path's template) restores each shard onto its device.
    abstract = jax.tree.map(
        lambda x: x if isinstance(x, jax.ShapeDtypeStruct) else
        jax.ShapeDtypeStruct(np.shape(x), x.dtype) if hasattr(x, "dtype") else x, template)
    previous_hook = _ignore_closed_event_loop_callbacks()
    try:
      state = self._manager.restore(
          step, args=ocp.args.Composite(state=ocp.args.StandardRestore(abstract)))["state"]
    except Exception as error:
      # The hook stays, and so does a filter on asyncio's log: the reads still in flight keep finishing (or
      # failing, "Task exception was never retrieved") after this error is raised.
      logging.getLogger("asyncio").addFilter(_drop_unretrieved_task_errors)
      raise CheckpointError(
          f"{where}: cannot restore the state ({type(error).__name__}: {error}); the checkpoint is "
          f"corrupt or was written for a different model/optimizer. {self._damaged_remedy(step)}") from error
    sys.unraisablehook = previous_hook
    expected_leaves, restored_leaves = _leaf_description(template), _leaf_description(state)
    if expected_leaves != restored_leaves:
      differences = sorted(
          k for k in set(expected_leaves) | set(restored_leaves)
          if expected_leaves.get(k) != restored_leaves.get(k))
      raise CheckpointError(
          f"{where} does not match this run's state at {differences[:5]} "
          f"(expected {[expected_leaves.get(k) for k in differences[:5]]}, "
          f"found {[restored_leaves.get(k) for k in differences[:5]]})")
    sharded = any(getattr(x, "sharding", None) is not None for x in jax.tree.leaves(template))
    state = state if sharded else jax.device_get(state)
    self._check_fingerprints(step, state, meta)
    return state, meta

  def _check_fingerprints(self, step: int, state: Any, meta: Mapping[str, Any]) -> None:
    """CheckpointError naming the first array whose bytes differ from the fingerprint saved with it, and the
    previous checkpoint a rerun resumes from once the damaged one is moved away (checkpoints written before
    fingerprints existed are not checked)."""
    saved = meta.get("fingerprints")
    if saved is None:
      return
    # Leaf by leaf, in order: a template may spell the same tree with other node types (a dict for a
    # NamedTuple), which changes the key paths but not the leaves; the saved paths name them.
    found = list(fingerprints(state).values())
    damaged = [path for (path, sums), ours in zip(saved.items(), found) if list(sums) != ours]
    if not damaged:
      return
    raise CheckpointError(
        f"checkpoint step {step} in {self.directory} is damaged: the array {damaged[0]} "
        + (f"(and {len(damaged) - 1} more) " if len(damaged) > 1 else "")
        + "does not match the fingerprint saved with it (a disk, copy or transfer error changed its bytes). "
        + self._damaged_remedy(step))

  def _damaged_remedy(self, step: int) -> str:
    """What to do with a damaged checkpoint: move it away; the same command resumes from the one before."""
    folder = os.path.join(self.directory, str(step))
    older = [s for s in self.all_steps() if s < step]
    then = (f"it then resumes from checkpoint step {older[-1]}" if older else
            "it is the only checkpoint, so the run then starts over")
    return f"Move {folder} away (e.g. `mv {folder} {folder}.damaged`) and rerun the same command: {then}."

  def latest_meta(self) -> tuple[int, dict]:
    """(step, meta) of the newest checkpoint, reading only its JSON metadata (not the state).

    For tools that need a run's recorded settings (e.g. the model sizes in `meta["signature"]`) before they
    can build the template that `restore_latest` needs.

    Raises:
      FileNotFoundError: the directory holds no checkpoint.
      CheckpointError: the newest checkpoint's metadata is unreadable.
    """
    self._check_no_unlisted_steps()
    step = self.latest_step()
    if step is None:
      raise FileNotFoundError(f"No checkpoint under {self.directory!r}.")
    return step, self._read_meta(step)

  def _read_meta(self, step: int) -> dict:
    # Naming only `meta` in the Composite makes Orbax read that item alone, not the (possibly large) state.
    try:
      return self._manager.restore(step, args=ocp.args.Composite(meta=ocp.args.JsonRestore()))["meta"]
    except Exception as error:  # Orbax raises many types for unreadable files; report them as one.
      raise CheckpointError(f"checkpoint step {step} in {self.directory}: cannot read its metadata "
                            f"({type(error).__name__}: {error})") from error

  def _check_no_unlisted_steps(self) -> None:
    """A numbered step folder that Orbax does not list is a damaged checkpoint, not an empty directory."""
    if not os.path.isdir(self.directory):
      return
    listed = set(self._manager.reload() or self._manager.all_steps())
    for name in os.listdir(self.directory):
      if name.isdigit() and int(name) not in listed:
        raise CheckpointError(
            f"{os.path.join(self.directory, name)} looks like a checkpoint but Orbax cannot read it "
            "(missing or corrupt metadata); delete it to resume from an older step or start a new workdir")

  def wait_until_finished(self) -> None:
    self._manager.wait_until_finished()

  def close(self) -> None:
    """Waits for pending saves and releases Orbax's resources."""
    self._manager.close()

  def __enter__(self) -> "CheckpointManager":
    return self

  def __exit__(self, *exc_info) -> None:
    self.close()


def _ignore_closed_event_loop_callbacks() -> Callable:
  """Installs a `sys.unraisablehook` that drops "Event loop is closed" errors; returns the previous hook.

  When Orbax's restore fails on a damaged file, it closes its asyncio loop while TensorStore reads are
  still in flight; each read that finishes later calls back into the closed loop, and Python prints every
  such RuntimeError as an unraisable exception, dozens of tracebacks after (and around) the real error.
  Every other unraisable exception still reaches the previous hook.
  """
  previous = sys.unraisablehook

  def hook(unraisable) -> None:
    error = unraisable.exc_value
    if not (isinstance(error, RuntimeError) and str(error) == "Event loop is closed"):
      previous(unraisable)

  sys.unraisablehook = hook
  return previous


def _ignore_closed_event_loop_errors() -> None:
  """Installs a `sys.excepthook` that drops "Event loop is closed" errors, which TensorStore's callbacks
  print through it (without the unraisable-exception header) after a failed write; the rest reach the
  previous hook."""
  previous = sys.excepthook

  def hook(error_type, error, trace) -> None:
    if not (isinstance(error, RuntimeError) and str(error) == "Event loop is closed"):
      previous(error_type, error, trace)

  sys.excepthook = hook


def _drop_unretrieved_task_errors(record: logging.LogRecord) -> bool:
  """A logging filter for asyncio's logger: False (drop) for "Task exception was never retrieved", which the
  other reads of a damaged checkpoint log when they are garbage-collected, after its CheckpointError."""
  return not str(record.msg).startswith("Task exception was never retrieved")


def _json_normalise(value: Mapping[str, Any]) -> dict:
  """The dict as it reads back from JSON (tuples become lists), for comparing signatures."""
  return json.loads(json.dumps(dict(value), default=str))
