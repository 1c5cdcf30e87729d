"""One run per directory: a lock file that names its holder, refuses a second process, and outlives no one.

A run's workdir (and a study's or `reproduce`'s output folder) holds `run.lock` while a process writes there:
a JSON object with the holder's process id, host name and start time. A second process that tries to use
the directory fails at once with `WorkdirInUse`, naming the holder. A lock whose holder is gone is stale
and is taken over with a warning:

* on the same host, the holder's process id no longer runs (it was killed with `kill -9`, or crashed), or
  now belongs to a process that started later;
* on another host (a shared filesystem), the holder stopped refreshing the file: a live holder touches it
  every `HEARTBEAT_S` seconds, and one untouched for `STALE_AFTER_S` belongs to a lost machine.

Multi-process runs (`jax.distributed`) share one workdir: process 0 holds the lock for all of them, and
every process learns whether it got it, so all fail together when it did not.
"""
from __future__ import annotations

import functools
import json
import logging
import os
import socket
import threading
import time
import uuid
from typing import Any, Callable, Optional

import jax
import numpy as np
from jax.experimental import multihost_utils

from experiments.common import checkpoint
from experiments.common import metrics
from experiments.common import parallel

LOCK_FILENAME = "run.lock"
HEARTBEAT_S = 30.0
STALE_AFTER_S = 600.0


class WorkdirInUse(RuntimeError):
  """Another live process holds the directory's lock."""


def _start_ticks(pid: int) -> Optional[int]:
  """When the process started, in clock ticks since boot (Linux's /proc/<pid>/stat); None elsewhere.

  With the pid it tells the lock's holder from a later process that was given the same pid.
  """
  try:
    with open(f"/proc/{pid}/stat") as f:
      return int(f.read().rsplit(")", 1)[1].split()[19])
  except (OSError, IndexError, ValueError):
    return None


def _process_runs(pid: int, start_ticks: Optional[int] = None) -> bool:
  """Whether the process with this id (and, when given, this start time) runs on this host; a zombie,
  already dead, counts as gone, and so does a later process that reuses the pid."""
  if start_ticks is not None and _start_ticks(pid) not in (None, start_ticks):
    return False
  try:
    os.kill(pid, 0)
  except ProcessLookupError:
    return False
  except PermissionError:  # another user's live process
    return True
  try:
    with open(f"/proc/{pid}/stat") as f:
      return f.read().rsplit(")", 1)[1].split()[0] != "Z"
  except (OSError, IndexError):
    return True


def _describe(holder: dict[str, Any]) -> str:
  started = holder.get("start_time")
  started_text = time.strftime("%Y-%m-%d %H:%M:%S %Z", time.localtime(started)) if isinstance(
      started, (int, float)) else "an unknown time"
  return f"process {holder.get('pid')} on host {holder.get('host')!r}, started {started_text}"


class WorkdirLock:
  """Holds `<directory>/run.lock` while in use (a context manager).

  Args:
    directory: the directory to own (created when missing; removed again on release if it was created
      here and is still empty, so a run refused before it wrote anything leaves no trace).
    enabled: whether this process takes the lock (False on processes other than 0 of a multi-process run).
    what: the directory's role in messages ("workdir", "output folder").

  Raises (on entering):
    WorkdirInUse: a live process holds the lock (the message names it and the lock file).
  """

  def __init__(self, directory: str, *, enabled: bool = True, what: str = "workdir"):
    self.directory = os.path.abspath(directory)
    self.path = os.path.join(self.directory, LOCK_FILENAME)
    self.enabled = enabled
    self.what = what
    self._token = None
    self._created_directory = False
    self._stop = threading.Event()
    self._heartbeat: Optional[threading.Thread] = None

  def acquire(self) -> None:
    if not self.enabled or self._token is not None:
      return
    if os.path.exists(self.directory) and not os.path.isdir(self.directory):
      raise ValueError(f"{self.what}={self.directory!r} is a file, not a directory; give a directory")
    try:
      self._lock()
    except OSError as error:
      self._remove_created_directory()
      where = f" (at {error.filename})" if error.filename else ""
      raise ValueError(f"{self.what}={self.directory!r} cannot be used: {error.strerror or error}{where}") from error

  def _lock(self) -> None:
    if not os.path.isdir(self.directory):
      os.makedirs(self.directory)
      self._created_directory = True
    holder = {"pid": os.getpid(), "host": socket.gethostname(), "start_time": time.time(),
              "start_ticks": _start_ticks(os.getpid()), "token": uuid.uuid4().hex}
    while True:
      try:
        descriptor = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
      except FileExistsError:
        self._take_over_if_stale()
        continue
      try:
        with os.fdopen(descriptor, "w") as f:
          json.dump(holder, f)
      except OSError as error:  # e.g. a full disk: leave no half-written lock, and name it
        os.remove(self.path)
        raise OSError(error.errno, error.strerror or str(error), self.path) from error
      break
    self._token = holder["token"]
    self._stop.clear()
    self._heartbeat = threading.Thread(target=self._beat, name=f"lock heartbeat {self.path}", daemon=True)
    self._heartbeat.start()

  def _read_holder(self) -> Optional[dict[str, Any]]:
    """The lock file's holder; {} when it cannot be parsed; None when the file is gone."""
    try:
      with open(self.path) as f:
        text = f.read()
    except FileNotFoundError:
      return None
    try:
      holder = json.loads(text)
    except ValueError:
      holder = None
    return holder if isinstance(holder, dict) else {}

  def _take_over_if_stale(self) -> None:
    """Removes a stale lock (with a warning); raises WorkdirInUse for a live one."""
    holder = self._read_holder()
    if holder is None:  # released between our attempt and this read
      return
    try:
      age = time.time() - os.stat(self.path).st_mtime
    except FileNotFoundError:
      return
    if not holder and age < 5.0:  # another process is writing its lock this instant
      time.sleep(0.1)
      return
    same_host = holder.get("host") == socket.gethostname()
    pid = holder.get("pid")
    if not holder:
      reason = "it is unreadable"
    elif same_host and isinstance(pid, int) and pid != os.getpid() and not _process_runs(
        pid, holder.get("start_ticks")):
      reason = f"{_describe(holder)} no longer runs"
    elif not same_host and age > STALE_AFTER_S:
      reason = f"{_describe(holder)} has not refreshed it for {age:.0f} s (a lost machine)"
    else:
      who = "this process (from another call still running)" if same_host and pid == os.getpid() else (
          _describe(holder))
      raise WorkdirInUse(
          f"{self.what} {self.directory} is in use by {who}: two runs writing one {self.what} mix their "
          f"files. Wait for it to finish, stop it, or give another {self.what}. (Lock file: {self.path}; "
          f"delete it by hand only if that process is surely gone.)")
    # Move the stale file aside under a name of our own, then check we moved the one we judged: another
    # process taking over at the same instant may already have replaced it with its own live lock.
    aside = f"{self.path}.stale.{os.getpid()}.{uuid.uuid4().hex[:8]}"
    try:
      os.rename(self.path, aside)
    except FileNotFoundError:
      return
    with open(aside) as f:
      moved = f.read()
    try:
      moved_holder = json.loads(moved)
    except ValueError:
      moved_holder = {}
    if moved_holder != holder and isinstance(moved_holder, dict) and moved_holder.get("token"):
      try:  # a live lock: put it back (link fails if yet another lock appeared, which then stands)
        os.link(aside, self.path)
      except FileExistsError:
        pass
    else:
      logging.warning("Taking over the stale lock of %s %s: %s", self.what, self.directory, reason)
    os.remove(aside)

  def _beat(self) -> None:
    while not self._stop.wait(HEARTBEAT_S):
      try:
        os.utime(self.path)
      except OSError:
        pass

  def release(self) -> None:
    if self._token is None:
      return
    self._stop.set()
    if self._heartbeat is not None:
      self._heartbeat.join()
    holder = self._read_holder()
    if holder and holder.get("token") == self._token:
      os.remove(self.path)
    self._token = None
    self._remove_created_directory()

  def _remove_created_directory(self) -> None:
    if self._created_directory:
      try:
        os.rmdir(self.directory)  # only if empty: a run refused before it wrote anything leaves no trace
      except OSError:
        pass
      self._created_directory = False

  def __enter__(self) -> "WorkdirLock":
    self.acquire()
    return self

  def __exit__(self, *exc_info) -> None:
    self.release()


def owns_workdir(run: Callable) -> Callable:
  """Decorates a driver's `run(config, workdir, ...)` so that the call holds `workdir`'s lock.

  Process 0 of a multi-process run takes the lock (after `jax.distributed` is initialised, which needs the
  config); every process learns whether it did, so a refused run fails on all of them, not only on one.
  A full disk met anywhere in the call (metrics, config.json, vocabulary) becomes `checkpoint.DiskFull`,
  naming the file and the newest good checkpoint, as a checkpoint write that fills the disk does.
  """
  @functools.wraps(run)
  def locked(config, workdir: str, *args, **kwargs):
    parallel.maybe_initialize_distributed(config)
    lock = WorkdirLock(workdir, enabled=parallel.is_main_process())
    error = None
    try:
      lock.acquire()
    except (WorkdirInUse, ValueError, OSError) as caught:
      error = caught
    if jax.process_count() > 1:
      acquired = multihost_utils.broadcast_one_to_all(np.int32(error is None))
      if error is None and not int(acquired):
        error = WorkdirInUse(f"process 0 could not lock the workdir {os.path.abspath(workdir)}; see its error")
    if error is not None:
      raise error
    with lock:
      try:
        return run(config, workdir, *args, **kwargs)
      except BaseException as failure:
        metrics.close_progress_bars()  # now, so that the error is the last thing printed
        full = checkpoint.disk_full_error(failure, os.path.join(lock.directory, "checkpoints")) if isinstance(
            failure, Exception) else None
        if full is None or full is failure:
          raise
        raise full from None  # a full disk anywhere in the run: say so, and where a rerun resumes
  return locked


def owns_output_folder(run: Callable) -> Callable:
  """Decorates a study's `run(out_dir, ...)` so that the call holds `out_dir`'s lock (one process)."""
  @functools.wraps(run)
  def locked(out_dir: str, *args, **kwargs):
    with WorkdirLock(out_dir, what="output folder"):
      return run(out_dir, *args, **kwargs)
  return locked
