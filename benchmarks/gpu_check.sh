#!/usr/bin/env bash
# The GPU check: on one GPU, the optimizer-step benchmark and the BERT train-step benchmark (ours at tiny,
# mini and base, batch 32 x 128; PyTorch rows when torch sees a CUDA device), printed as Markdown tables.
# Budget: under 8 minutes in all (each benchmark has its own timeout below).
#
#   bash benchmarks/gpu_check.sh            # from anywhere; runs in the repository root
#
# Needs jax with its CUDA plugin, flax, optax, orbax-checkpoint, tokenizers and ml_collections; on a machine
# without network, put wheels of what is missing in .whl/ (pip download ml_collections absl-py -d .whl).
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
export XLA_PYTHON_CLIENT_PREALLOCATE=false  # PyTorch shares the GPU in bert_step.py

for module in ml_collections absl; do
  if ! "$PYTHON" -c "import $module" 2>/dev/null; then
    "$PYTHON" -m pip install -q --no-index --find-links .whl "${module/absl/absl-py}"
  fi
done

nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true
"$PYTHON" - <<'EOF'
import jax
devices = jax.devices()
print(f"jax {jax.__version__}: {devices}")
if devices[0].platform != "gpu":
  raise SystemExit("gpu_check.sh: JAX sees no GPU; install jax[cuda] first")
EOF

torch_flag=--no-torch
if "$PYTHON" -c "import torch, transformers; assert torch.cuda.is_available()" 2>/dev/null; then
  torch_flag=
fi

echo; echo "## benchmarks/update_step.py (BERT-base-shaped tree, 12 layers)"
timeout 150 "$PYTHON" benchmarks/update_step.py --repeats 20 --warmup 3
echo; echo "## benchmarks/bert_step.py (tiny, mini, base; batch 32 x 128)"
timeout 300 "$PYTHON" benchmarks/bert_step.py --configs tiny,mini,base --batch-size 32 --seq-len 128 \
  --steps 20 --warmup 3 $torch_flag
