"""Multi-host BERT training on CPU: 2 processes x 2 fake devices (gloo collectives over localhost) give the
losses of 1 process x 4 devices, each process reading only its own rows of every batch, also when a
preemption notice to one of them stops both and a rerun resumes."""
import json
import os
import socket
import subprocess
import sys

import numpy as np

from experiments.bert import input_pipeline
from experiments.bert import train
from experiments.bert.configs import tiny
from experiments.common import metrics as metrics_lib

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

def _free_port() -> int:
  with socket.socket() as s:
    s.bind(("localhost", 0))
    return s.getsockname()[1]


def _config(vocab_file):
  config = tiny.get_config()
  config.model.update(hidden_size=32, num_layers=1, num_heads=2, intermediate_size=64,
                      max_position_embeddings=32)
  config.update(vocab_file=vocab_file, max_seq_len=32, max_predictions_per_seq=5, batch_size=8,
                eval_batch_size=8, max_eval_sequences=16, num_train_steps=4, warmup_steps=1,
                log_every_steps=2, eval_every_steps=0, plot=False)
  return config


PREEMPTED_WORKER = r"""
import json, os, signal, sys, time
os.environ["XLA_FLAGS"] = "--xla_force_host_platform_device_count=2"
import jax
jax.config.update("jax_cpu_collectives_implementation", "gloo")
import ml_collections
from experiments.bert import train
from experiments.common import training_loop
config = ml_collections.ConfigDict(json.loads(sys.argv[1]))
config.update(distributed=True, coordinator_address=sys.argv[2], num_processes=2, process_id=int(sys.argv[3]))
notify_at = int(sys.argv[5])  # this process gets SIGTERM while the loop fetches this train batch (0: never)
shard_batch, calls = training_loop.parallel.shard_batch, []
def counting_shard_batch(batch):
  calls.append(1)
  if len(calls) == notify_at:
    os.kill(os.getpid(), signal.SIGTERM)
    time.sleep(2)  # the processes agree on a sync point before either runs ahead (the other waits on us)
  return shard_batch(batch)
training_loop.parallel.shard_batch = counting_shard_batch
try:
  result = train.train_and_evaluate(config, sys.argv[4])
  print("RESULT", json.dumps({"preempted": None, "devices": jax.device_count(), "local": jax.local_device_count(),
                              **result}))
except training_loop.Preempted as notice:
  print("RESULT", json.dumps({"preempted": notice.step, "checkpoint_step": notice.checkpoint_step}))
"""


def _run_workers(script, config, workdir, extra_args, timeout=240):
  address = f"localhost:{_free_port()}"
  env = dict(os.environ, PYTHONPATH=REPO_ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
  workers = [subprocess.Popen(
      [sys.executable, "-c", script, config.to_json(), address, str(i), workdir] + list(extra_args[i]),
      cwd=REPO_ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
      for i in range(2)]
  outputs = []
  try:
    for worker in workers:
      stdout, stderr = worker.communicate(timeout=timeout)
      assert worker.returncode == 0 and "RESULT" in stdout, stderr[-3000:]
      outputs.append(json.loads(stdout.split("RESULT", 1)[1]))
  finally:
    for worker in workers:
      if worker.poll() is None:
        worker.kill()
  return outputs


def test_two_processes_match_one_process_through_a_preemption(tmp_path):
  """SIGTERM to process 1 alone: JAX's preemption sync point stops both processes after the same step, with
  one checkpoint there; rerunning both resumes it, and the run gives the losses of 1 process x 4 devices."""
  documents = input_pipeline.load_documents("pydoc")
  train_documents, *_ = input_pipeline.split_documents(documents, 0.05)
  config = _config(input_pipeline.train_wordpiece_vocab(train_documents, 512, str(tmp_path / "vocab.txt")))
  config.num_train_steps = 8
  workdir = str(tmp_path / "two_processes")
  stopped = _run_workers(PREEMPTED_WORKER, config, workdir, [["0"], ["6"]])  # a few steps in
  assert stopped[0]["preempted"] is not None and stopped[0] == stopped[1], stopped  # the same step on both
  step = stopped[0]["preempted"]
  assert 1 <= step < 8 and stopped[0]["checkpoint_step"] == step
  resumed = _run_workers(PREEMPTED_WORKER, config, workdir, [["0"], ["0"]])
  assert [r["preempted"] for r in resumed] == [None, None] and resumed[0]["steps"] == 8
  assert [(r["devices"], r["local"]) for r in resumed] == [(4, 2), (4, 2)]

  reference = train.train_and_evaluate(config, str(tmp_path / "one_process"))
  series = {name: metrics_lib.metric_series(metrics_lib.read_metrics(path), "train_loss")
            for name, path in [("two", resumed[0]["metrics_path"]), ("one", reference["metrics_path"])]}
  np.testing.assert_array_equal(series["two"][0], np.arange(1, 9))  # each step once, across the restart
  np.testing.assert_array_equal(series["two"][0], series["one"][0])
  np.testing.assert_allclose(series["two"][1], series["one"][1], rtol=1e-5)
  for output in resumed:  # every process ends with the same global metrics
    np.testing.assert_allclose(output["eval_loss"], reference["eval_loss"], rtol=1e-5)


def test_two_processes_on_a_mesh_match_one_process(tmp_path):
  """2 processes x 2 devices with mesh (2, 2): each process feeds its rows into one global array sharded over
  (data, fsdp), the state is sharded across the processes, and the losses are those of 1 process x 4 devices
  under pmap."""
  documents = input_pipeline.load_documents("pydoc")
  train_documents, *_ = input_pipeline.split_documents(documents, 0.05)
  config = _config(input_pipeline.train_wordpiece_vocab(train_documents, 512, str(tmp_path / "vocab.txt")))
  mesh_config = config.copy_and_resolve_references()
  mesh_config.update(parallelism="mesh", mesh_shape=(2, 2), checkpoint_every_steps=2)
  outputs = _run_workers(PREEMPTED_WORKER, mesh_config, str(tmp_path / "mesh"), [["0"], ["0"]])
  assert [(r["devices"], r["local"], r["steps"]) for r in outputs] == [(4, 2, 4), (4, 2, 4)]
  reference = train.train_and_evaluate(config, str(tmp_path / "one_process"))
  series = {name: metrics_lib.metric_series(metrics_lib.read_metrics(path), "train_loss")
            for name, path in [("mesh", outputs[0]["metrics_path"]), ("one", reference["metrics_path"])]}
  np.testing.assert_array_equal(series["mesh"][0], series["one"][0])
  np.testing.assert_allclose(series["mesh"][1], series["one"][1], rtol=1e-5)
  for output in outputs:
    np.testing.assert_allclose(output["eval_loss"], reference["eval_loss"], rtol=1e-5)
