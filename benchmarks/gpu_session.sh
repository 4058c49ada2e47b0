#!/usr/bin/env bash
# Every GPU check of a session, as one script for a bare GPU machine (torch preinstalled, no package index).
# Prepare the checkout here first:  bash ../shared/gpu/fetch-wheels.sh   (plus pytest's wheels in .whl/, see
# docs/benchmarks.md), carry .whl, then on the GPU machine:  . .whl/device-env.sh && bash benchmarks/gpu_session.sh
# Results go under $OUT (default gpu-results/): nvidia-smi, the update/fit speeds (gpu_speed.json, rewritten after
# each part), the CUDA tests, one file per part's stderr. Each part has its own time limit, so one slow part
# cannot take the others' time; SESSION_BUDGET_S bounds the whole (default 540 s).
set -u
OUT=${OUT:-gpu-results}
mkdir -p "$OUT"
budget=${SESSION_BUDGET_S:-540}
start=$(date +%s)
left() { echo $(( budget - ($(date +%s) - start) )); }
export OMP_WAIT_POLICY=PASSIVE
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv > "$OUT/nvidia-smi.txt" 2>&1
python3 -c "import torch, torchrl, tensordict, lightning; print(torch.__version__, torchrl.__version__, tensordict.__version__, lightning.__version__)" > "$OUT/versions.txt" 2>&1

# 1. the update per option, then the most informative fits (the rest wait for part 3)
timeout 330 python3 benchmarks/gpu_speed.py --device cuda --out "$OUT/gpu_speed.json" --budget-s 250 \
  --fits sac_hyper_cudagraphs_fp32 sac_mlp_cudagraphs_fp32_batch10 sac_mlp_cudagraphs_fp32 sac_hyper_eager_fp32 \
  > "$OUT/gpu_speed.stdout" 2> "$OUT/gpu_speed.err"
echo "part 1 done, $(left) s left" >> "$OUT/timeline.txt"

# 2. the CUDA tests: fast updates on a GPU, and every algorithm in fp32 and bf16-mixed on a GPU
t=$(( $(left) - 60 )); [ "$t" -gt 150 ] && t=150
[ "$t" -gt 20 ] && timeout "$t" python3 -m pytest -q -p no:cacheprovider -k "cuda or gpu" \
  tests/test_fast_update.py tests/test_meta_fast_update.py tests/test_precision.py > "$OUT/pytest_cuda.txt" 2>&1
echo "part 2 done, $(left) s left" >> "$OUT/timeline.txt"

# 3. the remaining fits, as long as time lasts
t=$(( $(left) - 10 ))
[ "$t" -gt 40 ] && timeout "$t" python3 benchmarks/gpu_speed.py --device cuda --only --out "$OUT/gpu_speed_fits.json" \
  --budget-s $(( t - 40 )) --fits td3_hyper_cudagraphs_fp32 sac_hyper_cudagraphs_fp32_batch10 \
  sac_hyper_cudagraphs_bf16 sac_mlp_eager_fp32 sac_hyper_compiled_cudagraphs_fp32 sac_mlp_compiled_cudagraphs_fp32 > "$OUT/gpu_speed_fits.stdout" 2> "$OUT/gpu_speed_fits.err"
echo "part 3 done, $(left) s left" >> "$OUT/timeline.txt"
