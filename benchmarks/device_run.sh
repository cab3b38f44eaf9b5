#!/usr/bin/env bash
# One device call: the GPU fidelity test, then the in-process benchmarks; logs under $OUT.
set -o pipefail
export PYTHONPATH=$PWD PYTHONUNBUFFERED=1
OUT=${OUT:-/tmp/out}
mkdir -p "$OUT"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | tee "$OUT/gpu.txt"
git rev-parse --short HEAD 2>/dev/null | tee -a "$OUT/gpu.txt"
python3 -m pytest -q -s -p no:cacheprovider tests/test_gpu_fast_path.py 2>&1 | grep -v Warning | tee "$OUT/fidelity.log" | tail -40
python3 benchmarks/inprocess.py --workload W1 W1-repeat W2 --concurrency 1 --profile "$OUT/profile.txt" \
  --json "$OUT/c1.json" 2>&1 | grep -v Warning | tee "$OUT/c1.log" | grep '^{"workload'
python3 benchmarks/inprocess.py --workload ${LOAD_WORKLOADS:-W1 W2} --concurrency ${LOAD_LEVELS:-8 32 100} \
  --json "$OUT/load.json" 2>&1 | grep -v Warning | tee "$OUT/load.log" | grep -E '^\{"workload|startup'
head -40 "$OUT/profile.txt"
