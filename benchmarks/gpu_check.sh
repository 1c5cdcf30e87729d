#!/usr/bin/env bash
# The GPU check, one command within 9 minutes on one GPU (each part has its own timeout below), every result
# in a file under OUT (default gpu_results/):
#   1. the optimizer-step benchmark, the later methods' targets against what they wrap and what a pass over a
#      94 MB array costs read, written in place and written to a new buffer (update_step.md);
#   2. the BERT-base train step in bfloat16 for AdamW and ACClip under pmap and under the mesh path, and the
#      later methods beside AdamW under pmap, batch 32 x 128 (PyTorch rows when torch sees a CUDA device)
#      (bert_step.md);
#   3. a short comparison at BERT-base scale (experiments/comparison/configs/gpu.py) in OUT/comparison/.
#
#   bash benchmarks/gpu_check.sh [OUT]          # from anywhere; runs in the repository root
#   bash benchmarks/gpu_check.sh --tiny OUT     # the same protocol at tiny sizes, on any machine (a CPU test)
#
# Needs jax with its CUDA plugin, flax, optax, orbax-checkpoint, tokenizers and ml_collections; on a machine
# without network, put wheels of what is missing in .whl/ (pip download ml_collections absl-py -d .whl).
set -euo pipefail
TINY=0
if [ "${1:-}" = "--tiny" ]; then TINY=1; shift; fi
OUT=$(realpath -m "${1:-gpu_results}")
cd "$(dirname "$0")/.."
if [ "$TINY" = 1 ]; then  # a CPU test of the protocol: small sizes, fewer candidates, no time budget
  BERT_SIZE=tiny COMPARISON=gpu_tiny TIMEOUTS=(600 600 600 600) COMPARISON_ARGS=(--optimizers adamw,acclip)
  UPDATE_ARGS=(--repeats 2 --warmup 1 --layers 1 --only "same-bytes kernel" optax.adam "acclip alpha=1")
  BERT_STEP_ARGS=(--batch-size 8 --seq-len 32 --steps 2 --warmup 1 --settle 0 --optimizers adamw,acclip,skip_step_on_spikes)
  TARGET_ARGS=()  # the targets' rows are the full run's
  FRESH_ARGS=(--rows 256 --cols 128 --rounds 2 --calls 2)
else  # seconds for each part: 9 minutes in all
  BERT_SIZE=base COMPARISON=gpu TIMEOUTS=(75 105 150 165) COMPARISON_ARGS=()
  UPDATE_ARGS=(--repeats 20 --warmup 3)
  # The later methods' targets (update_step.TARGETS), and their BERT-base train steps beside AdamW's.
  TARGET_ARGS=(--targets --runs 3 --repeats 7 --warmup 2)  # median and range of 3 runs
  FRESH_ARGS=()
  LATER_METHODS=adamw,adamw+gclip,acclip,acclip_ports,zclip,adagc,autoclip,spam,stable_spam,skip_step_on_spikes
  BERT_STEP_ARGS=(--batch-size 32 --seq-len 128 --steps 20 --warmup 3 --optimizers "$LATER_METHODS")
fi
PYTHON=${PYTHON:-python3}
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
export XLA_PYTHON_CLIENT_PREALLOCATE=false  # PyTorch shares the GPU in bert_step.py

for module in ml_collections absl; do
  if ! "$PYTHON" -c "import $module" 2>/dev/null; then
    "$PYTHON" -m pip install -q --no-index --find-links .whl "${module/absl/absl-py}"
  fi
done

nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader 2>/dev/null || true
GPU_CHECK_TINY=$TINY "$PYTHON" - <<'EOF'
import os
import jax
devices = jax.devices()
print(f"jax {jax.__version__}: {devices}")
if devices[0].platform != "gpu" and os.environ["GPU_CHECK_TINY"] != "1":
  raise SystemExit("gpu_check.sh: JAX sees no GPU; install jax[cuda] first (or run --tiny)")
EOF

torch_flag=--no-torch
if [ "$TINY" = 0 ] && "$PYTHON" -c "import torch, transformers; assert torch.cuda.is_available()" 2>/dev/null; then
  torch_flag=
fi

mkdir -p "$OUT"
echo; echo "## benchmarks/update_step.py (BERT-base-shaped tree, 12 layers)" | tee "$OUT/update_step.md"
# A part that reaches its time limit is noted and the next one runs (what it printed is kept).
stopped() { echo "(stopped at its time limit of $1 s, or failed: status $2)"; }
timeout "${TIMEOUTS[0]}" "$PYTHON" benchmarks/update_step.py "${UPDATE_ARGS[@]}" | tee -a "$OUT/update_step.md" ||
  stopped "${TIMEOUTS[0]}" $? | tee -a "$OUT/update_step.md"
echo; echo "## benchmarks/fresh_buffers.py" | tee -a "$OUT/update_step.md"
timeout 30 "$PYTHON" benchmarks/fresh_buffers.py ${FRESH_ARGS[@]+"${FRESH_ARGS[@]}"} | tee -a "$OUT/update_step.md" ||
  stopped 30 $? | tee -a "$OUT/update_step.md"
if [ "${#TARGET_ARGS[@]}" -gt 0 ]; then
  echo; echo "## benchmarks/update_step.py --targets" | tee -a "$OUT/update_step.md"
  timeout "${TIMEOUTS[1]}" "$PYTHON" benchmarks/update_step.py "${TARGET_ARGS[@]}" | tee -a "$OUT/update_step.md" ||
    stopped "${TIMEOUTS[1]}" $? | tee -a "$OUT/update_step.md"
fi
echo; echo "## benchmarks/bert_step.py ($BERT_SIZE, bfloat16, pmap and mesh)" | tee "$OUT/bert_step.md"
timeout "${TIMEOUTS[2]}" "$PYTHON" benchmarks/bert_step.py --configs "$BERT_SIZE" --dtype bfloat16 \
  --parallelism pmap,mesh "${BERT_STEP_ARGS[@]}" $torch_flag | tee -a "$OUT/bert_step.md" ||
  stopped "${TIMEOUTS[2]}" $? | tee -a "$OUT/bert_step.md"
echo; echo "## experiments.comparison --config $COMPARISON ${COMPARISON_ARGS[*]+${COMPARISON_ARGS[*]}} ($BERT_SIZE)"
timeout "${TIMEOUTS[3]}" "$PYTHON" -m experiments.comparison --config "$COMPARISON" ${COMPARISON_ARGS[@]+"${COMPARISON_ARGS[@]}"} \
  --out "$OUT/comparison"
echo "Results: $OUT/update_step.md, $OUT/bert_step.md, $OUT/comparison/ (results.json, report)"
