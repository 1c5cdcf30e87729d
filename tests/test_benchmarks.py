"""The scale scripts run end to end at their smallest sizes: the memory table (BERT tiny on 8 fake devices,
checked against the arithmetic), the GPU check's one command (`gpu_check.sh --tiny`, on the CPU) and the cost of
a pass over memory (`fresh_buffers.py` on a small array)."""
import json
import os
import re
import subprocess
import sys

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _run(command, timeout):
  env = dict(os.environ, PYTHONPATH=REPO_ROOT, JAX_PLATFORMS="cpu")
  env.pop("XLA_FLAGS", None)  # each script sets up the devices it needs
  result = subprocess.run(command, cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=timeout)
  assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-3000:]
  return result.stdout


def test_memory_table_at_tiny_matches_the_arithmetic():
  output = _run([sys.executable, "benchmarks/memory.py", "--sizes", "tiny", "--optimizers", "acclip",
                 "--dtypes", "bfloat16"], timeout=600)
  rows = [line.split("|")[1:-1] for line in output.splitlines() if line.startswith("| tiny")]
  assert [row[4].strip() for row in rows] == ["(8, 1)", "(1, 8)"]
  for row in rows:
    arithmetic, compiled = (float(x) for x in row[7].split(" of "))
    assert abs(arithmetic - compiled) <= 0.001  # the compiled step's arguments are the params and state
    assert all(int(n) > 0 for n in row[10].split(" / "))
  replicated, sharded = (float(row[5]) + float(row[6]) for row in rows)
  assert abs(sharded - replicated / 8) < 0.1 * replicated  # FSDP holds about 1/8 of the state per device


def test_gpu_check_runs_end_to_end_at_tiny_sizes(tmp_path):
  out = tmp_path / "gpu_results"
  _run(["bash", "benchmarks/gpu_check.sh", "--tiny", str(out)], timeout=600)
  bert_step = (out / "bert_step.md").read_text()
  for optimizer in ("adamw", "acclip"):
    for parallelism in ("pmap", "mesh"):
      assert re.search(rf"\| tiny \| {optimizer} \| \d+ gathered \| {parallelism} \| [\d,]+ \|", bert_step), bert_step
  assert re.search(r"\| tiny \| skip_step_on_spikes \| \d+ gathered \| pmap \| [\d,]+ \|", bert_step), bert_step
  update_step = (out / "update_step.md").read_text()
  assert "| acclip" in update_step
  assert "| write a new buffer |" in update_step
  summary = json.loads((out / "comparison" / "results.json").read_text())
  assert sorted(summary["optimizers"]) == ["acclip", "adamw"]  # --tiny runs two of the gpu config's three


def test_fresh_buffers_reports_the_three_passes():
  output = _run([sys.executable, "benchmarks/fresh_buffers.py", "--rows", "256", "--cols", "128", "--rounds", "2",
                 "--calls", "2"], timeout=300)
  rows = {line.split("|")[1].strip(): line.split("|")[2:-1] for line in output.splitlines()
          if line.startswith("| ") and not line.startswith("| pass")}
  assert list(rows) == ["read", "write in place (donated)", "write a new buffer"], output
  assert rows["read"][1].strip() == "1.0x"  # each pass is measured against the read
  for milliseconds, _, faults in rows.values():
    assert float(milliseconds) >= 0
    assert faults.strip() == "n/a" or float(faults.replace(",", "")) >= 0
