#!/usr/bin/env bash
# One device call comparing this tree (B) with another carried in $AB (A, e.g. `.ab/`, listed in
# .git/info/exclude): the GPU tests (and with SYNCS=1 the sync finder) on B, then the same
# in-process levels on A, B, A, back to back on one machine (machines differ more than small
# changes do). Logs and JSON under $OUT. LEVELS picks the loaded levels' concurrency (default
# 100); ONE_A=1 skips the second A, SKIP_A=1 both.
set -o pipefail
export PYTHONUNBUFFERED=1
OUT=${OUT:-/tmp/out}
AB=${AB:-.ab}
mkdir -p "$OUT"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | tee "$OUT/gpu.txt"
PYTHONPATH=$PWD python3 -m pytest -q -s -p no:cacheprovider tests/test_gpu_fast_path.py > "$OUT/gpu_tests.log" 2>&1
grep -E "^image|^step (0|24):|greedy|passed|failed|Error" "$OUT/gpu_tests.log" | tail -12
[ -z "$SYNCS" ] || PYTHONPATH=$PWD python3 benchmarks/find_syncs.py 2>&1 | grep -v Warning | tee "$OUT/syncs.log" | head -25
run() {  # tree, label
  (cd "$1" && PYTHONPATH=$PWD python3 benchmarks/inprocess.py --workload W1 W1-repeat W2 --concurrency 1 \
     --json "$OUT/$2-c1.json" 2>&1 | grep -v Warning | grep -E '^\{"workload' | cut -c1-250)
  (cd "$1" && PYTHONPATH=$PWD python3 benchmarks/inprocess.py --workload W1 W2 --concurrency ${LEVELS:-100} \
     --json "$OUT/$2-load.json" 2>&1 | grep -v Warning | grep -E '^\{"workload' | cut -c1-330)
}
[ -n "$SKIP_A" ] || run "$AB" A1
run . B
[ -n "$SKIP_A" ] || [ -n "$ONE_A" ] || run "$AB" A2
