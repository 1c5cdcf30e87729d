"""What a careless user gets: two runs in one workdir, a full disk, damaged files, a wrong setting.

Each case is a clear error that names its cause (or a warning, where going on is safe), and nothing on
disk is lost or half-changed. docs/reliability.md says the same in words.
"""
import json
import logging
import os
import socket
import subprocess
import sys
import time

import pytest

from experiments.common import workdir_lock

REPO = os.path.join(os.path.dirname(__file__), "..")


def files_under(directory):
  """Every file below `directory` with its contents, to show that a refused call changed nothing."""
  contents = {}
  for root, _, names in os.walk(directory):
    for name in names:
      path = os.path.join(root, name)
      with open(path, "rb") as f:
        contents[os.path.relpath(path, directory)] = f.read()
  return contents


# ------------------------------------------------------------------------------ 1. two runs in one workdir
_HOLD_LOCK = """
import sys, time
from experiments.common import workdir_lock
with workdir_lock.WorkdirLock(sys.argv[1]):
  print("holding", flush=True)
  time.sleep(120)
"""


@pytest.fixture
def lock_held_by_another_process(tmp_path):
  """A live process on this host that holds `<tmp_path>/run`'s lock; yields (directory, its pid)."""
  directory = tmp_path / "run"
  holder = subprocess.Popen([sys.executable, "-c", _HOLD_LOCK, str(directory)], cwd=REPO,
                            stdout=subprocess.PIPE, text=True)
  assert holder.stdout.readline().strip() == "holding"
  yield str(directory), holder.pid
  holder.kill()
  holder.wait()


def test_a_second_process_is_refused_with_the_holder_named(lock_held_by_another_process):
  directory, pid = lock_held_by_another_process
  before = files_under(directory)
  with pytest.raises(workdir_lock.WorkdirInUse) as refused:
    with workdir_lock.WorkdirLock(directory):
      pass
  message = str(refused.value)
  assert f"process {pid} on host {socket.gethostname()!r}, started {time.strftime('%Y-%m-%d')}" in message
  assert os.path.join(directory, workdir_lock.LOCK_FILENAME) in message
  assert files_under(directory) == before  # the holder's lock is untouched


def test_a_driver_refuses_a_held_workdir_before_writing_anything(lock_held_by_another_process):
  from experiments.bert import train  # pylint: disable=g-import-not-at-top
  from test_bert import micro_config  # pylint: disable=g-import-not-at-top
  directory, pid = lock_held_by_another_process
  before = files_under(directory)
  with pytest.raises(workdir_lock.WorkdirInUse, match=f"in use by process {pid}"):
    train.train_and_evaluate(micro_config(), directory)
  assert files_under(directory) == before


@pytest.mark.parametrize("study", ["comparison", "reproduce"])
def test_output_folders_of_studies_are_locked_too(lock_held_by_another_process, study):
  from experiments import reproduce  # pylint: disable=g-import-not-at-top
  from experiments.comparison import study as comparison  # pylint: disable=g-import-not-at-top
  from experiments.comparison.configs import quick  # pylint: disable=g-import-not-at-top
  directory, pid = lock_held_by_another_process
  with pytest.raises(workdir_lock.WorkdirInUse, match=f"output folder .* in use by process {pid}"):
    if study == "comparison":
      comparison.run(directory, quick.get_config())
    else:
      reproduce.run(directory, parts=[])


def _dead_pid():
  process = subprocess.Popen([sys.executable, "-c", "pass"])
  process.wait()
  return process.pid


def _write_lock(directory, **holder):
  os.makedirs(directory, exist_ok=True)
  path = os.path.join(directory, workdir_lock.LOCK_FILENAME)
  with open(path, "w") as f:
    json.dump({"pid": 1, "host": socket.gethostname(), "start_time": time.time(), "token": "old", **holder}, f)
  return path


def test_the_lock_of_a_killed_process_is_taken_over_with_a_warning(tmp_path, caplog):
  directory = str(tmp_path / "run")
  pid = _dead_pid()
  path = _write_lock(directory, pid=pid)
  with caplog.at_level(logging.WARNING):
    with workdir_lock.WorkdirLock(directory):
      assert json.load(open(path))["pid"] == os.getpid()
  assert f"stale lock" in caplog.text and f"process {pid} on host" in caplog.text and "no longer runs" in caplog.text
  assert not os.path.exists(path)  # released at the end
  assert os.listdir(directory) == []


def test_another_hosts_lock_is_stale_only_once_it_stops_being_refreshed(tmp_path, caplog):
  directory = str(tmp_path / "run")
  path = _write_lock(directory, host="lost-machine", pid=os.getpid())
  with pytest.raises(workdir_lock.WorkdirInUse, match="in use by process .* on host 'lost-machine'"):
    workdir_lock.WorkdirLock(directory).acquire()
  old = time.time() - workdir_lock.STALE_AFTER_S - 1
  os.utime(path, (old, old))
  with caplog.at_level(logging.WARNING):
    with workdir_lock.WorkdirLock(directory):
      pass
  assert "a lost machine" in caplog.text


def test_a_live_holder_keeps_its_lock_fresh(tmp_path, monkeypatch):
  monkeypatch.setattr(workdir_lock, "HEARTBEAT_S", 0.05)
  directory = str(tmp_path / "run")
  with workdir_lock.WorkdirLock(directory) as lock:
    old = time.time() - 1000
    os.utime(lock.path, (old, old))
    time.sleep(0.3)
    assert time.time() - os.stat(lock.path).st_mtime < 10


def test_a_refused_run_leaves_no_folder_it_created(tmp_path):
  directory = tmp_path / "new" / "run"
  with pytest.raises(RuntimeError, match="boom"):
    with workdir_lock.WorkdirLock(str(directory)):
      raise RuntimeError("boom")
  assert not directory.exists()
