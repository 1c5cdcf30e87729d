"""Multi-host BERT training on CPU: 2 processes x 2 fake devices (gloo collectives over localhost) give the
losses of 1 process x 4 devices, each process reading only its own rows of every batch."""
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

WORKER = r"""
import json, os, sys
os.environ["XLA_FLAGS"] = "--xla_force_host_platform_device_count=2"
import jax
jax.config.update("jax_cpu_collectives_implementation", "gloo")
import ml_collections
from experiments.bert import train
config = ml_collections.ConfigDict(json.loads(sys.argv[1]))
config.update(distributed=True, coordinator_address=sys.argv[2], num_processes=2, process_id=int(sys.argv[3]))
result = train.train_and_evaluate(config, sys.argv[4])
print("RESULT", json.dumps({"devices": jax.device_count(), "local": jax.local_device_count(), **result}))
"""


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


def test_two_processes_match_one_process(tmp_path):
  documents = input_pipeline.load_documents("pydoc")
  train_documents, *_ = input_pipeline.split_documents(documents, 0.05)
  vocab = input_pipeline.train_wordpiece_vocab(train_documents, 512, str(tmp_path / "vocab.txt"))
  config = _config(vocab)

  shared_workdir = str(tmp_path / "two_processes")
  address = f"localhost:{_free_port()}"
  env = dict(os.environ, PYTHONPATH=REPO_ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
  workers = [subprocess.Popen(
      [sys.executable, "-c", WORKER, config.to_json(), address, str(i), shared_workdir],
      cwd=REPO_ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
      for i in range(2)]
  outputs = []
  try:
    for worker in workers:
      stdout, stderr = worker.communicate(timeout=240)
      assert worker.returncode == 0, stderr[-3000:]
      outputs.append(json.loads(stdout.split("RESULT", 1)[1]))
  finally:
    for worker in workers:
      if worker.poll() is None:
        worker.kill()

  reference = train.train_and_evaluate(config, str(tmp_path / "one_process"))
  assert [(o["devices"], o["local"]) for o in outputs] == [(4, 2), (4, 2)]
  series = {name: metrics_lib.metric_series(metrics_lib.read_metrics(path), "train_loss")
            for name, path in [("two", outputs[0]["metrics_path"]), ("one", reference["metrics_path"])]}
  np.testing.assert_array_equal(series["two"][0], [1, 2, 3, 4])
  np.testing.assert_array_equal(series["two"][0], series["one"][0])
  np.testing.assert_allclose(series["two"][1], series["one"][1], rtol=1e-5)
  for output in outputs:  # every process ends with the same global metrics
    np.testing.assert_allclose(output["eval_loss"], reference["eval_loss"], rtol=1e-5)
    np.testing.assert_allclose(output["train_loss"], reference["train_loss"], rtol=1e-5)
  assert os.path.isdir(os.path.join(shared_workdir, "checkpoints", "4"))
