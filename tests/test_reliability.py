"""What a careless user gets: two runs in one workdir, a full disk, damaged files, a wrong setting.

Each case is a clear error that names its cause (or a warning, where going on is safe), and nothing on
disk is lost or half-changed. docs/reliability.md says the same in words.
"""
import json
import logging
import os
import re
import socket
import subprocess
import sys
import time

import jax.numpy as jnp
import numpy as np
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
import sys
from experiments.common import workdir_lock
with workdir_lock.WorkdirLock(sys.argv[1]):
  print("holding", flush=True)
  sys.stdin.read()  # holds the lock until the test closes its stdin (or kills it)
"""


@pytest.fixture
def lock_held_by_another_process(tmp_path):
  """A live process on this host that holds `<tmp_path>/run`'s lock; yields (directory, its pid)."""
  directory = tmp_path / "run"
  holder = subprocess.Popen([sys.executable, "-c", _HOLD_LOCK, str(directory)], cwd=REPO,
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
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


def test_a_lock_whose_pid_now_belongs_to_a_later_process_is_stale(lock_held_by_another_process, tmp_path,
                                                                   caplog):
  _, live_pid = lock_held_by_another_process
  directory = str(tmp_path / "other")
  with open(f"/proc/{live_pid}/stat") as f:
    live_start = int(f.read().rsplit(")", 1)[1].split()[19])
  _write_lock(directory, pid=live_pid, start_ticks=live_start - 1)  # the holder started before: not it
  with caplog.at_level(logging.WARNING):
    with workdir_lock.WorkdirLock(directory):
      pass
  assert "no longer runs" in caplog.text
  _write_lock(directory, pid=live_pid, start_ticks=live_start)
  with pytest.raises(workdir_lock.WorkdirInUse, match=f"in use by process {live_pid}"):
    workdir_lock.WorkdirLock(directory).acquire()


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
  import threading  # pylint: disable=g-import-not-at-top
  monkeypatch.setattr(workdir_lock, "HEARTBEAT_S", 0.05)
  refreshed, utime = threading.Event(), os.utime

  def touch(path, *args, **kwargs):
    utime(path, *args, **kwargs)
    if not args and not kwargs:  # the heartbeat's touch (the test's own call passes times)
      refreshed.set()

  monkeypatch.setattr(workdir_lock.os, "utime", touch)
  directory = str(tmp_path / "run")
  with workdir_lock.WorkdirLock(directory) as lock:
    old = time.time() - 1000
    os.utime(lock.path, (old, old))
    refreshed.clear()
    assert refreshed.wait(timeout=30), "the heartbeat never touched the lock"
    assert time.time() - os.stat(lock.path).st_mtime < 10


def test_a_lock_that_cannot_be_written_leaves_nothing_behind(tmp_path, monkeypatch):
  import errno  # pylint: disable=g-import-not-at-top

  def full_disk(*args, **kwargs):
    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

  monkeypatch.setattr(workdir_lock.json, "dump", full_disk)
  directory = tmp_path / "new"
  lock = workdir_lock.WorkdirLock(str(directory))
  with pytest.raises(ValueError, match=re.escape(f"workdir='{directory}' cannot be used: No space left on device "
                                                 f"(at {lock.path})")):
    lock.acquire()
  assert not directory.exists()


@pytest.mark.parametrize("writer", ["text", "bytes", "rows_csv", "flat_csv", "copy", "figure"])
def test_every_writer_names_the_file_a_full_disk_stopped_and_leaves_no_tmp(tmp_path, monkeypatch, writer):
  """Each kind of file the project writes (text and JSON, the CSV tables, copies of vocabularies, figures, the
  exported weights through the same `write_file`) goes through one writer, which names the file."""
  import errno  # pylint: disable=g-import-not-at-top
  from experiments.common import figures, results  # pylint: disable=g-import-not-at-top
  import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top
  source = tmp_path / "vocab.txt"
  source.write_text("[PAD]\n")
  path = str(tmp_path / f"out.{'png' if writer == 'figure' else 'txt'}")
  figure = plt.figure()
  write = {"text": lambda: results.write_text(path, "x"),
           "bytes": lambda: results.write_bytes(path, b"\x00\x01"),
           "rows_csv": lambda: results.write_rows_csv(path, [{"a": 1}], ["a"]),
           "flat_csv": lambda: results.write_flat_csv(path, {"a": 1.0}),
           "copy": lambda: results.copy_file(str(source), path),
           "figure": lambda: figures.save_figure(figure, path)}[writer]

  def full_disk(*args, **kwargs):
    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

  monkeypatch.setattr(results.os, "replace", full_disk)  # the disk fills as the whole file is put in place
  with pytest.raises(OSError, match="No space left on device") as raised:
    write()
  assert raised.value.filename == path and sorted(os.listdir(tmp_path)) == ["vocab.txt"]
  monkeypatch.undo()
  write()
  plt.close(figure)
  assert os.path.getsize(path) > 0 and sorted(os.listdir(tmp_path)) == sorted(["vocab.txt", os.path.basename(path)])


def test_no_module_of_the_experiments_opens_a_file_for_writing_but_the_one_writer():
  """Every file goes through `results.write_file` (atomic, naming the file when the disk fills) or
  `results.append_text`; a worker's output.log (the reproduction's stdout, not a result) is the one stream and
  the workdir lock (created exclusively, `os.open`) the one other file. Checked on the source: any `open(` with
  a writing mode, `os.open`, `Path.write_text`/`write_bytes`, `np.save`, `json.dump`/`pickle.dump` to a file."""
  import re  # pylint: disable=g-import-not-at-top
  root = os.path.join(os.path.dirname(__file__), "..", "experiments")
  writes = re.compile(r"""\bopen\(.*["'](w|wb|a|ab|x|w\+|r\+)["']|\bos\.open\(|\.write_(text|bytes)\(|"""
                      r"""\bnp\.save[z]?\(|\b(json|pickle)\.dump\(""")
  found = []
  for folder, _, names in os.walk(root):
    for name in names:
      if name.endswith(".py"):
        path = os.path.join(folder, name)
        with open(path, encoding="utf-8") as f:
          found += [os.path.relpath(path, root) for line in f if writes.search(line.split("#")[0])
                    and not re.search(r"\b(results|results_lib)\.write_(text|bytes)\(", line)]
  # write_text's, write_bytes' and append_text's own opens, the worker's log, the lock's creation and its JSON
  assert sorted(found) == (["common/results.py"] * 3 + ["common/workdir_lock.py"] * 2 + ["reproduce.py"]), found


def test_a_refused_run_leaves_no_folder_it_created(tmp_path):
  directory = tmp_path / "new" / "run"
  with pytest.raises(RuntimeError, match="boom"):
    with workdir_lock.WorkdirLock(str(directory)):
      raise RuntimeError("boom")
  assert not directory.exists()


# ------------------------------------------------------------------------------------------ 3. damaged files
@pytest.fixture(scope="module")
def halted_bert_run(tmp_path_factory):
  """A micro BERT run halted after 3 of 6 steps (checkpoint at 3), as a user's interrupted run."""
  from experiments.bert import train  # pylint: disable=g-import-not-at-top
  from test_bert import micro_config  # pylint: disable=g-import-not-at-top
  workdir = str(tmp_path_factory.mktemp("halted") / "run")
  train.train_and_evaluate(micro_config(halt_after_steps=3), workdir)
  return workdir


def _copy_run(source, tmp_path):
  import shutil  # pylint: disable=g-import-not-at-top
  workdir = str(tmp_path / "run")
  shutil.copytree(source, workdir)
  return workdir


def test_a_torn_last_metrics_line_is_dropped_with_a_warning_and_the_rerun_goes_on(halted_bert_run, tmp_path,
                                                                                  caplog):
  from experiments.bert import train  # pylint: disable=g-import-not-at-top
  from experiments.common import metrics as metrics_lib  # pylint: disable=g-import-not-at-top
  from test_bert import micro_config  # pylint: disable=g-import-not-at-top
  workdir = _copy_run(halted_bert_run, tmp_path)
  path = os.path.join(workdir, metrics_lib.METRICS_FILENAME)
  intact = open(path).read()
  with open(path, "a") as f:
    f.write('{"step": 4, "train_lo')  # the crash came in the middle of this write
  with caplog.at_level(logging.WARNING):
    again = train.train_and_evaluate(micro_config(halt_after_steps=3), workdir)
  assert again["steps"] == 3
  assert f"{path}, line {intact.count(chr(10)) + 1}: a partial last line" in caplog.text
  assert open(path).read() == intact


@pytest.mark.parametrize("damage, problem", [
    (b'{"step": 1, "train_loss": 6.2}\n{"step": 2, "train_lo\n', "line 2: not valid JSON"),
    (b'{"step": 1, "train_loss": 6.2}\n\xff\xfe\n', "line 2: bytes that are not UTF-8 text"),
    (b'{"step": 1, "train_loss": 6.2}\n{"loss": 3}\n', "line 2: not a metrics record"),
])
def test_a_damaged_metrics_line_before_the_last_is_an_error_that_names_it(tmp_path, damage, problem):
  from experiments.common import metrics as metrics_lib  # pylint: disable=g-import-not-at-top
  from experiments.common import results  # pylint: disable=g-import-not-at-top
  path = tmp_path / metrics_lib.METRICS_FILENAME
  path.write_bytes(damage + b'{"step": 3, "train_loss": 6.0}\n')
  with pytest.raises(results.DamagedFileError, match=f"{path}, {problem}.*Delete that line"):
    metrics_lib.read_metrics(str(path))


def test_a_rerun_refused_for_a_damaged_metrics_file_changes_no_file(halted_bert_run, tmp_path):
  from experiments.bert import train  # pylint: disable=g-import-not-at-top
  from experiments.common import metrics as metrics_lib  # pylint: disable=g-import-not-at-top
  from experiments.common import results  # pylint: disable=g-import-not-at-top
  from test_bert import micro_config  # pylint: disable=g-import-not-at-top
  workdir = _copy_run(halted_bert_run, tmp_path)
  path = os.path.join(workdir, metrics_lib.METRICS_FILENAME)
  lines = open(path).read().splitlines(keepends=True)
  open(path, "w").write("".join(lines[:1] + ["garbage\n"] + lines[1:]))
  before = files_under(workdir)
  with pytest.raises(results.DamagedFileError, match="line 2: not valid JSON"):
    train.train_and_evaluate(micro_config(num_train_steps=6), workdir)
  assert files_under(workdir) == before


def test_a_rerun_that_would_resume_past_its_halt_is_refused_and_changes_no_file(halted_bert_run, tmp_path):
  from experiments.bert import train  # pylint: disable=g-import-not-at-top
  from experiments.common import checkpoint  # pylint: disable=g-import-not-at-top
  from test_bert import micro_config  # pylint: disable=g-import-not-at-top
  workdir = _copy_run(halted_bert_run, tmp_path)
  before = files_under(workdir)
  with pytest.raises(checkpoint.CheckpointError, match="halt_after_steps=2 is before checkpoint step 3"):
    train.train_and_evaluate(micro_config(halt_after_steps=2), workdir)
  assert files_under(workdir) == before


DAMAGED_JSON = [
    (b'{"config": {"seed": 0}, "final": {"eval_lo', "line 1: not valid JSON"),
    (b"", "line 1: it is empty"),
    (b'{"config": {},\n "final": \xff}', "line 2: bytes that are not UTF-8 text"),
    (b'{"config": {}}', "no 'final', 'wall_s' at its top level"),
]


@pytest.mark.parametrize("damage, problem", DAMAGED_JSON)
def test_a_damaged_run_result_of_the_comparison_names_the_file_and_what_to_do(tmp_path, damage, problem):
  from experiments.common import results  # pylint: disable=g-import-not-at-top
  from experiments.comparison import study as comparison  # pylint: disable=g-import-not-at-top
  from experiments.comparison.configs import quick  # pylint: disable=g-import-not-at-top
  settings = comparison.ComparisonSettings.from_config(quick.get_config())
  path = tmp_path / "runs" / "adam" / "lr0.001_seed0" / comparison.RUN_RESULT_FILENAME
  path.parent.mkdir(parents=True)
  path.write_bytes(damage)
  with pytest.raises(results.DamagedFileError, match=f"{path}(, |: ){problem}.*Delete it to redo that run"):
    comparison.pretrain(settings, str(tmp_path), "adam", 0.001, 0)


@pytest.mark.parametrize("damage, problem", DAMAGED_JSON[:3] + [(b"[1, 2]", "no 'configs', 'parts'")])
def test_a_damaged_results_json_names_the_file_in_report_only_mode(tmp_path, damage, problem):
  from experiments import reproduce  # pylint: disable=g-import-not-at-top
  from experiments.common import results  # pylint: disable=g-import-not-at-top
  path = tmp_path / "results.json"
  path.write_bytes(damage)
  with pytest.raises(results.DamagedFileError, match=f"{path}(, |: ){problem}.*Rerun the parts"):
    reproduce.run(str(tmp_path), parts=[])


def test_a_stored_summary_that_disagrees_with_its_values_is_an_error(tmp_path):
  from experiments import reproduce  # pylint: disable=g-import-not-at-top
  from experiments.common import results  # pylint: disable=g-import-not-at-top
  stats = results.seed_statistics([5.528, 5.55, 5.573])
  path = tmp_path / "results.json"
  results.write_json(str(path), {"configs": {}, "parts": {"bert": {"summary": {"optimizers": {
      "acclip": {"eval_loss": dict(stats, mean=1.234)}}}}}})
  with pytest.raises(results.DamagedFileError,
                     match=(rf"{path}: parts.bert.summary.optimizers.acclip.eval_loss: the stored mean 1.234 "
                            r"disagrees with its own values \[5.528, 5.55, 5.573\] \(mean 5.55")):
    reproduce.run(str(tmp_path), parts=[])
  results.write_json(str(path), {"values": [1.0, float("nan")], **results.seed_statistics([1.0, float("nan")])})
  assert results.read_json(str(path))["mean"] == "nan"  # a diverged seed's NaN agrees with itself


# ---------------------------------------------------------------------- 4. every setting checked up front
# (field as the user writes it, a bad value, what the error says). Each driver's table covers every field
# of its config but those in its NOT_CHECKED_UP_FRONT, which say why.
# The loop's and the optimizer's fields, shared by every driver (an optimizer-specific field is given with an
# optimizer that reads it).
LOOP_AND_OPTIMIZER_BAD_SETTINGS = [
    ("optimizer", "adamax", "optimizer='adamax' is not one of"),
    ("learning_rate", -1e-3, "learning_rate=-0.001 must be a finite number >= 0"),
    ("warmup_steps", -1, "warmup_steps=-1 must be >= 0"),
    ("learning_rate_decay", "step", "learning_rate_decay='step' is not one of"),
    ("final_learning_rate_scale", -1.0, "final_learning_rate_scale=-1.0 must be a finite number >= 0"),
    ("weight_decay", float("inf"), "weight_decay=inf must be a finite number >= 0"),
    ("weight_decay_mode", "l2", "weight_decay_mode='l2' is not one of"),
    ("grad_clip_norm", -1.0, "grad_clip_norm=-1.0 must be a finite number >= 0"),
    ("b1", -0.5, r"b1=-0.5 is refused by optimizer 'adamw': b1=-0.5 must lie in \[0, 1\)", dict(optimizer="adamw")),
    ("b2", 1.5, r"b2=1.5 is refused by optimizer 'adamw'", dict(optimizer="adamw")),
    ("eps", -1e-6, "eps=-1e-06 is refused by optimizer 'adamw': eps=-1e-06 must be a finite number > 0",
     dict(optimizer="adamw")),
    ("alpha", 0.0, "alpha=0.0 is refused by optimizer 'acclip': alpha=0.0 must lie in \\(0, inf\\)",
     dict(optimizer="acclip")),
    ("b2", 1.0, "b2=1.0 is refused by optimizer 'acclip'", dict(optimizer="acclip")),
    ("clip_threshold", -1.0, "clip_threshold=-1.0 is refused by optimizer 'gclip': max_norm=-1.0 must be > 0",
     dict(optimizer="gclip")),
    ("momentum", 1.5, r"momentum=1.5 is refused by optimizer 'sgd': momentum=1.5 must lie in \[0, 1\)",
     dict(optimizer="sgd")),
    # Out of range whichever optimizer runs, also one that does not read the field.
    ("clip_threshold", -5.0, r"clip_threshold=-5.0 is out of range \(optimizer 'gclip', which reads it, refuses "
     r"it: max_norm=-5.0 must be > 0\), whichever optimizer runs", dict(optimizer="adamw")),
    ("b2", 1.5, r"b2=1.5 is out of range .* whichever optimizer runs", dict(optimizer="sgd")),
    ("qk_clip_threshold", 0.0, r"qk_clip_threshold=0.0 is refused by optimizer 'adamw_qkclip': qk_clip_threshold=0.0 "
     "must be a finite number > 0", dict(optimizer="adamw_qkclip")),
    ("seed", -1, r"seed=-1 must lie in \[0, 2\*\*32\)"),
    ("log_every_steps", 0, "log_every_steps=0 must be >= 1"),
    ("eval_every_steps", -1, "eval_every_steps=-1 must be >= 0"),
    ("checkpoint_every_steps", -1, "checkpoint_every_steps=-1 must be >= 0"),
    ("max_checkpoints_to_keep", 0, "max_checkpoints_to_keep=0 must be >= 1"),
    ("halt_after_steps", -2, "halt_after_steps=-2 must be >= 0"),
    ("batch_size", 6, "batch_size=6 does not divide by the device count 4"),
    ("eval_batch_size", 0, "eval_batch_size=0 must be >= 1"),
    ("parallelism", "tpu", "parallelism='tpu' must be 'pmap' or 'mesh'"),
    ("mesh_shape", (3, 1), r"mesh_shape=\(3, 1\) must be two sizes", dict(parallelism="mesh")),
]
# Fields no value of which is checked up front, and why.
LOOP_AND_OPTIMIZER_NOT_CHECKED_UP_FRONT = {
    "bias_correction", "nesterov", "save_checkpoints", "stop_on_nonfinite", "tensorboard", "plot",
    "distributed",  # booleans: the config's types refuse anything else
    "coordinator_address", "num_processes", "process_id",  # checked by jax.distributed.initialize
}
BERT_BAD_SETTINGS = LOOP_AND_OPTIMIZER_BAD_SETTINGS + [
    ("model.hidden_size", 0, "model.hidden_size=0 must be >= 1"),
    ("model.num_layers", 0, "model.num_layers=0 must be >= 1"),
    ("model.num_heads", 3, "model.hidden_size=32 must be divisible by model.num_heads=3"),
    ("model.intermediate_size", 0, "model.intermediate_size=0 must be >= 1"),
    ("model.max_position_embeddings", 16, "max_seq_len=32 exceeds model.max_position_embeddings=16"),
    ("model.type_vocab_size", 0, "model.type_vocab_size=0 must be >= 1"),
    ("model.dropout_rate", 1.5, r"model.dropout_rate=1.5 must lie in \[0, 1\)"),
    ("model.attention_dropout_rate", -0.1, r"model.attention_dropout_rate=-0.1 must lie in \[0, 1\)"),
    ("model.dtype", "float17", "model.dtype='float17' is not a floating-point dtype"),
    ("max_documents", -5, r"max_documents=-5 must be >= 0 \(0: all\)"),
    ("max_train_sequences", -5, r"max_train_sequences=-5 must be >= 0 \(0: all\)"),
    ("vocab_file", "/no/such/vocab.txt", "vocab_file='/no/such/vocab.txt' does not exist"),
    ("init_from", "/no/such/workdir", "No pre-training checkpoint under '/no/such/workdir/checkpoints'"),
    ("vocab_size", 3, "vocab_size=3 must exceed the 5 special tokens"),
    ("max_seq_len", 2, r"max_seq_len=2 must be >= 3"),
    ("mask_prob", 0.0, r"mask_prob=0.0 must lie in \(0, 1\]"),
    ("max_predictions_per_seq", 0, "max_predictions_per_seq=0 must be >= 1"),
    ("eval_fraction", 1.0, r"eval_fraction=1.0 must lie in \(0, 1\)"),
    ("validation_fraction", -0.1, r"validation_fraction=-0.1 must lie in \[0, 1\)"),
    ("max_eval_sequences", -1, r"max_eval_sequences=-1 must be >= 0 \(0: all\)"),
    ("warmup_steps", 7, r"warmup_steps=7 must lie in \[0, total_steps=6\]"),
    ("num_train_steps", 0, "num_train_steps=0 must be >= 1"),
]
BERT_NOT_CHECKED_UP_FRONT = LOOP_AND_OPTIMIZER_NOT_CHECKED_UP_FRONT | {
    "corpus", "hf_config", "hf_data_files", "hf_split", "hf_text_field",  # checked as the corpus is read,
    # which fails before anything is written
    "lowercase", "static_masking",  # booleans
}


RESNET_BAD_SETTINGS = LOOP_AND_OPTIMIZER_BAD_SETTINGS + [
    ("model", "resnet7", "model='resnet7' is not one of resnet18"),
    ("num_filters", 0, "num_filters=0 must be >= 1"),
    ("dtype", "float17", "dtype='float17' is not a floating-point dtype"),
    ("dataset", "mnist", "dataset='mnist' is not one of"),
    ("image_size", 0, "image_size=0 must be >= 1"),
    ("max_train_examples", -1, r"max_train_examples=-1 must be >= 0 \(0: all\)"),
    ("max_eval_examples", -1, r"max_eval_examples=-1 must be >= 0 \(0: all\)"),
    ("base_learning_rate", -0.1, "base_learning_rate=-0.1 must be a finite number >= 0"),
    ("warmup_epochs", -1.0, "warmup_epochs=-1.0 must be a finite number >= 0"),
    ("num_epochs", float("nan"), "num_epochs=nan must be a finite number >= 0"),
    ("num_train_steps", -1, "num_train_steps=-1, num_epochs=0.0: the run must have at least one step"),
]
RESNET_NOT_CHECKED_UP_FRONT = LOOP_AND_OPTIMIZER_NOT_CHECKED_UP_FRONT | {
    "data_dir",  # searched as the data is read, which fails before anything is written
    "small_images", "allow_digits_fallback", "augment",  # booleans
}


SQUAD_BAD_SETTINGS = LOOP_AND_OPTIMIZER_BAD_SETTINGS + [
    ("train_file", "", "Set config.train_file"),
    ("dev_file", "/no/such/dev-v1.1.json", "dev_file='/no/such/dev-v1.1.json' does not exist"),
    ("vocab_file", "/no/such/vocab.txt", "vocab_file='/no/such/vocab.txt' does not exist"),
    ("model.hidden_size", 0, "model.hidden_size=0 must be >= 1"),
    ("model.num_layers", 0, "model.num_layers=0 must be >= 1"),
    ("model.num_heads", 3, "model.hidden_size=128 must be divisible by model.num_heads=3"),
    ("model.intermediate_size", 0, "model.intermediate_size=0 must be >= 1"),
    ("model.max_position_embeddings", 0, "model.max_position_embeddings=0 must be >= 1"),
    ("model.type_vocab_size", 0, "model.type_vocab_size=0 must be >= 1"),
    ("model.dropout_rate", 1.5, r"model.dropout_rate=1.5 must lie in \[0, 1\)"),
    ("model.attention_dropout_rate", -0.1, r"model.attention_dropout_rate=-0.1 must lie in \[0, 1\)"),
    ("model.dtype", "float17", "model.dtype='float17' is not a floating-point dtype"),
    ("max_seq_len", 10, "max_seq_len=10 leaves no room for context after a question of max_query_len=16"),
    ("doc_stride", 0, "max_query_len=16 and doc_stride=0 must be >= 1"),
    ("max_query_len", 0, "max_query_len=0 and doc_stride=16 must be >= 1"),
    ("max_answer_length", 0, "max_answer_length=0 must be >= 1"),
    ("warmup_fraction", 1.5, r"warmup_fraction=1.5 must lie in \[0, 1\]"),
    ("num_epochs", float("nan"), "num_epochs=nan must be a finite number >= 0"),
    ("num_train_steps", 0, "num_train_steps=0 and num_epochs=0.0: set one of them > 0", dict(num_epochs=0.0)),
]
SQUAD_NOT_CHECKED_UP_FRONT = LOOP_AND_OPTIMIZER_NOT_CHECKED_UP_FRONT | {
    "pretrained_workdir",  # read (vocabulary, checkpoint) before the SQuAD files, failing before anything
    # is written in the workdir
    "lowercase",  # a boolean
}


def _squad_config(**overrides):
  from experiments.squad.configs import tiny  # pylint: disable=g-import-not-at-top
  config = tiny.get_config()
  squad_file = os.path.join(REPO, "tests", "data", "squad_v1_tiny.json")
  config.update(train_file=squad_file, dev_file=squad_file, **overrides)
  return config


def _bert_config(**overrides):
  from test_bert import micro_config  # pylint: disable=g-import-not-at-top
  return micro_config(**overrides)


def _resnet_config(**overrides):
  from experiments.resnet.configs import tiny  # pylint: disable=g-import-not-at-top
  config = tiny.get_config()
  config.update(allow_digits_fallback=False, data_dir="/no/such/data", **overrides)
  return config


DRIVERS = {  # name: (a good config with overrides, the table, the fields it need not cover)
    "bert": (_bert_config, BERT_BAD_SETTINGS, BERT_NOT_CHECKED_UP_FRONT),
    "resnet": (_resnet_config, RESNET_BAD_SETTINGS, RESNET_NOT_CHECKED_UP_FRONT),
    "squad": (_squad_config, SQUAD_BAD_SETTINGS, SQUAD_NOT_CHECKED_UP_FRONT),
}


def _config_fields(config, prefix=""):
  fields = set()
  for name, value in config.items():
    fields |= _config_fields(value, f"{prefix}{name}.") if hasattr(value, "items") else {prefix + name}
  return fields


@pytest.mark.parametrize("driver", DRIVERS)
def test_the_table_covers_every_field_of_the_drivers_config(driver):
  make_config, table, not_checked = DRIVERS[driver]
  assert {row[0] for row in table} | not_checked == _config_fields(make_config())


def _with_field(config, field, value):
  *parents, name = field.split(".")
  node = config
  for parent in parents:
    node = node[parent]
  node[name] = value
  return config


def _train_and_evaluate(driver):
  import importlib  # pylint: disable=g-import-not-at-top
  module = importlib.import_module(f"experiments.{driver}.train")
  return module.finetune if driver == "squad" else module.train_and_evaluate


@pytest.mark.parametrize("driver, row", [(driver, row) for driver, (_, table, _) in DRIVERS.items()
                                         for row in table],
                         ids=lambda value: value if isinstance(value, str) else f"{value[0]}={value[1]}")
def test_every_setting_is_checked_before_any_data_is_read(tmp_path, driver, row):
  import importlib  # pylint: disable=g-import-not-at-top
  make_config, _, _ = DRIVERS[driver]
  field, value, message, *others = row
  # What every check shares (JAX's start-up, tracing the model) is paid here, so the timing is the check's.
  importlib.import_module(f"experiments.{driver}.train").check_config(make_config())
  config = _with_field(make_config(**(others[0] if others else {})), field, value)
  if driver == "bert":
    config.corpus = str(tmp_path / "corpus_never_read")
  workdir = tmp_path / "run"
  start = time.perf_counter()
  with pytest.raises((ValueError, FileNotFoundError), match=message):
    _train_and_evaluate(driver)(config, str(workdir))
  assert time.perf_counter() - start < 5.0
  assert not workdir.exists()  # nothing written, not even the folder


# -------------------------------------------------------------------------------------------- 2. full disk
# What Orbax raises when TensorStore meets a full disk (seen on a 500 kB tmpfs), after it has begun the
# step's temporary folder.
_FULL_DISK_SCRIPT = r"""
import os, sys
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp
import tqdm
from experiments.common import checkpoint, workdir_lock

def full_disk_save(self, step, *args, **kwargs):
  folder = os.path.join(str(self.directory), f"{step}.orbax-checkpoint-tmp", "state.orbax-checkpoint-tmp", "d")
  os.makedirs(folder)
  open(os.path.join(folder, "8d2b03a3"), "wb").write(b"half a checkpoint")
  raise ValueError(
      'RESOURCE_EXHAUSTED: Error writing "params.w/0" in OCDBT database at local file "' + folder + '/": '
      'Failed writing: "' + folder + '/8d2b03a3": Failed to write 97133 bytes to file 14: No space left on '
      "device [os_error_code='28']")

@workdir_lock.owns_workdir
def run(config, workdir):
  bar = tqdm.tqdm(total=2, desc="train")
  manager = checkpoint.CheckpointManager(os.path.join(workdir, "checkpoints"))
  manager.save(1, {"w": np.ones(3, np.float32)}, {"data_position": 1})
  bar.update(1)
  ocp.CheckpointManager.save = full_disk_save
  manager.save(2, {"w": np.ones(3, np.float32)}, {"data_position": 2})

import ml_collections
run(ml_collections.ConfigDict(), sys.argv[1])
"""


def test_a_full_disk_at_a_checkpoint_ends_with_one_line_naming_the_file_and_the_newest_good_checkpoint(tmp_path):
  from experiments.common import checkpoint  # pylint: disable=g-import-not-at-top
  workdir = tmp_path / "run"
  process = subprocess.run([sys.executable, "-c", _FULL_DISK_SCRIPT, str(workdir)], capture_output=True,
                           text=True, timeout=120, cwd=REPO, env={**os.environ, "JAX_PLATFORMS": "cpu"})
  assert process.returncode == 1
  last_line = process.stderr.strip().splitlines()[-1]
  folder = workdir / "checkpoints" / "2.orbax-checkpoint-tmp" / "state.orbax-checkpoint-tmp" / "d"
  assert last_line == (
      f"experiments.common.checkpoint.DiskFull: Writing checkpoint step 2 ({folder}/8d2b03a3) failed: no "
      "space left on device. Free some space and rerun the same command: it resumes from the newest good "
      f"checkpoint, step 1 in {workdir / 'checkpoints'}.")
  assert sorted(os.listdir(workdir / "checkpoints")) == ["1"]  # no *.orbax-checkpoint-tmp left behind
  with checkpoint.CheckpointManager(str(workdir / "checkpoints")) as manager:
    import numpy as np  # pylint: disable=g-import-not-at-top
    state, meta = manager.restore_latest({"w": np.zeros(3, np.float32)})
  assert meta["data_position"] == 1 and state["w"].tolist() == [1.0, 1.0, 1.0]


def _flip_bytes_in_the_data_files(step_folder, count=400):
  """Damages a checkpoint as a bad disk or copy would: bytes flipped in the middle of each of its large data
  files (Orbax may keep a superseded copy of an array's chunk in one of them, which no restore reads)."""
  import glob  # pylint: disable=g-import-not-at-top
  files = [f for f in glob.glob(os.path.join(step_folder, "state", "**", "d", "*"), recursive=True)]
  largest = max(os.path.getsize(f) for f in files)
  for path in (f for f in files if os.path.getsize(f) > largest // 4):
    data = bytearray(open(path, "rb").read())
    middle = len(data) // 2
    for index in range(middle, min(middle + count, len(data))):
      data[index] ^= 0xFF
    with open(path, "wb") as f:
      f.write(bytes(data))


def test_fingerprints_are_the_same_on_the_host_and_on_sharded_devices():
  import jax  # pylint: disable=g-import-not-at-top
  from jax.sharding import NamedSharding, PartitionSpec  # pylint: disable=g-import-not-at-top
  from experiments.common import checkpoint  # pylint: disable=g-import-not-at-top
  rng = np.random.default_rng(0)
  tree = {"w": rng.normal(size=(8, 6)).astype(np.float32), "h": rng.normal(size=8).astype(jnp.bfloat16),
          "step": np.int32(9), "key": np.array([3, 4], np.uint32), "flag": np.array([True, False])}
  mesh = jax.make_mesh((4,), ("fsdp",))
  on_devices = dict(jax.tree.map(jax.numpy.asarray, tree), w=jax.device_put(tree["w"], NamedSharding(
      mesh, PartitionSpec("fsdp", None))))
  assert checkpoint.fingerprints(tree) == checkpoint.fingerprints(on_devices)
  changed = dict(tree, w=tree["w"].copy())
  changed["w"][[2, 5]] = changed["w"][[5, 2]]  # two rows swapped: the plain sum stays, the weighted one not
  found = checkpoint.fingerprints(changed)
  assert found["['w']"][0] == checkpoint.fingerprints(tree)["['w']"][0]
  assert found["['w']"] != checkpoint.fingerprints(tree)["['w']"] and found["['h']"] == checkpoint.fingerprints(tree)["['h']"]


def _change_a_saved_fingerprint(step_folder):
  """Damages a checkpoint in a way its bytes still decode: as if one array's bytes had changed after its
  fingerprint was taken (the fingerprint saved with it changed instead)."""
  path = os.path.join(step_folder, "meta", "metadata")
  meta = json.load(open(path))
  first = next(iter(meta["fingerprints"]))
  meta["fingerprints"][first] = [value + 1 for value in meta["fingerprints"][first]]
  with open(path, "w") as f:
    json.dump(meta, f)


@pytest.mark.parametrize("parallelism, damage", [
    (dict(), "fingerprint"), (dict(parallelism="mesh", mesh_shape=(2, 2)), "fingerprint"), (dict(), "bytes"),
    (dict(parallelism="mesh", mesh_shape=(2, 2)), "bytes")])
def test_a_damaged_checkpoint_is_an_error_naming_the_array_and_the_previous_checkpoint(tmp_path, parallelism, damage):
  """Not a divergence: the damaged step and array are named; moved away, the previous one resumes the run."""
  from experiments.bert import train  # pylint: disable=g-import-not-at-top
  from experiments.common import checkpoint  # pylint: disable=g-import-not-at-top
  from test_bert import micro_config  # pylint: disable=g-import-not-at-top
  written = tmp_path / "written"
  train.train_and_evaluate(micro_config(checkpoint_every_steps=2, halt_after_steps=4, **parallelism),
                           str(written / "run"))
  # A copy, as a resumed run is a new process: this one's TensorStore cache still holds the written bytes.
  workdir = _copy_run(str(written / "run"), tmp_path)
  folder = os.path.join(workdir, "checkpoints", "4")
  (_flip_bytes_in_the_data_files if damage == "bytes" else _change_a_saved_fingerprint)(folder)
  with pytest.raises(checkpoint.CheckpointError) as raised:
    train.train_and_evaluate(micro_config(checkpoint_every_steps=2, **parallelism), workdir)
  message = str(raised.value)
  # The fingerprint catches bytes that still decode (on either path, the arrays as restored there);
  # TensorStore's own checks, bytes that no longer do.
  found = ("is damaged: the array \\[" if damage == "fingerprint" else
           "(is damaged: the array \\[|: cannot restore the state)")
  folder_text = re.escape(os.path.join(workdir, "checkpoints"))
  assert re.search(rf"checkpoint step 4 in {folder_text} ?{found}", message), message
  assert f"Move {folder} away" in message and "it then resumes from checkpoint step 2" in message
  os.rename(folder, folder + ".damaged")
  result = train.train_and_evaluate(micro_config(checkpoint_every_steps=2, **parallelism), workdir)
  assert result["steps"] == 6 and not result["diverged"]


_CLI_PROGRAM = ("import sys\n"
                "from experiments.common import cli, training_loop\n"
                "def train(config, workdir):\n"
                "  if config.seed == 7:\n"
                "    raise training_loop.Preempted(workdir, 5, 4)\n"
                "  return {'steps': 1}\n"
                "cli.run(train, workdir_help='', config_help='')\n")


@pytest.mark.parametrize("flags, status, last_line", [
    (["--config.learnin_rate=0.1"], 1, "Error: --config.learnin_rate: the config has no field 'learnin_rate'. "
                                       'Did you mean "learning_rate" instead of "learnin_rate"?'),
    (["--config.optimizer=sgd", "--config.b2=0.99"], 1,
     "Error: --config.b2=0.99 is not read by optimizer 'sgd' (it reads momentum, nesterov): drop it, or choose an "
     "optimizer that reads it (adam, adamw, acclip, acclip_ports, lamb, zclip, adagc, autoclip, spam, stable_spam, "
     "skip_step_on_spikes, muon, adamw_qkclip, muon_qkclip)"),
    (["--config.optimizer=adamw", "--config.alpha=3"], 1,
     "Error: --config.alpha=3.0 is not read by optimizer 'adamw' (it reads b1, b2, eps): drop it, or choose an "
     "optimizer that reads it (acclip, acclip_ports)"),
    (["--config.optimizer=acclip", "--config.alpha=1.5"], 0, None),
    (["--config.seed=7"], 75, None),  # preempted: its own exit status, so that a scheduler can requeue it
])
def test_the_command_line_refuses_a_setting_in_one_line_and_a_preemption_has_its_own_status(tmp_path, flags,
                                                                                            status, last_line):
  config_file = os.path.join(REPO, "experiments", "bert", "configs", "tiny.py")
  process = subprocess.run([sys.executable, "-c", _CLI_PROGRAM, f"--config={config_file}",
                            f"--workdir={tmp_path}"] + flags, capture_output=True, text=True, timeout=120, cwd=REPO,
                           env={**os.environ, "JAX_PLATFORMS": "cpu"})
  assert process.returncode == status, process.stderr[-2000:]
  if last_line is not None:
    assert process.stderr.strip().splitlines()[-1] == last_line
    assert "Traceback" not in process.stderr


def test_a_source_whose_extra_is_not_installed_names_the_extra(monkeypatch):
  from experiments.bert import input_pipeline  # pylint: disable=g-import-not-at-top
  from experiments.resnet import input_pipeline as resnet_input  # pylint: disable=g-import-not-at-top
  monkeypatch.setitem(sys.modules, "datasets", None)  # as if not installed: importing it raises ImportError
  with pytest.raises(ImportError, match=r"corpus='hf:wikitext' reads .* pip install -e \"\.\[hf\]\""):
    input_pipeline.load_documents("hf:wikitext")
  monkeypatch.setitem(sys.modules, "sklearn", None)
  monkeypatch.setitem(sys.modules, "sklearn.datasets", None)
  with pytest.raises(ImportError, match=r"scikit-learn, which is not installed: pip install -e \"\.\[digits\]\""):
    resnet_input._load_digits()  # pylint: disable=protected-access


class _Crash(Exception):
  """Stands for a kill -9: the process stops at once, nothing after it runs."""


def test_a_checkpoint_is_never_newer_than_the_metrics_on_disk(tmp_path, monkeypatch):
  from experiments.bert import train  # pylint: disable=g-import-not-at-top
  from experiments.common import checkpoint  # pylint: disable=g-import-not-at-top
  from experiments.common import metrics as metrics_lib  # pylint: disable=g-import-not-at-top
  from test_bert import micro_config  # pylint: disable=g-import-not-at-top
  save = checkpoint.CheckpointManager.save

  def save_then_crash(self, step, state, meta):
    save(self, step, state, meta)
    if step == 4:
      raise _Crash()

  monkeypatch.setattr(checkpoint.CheckpointManager, "save", save_then_crash)
  workdir = str(tmp_path / "run")
  config = micro_config(checkpoint_every_steps=2, log_every_steps=5)
  with pytest.raises(_Crash):
    train.train_and_evaluate(config, workdir)
  records = metrics_lib.read_metrics(os.path.join(workdir, metrics_lib.METRICS_FILENAME))
  assert sorted({r["step"] for r in records if "train_loss" in r}) == [1, 2, 3, 4]
  monkeypatch.setattr(checkpoint.CheckpointManager, "save", save)
  train.train_and_evaluate(config, workdir)  # resumes after checkpoint 4: the log has every step once
  steps = [r["step"] for r in metrics_lib.read_metrics(os.path.join(workdir, metrics_lib.METRICS_FILENAME))
           if "train_loss" in r]
  assert steps == [1, 2, 3, 4, 5, 6]


def test_a_deleted_metrics_file_of_a_run_with_checkpoints_is_a_warning_that_counts_the_lost_steps(
    halted_bert_run, tmp_path, caplog):
  from experiments.bert import train  # pylint: disable=g-import-not-at-top
  from experiments.common import metrics as metrics_lib  # pylint: disable=g-import-not-at-top
  from test_bert import micro_config  # pylint: disable=g-import-not-at-top
  workdir = _copy_run(halted_bert_run, tmp_path)
  path = os.path.join(workdir, metrics_lib.METRICS_FILENAME)
  os.remove(path)
  with caplog.at_level(logging.WARNING):
    train.train_and_evaluate(micro_config(), workdir)
  assert f"{path} holds 0 of the 3 steps before the checkpoint it resumes from (step 3): the log lacks 3 steps" in (
      caplog.text)


@pytest.mark.parametrize("writer", ["write_text", "append_text"])
def test_a_write_that_fails_names_its_file_and_leaves_no_temporary_file(tmp_path, monkeypatch, writer):
  import builtins  # pylint: disable=g-import-not-at-top
  import errno  # pylint: disable=g-import-not-at-top
  from experiments.common import results  # pylint: disable=g-import-not-at-top

  class FullFile:
    def __init__(self, path, *args, **kwargs):
      self.file = builtins.open(path, *args, **kwargs)

    def __enter__(self):
      return self

    def __exit__(self, *exc_info):
      self.file.close()

    def write(self, text):  # a full disk fails the write, which names no file
      raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

  monkeypatch.setattr(results, "open", FullFile, raising=False)
  path = str(tmp_path / "vocab_info.json")
  with pytest.raises(OSError) as raised:
    getattr(results, writer)(path, "{}")
  assert raised.value.errno == errno.ENOSPC and raised.value.filename == path
  assert sorted(os.listdir(tmp_path)) == ([] if writer == "write_text" else ["vocab_info.json"])


def test_a_full_disk_while_writing_metrics_names_the_file_and_where_a_rerun_resumes(halted_bert_run, tmp_path,
                                                                                    monkeypatch):
  import errno  # pylint: disable=g-import-not-at-top
  from experiments.bert import train  # pylint: disable=g-import-not-at-top
  from experiments.common import checkpoint  # pylint: disable=g-import-not-at-top
  from experiments.common import metrics as metrics_lib  # pylint: disable=g-import-not-at-top
  from test_bert import micro_config  # pylint: disable=g-import-not-at-top
  workdir = _copy_run(halted_bert_run, tmp_path)

  def full_disk(self, step, metrics):
    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), self.path)

  monkeypatch.setattr(metrics_lib.MetricWriter, "write", full_disk)
  with pytest.raises(checkpoint.DiskFull) as raised:
    train.train_and_evaluate(micro_config(), workdir)
  assert str(raised.value) == (
      f"Writing {os.path.join(workdir, 'metrics.jsonl')} failed: no space left on device. Free some space and "
      f"rerun the same command: it resumes from the newest good checkpoint, step 3 in "
      f"{os.path.join(workdir, 'checkpoints')}.")
  assert not os.path.exists(os.path.join(workdir, workdir_lock.LOCK_FILENAME))
