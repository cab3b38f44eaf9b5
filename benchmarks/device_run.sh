#!/usr/bin/env bash
# One device call: the GPU fidelity test, the in-process benchmarks, start-up from disk; logs
# under $OUT. LOAD_TOKENS sets --max-num-batched-tokens for the loaded levels.
set -o pipefail
export PYTHONPATH=$PWD PYTHONUNBUFFERED=1
OUT=${OUT:-/tmp/out}
mkdir -p "$OUT"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | tee "$OUT/gpu.txt"
python3 -m pytest -q -s -p no:cacheprovider tests/test_gpu_fast_path.py 2>&1 | grep -v Warning | tee "$OUT/fidelity.log" \
  | grep -E "^step (0|1|2|24)|greedy|passed|failed"
python3 benchmarks/inprocess.py --workload W1 W1-repeat W2 --concurrency 1 --profile "$OUT/profile.txt" \
  --json "$OUT/c1.json" 2>&1 | grep -v Warning | tee "$OUT/c1.log" | grep -E '^\{"workload|prepare_ms' -A2
python3 benchmarks/inprocess.py --workload ${LOAD_WORKLOADS:-W1 W2} --concurrency ${LOAD_LEVELS:-8 32 100} \
  --max-num-batched-tokens ${LOAD_TOKENS:-8192} --json "$OUT/load.json" 2>&1 | grep -v Warning | tee "$OUT/load.log" \
  | grep -E '^\{"workload'
[ -n "$STARTUP" ] && timeout 300 python3 benchmarks/startup.py 2>&1 | grep -v Warning | tee "$OUT/startup.log"
head -25 "$OUT/profile.txt" | cut -c1-60,100-160
