#!/usr/bin/env bash
# One device call comparing this tree (B) with another carried in $AB (A, e.g. `.ab/`, listed in
# .git/info/exclude): the GPU tests (and with SYNCS=1 the sync finder) on B, then the same
# in-process levels per tree, back to back on one machine (machines differ more than small
# changes do). Logs and JSON under $OUT (one archive, out.tgz, when more than a call brings back).
#   LEVELS     the loaded levels' concurrency (default 100)
#   SKIP_C1=1  no concurrency-1 levels
#   RUNS       the runs in order, each label:tree[:inprocess arguments, commas for spaces]
#              (default "A1:$AB B:. A2:$AB"; ONE_A=1 drops A2, SKIP_A=1 both A runs);
#              e.g. "B:. A:.ab Bs:.:--switch-interval-ms,1"
# The full-size synthetic checkpoint is written once and shared by the runs.
set -o pipefail
export PYTHONUNBUFFERED=1
OUT=${OUT:-/tmp/out}
AB=${AB:-.ab}
mkdir -p "$OUT"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | tee "$OUT/gpu.txt"
[ -n "$SKIP_TESTS" ] || PYTHONPATH=$PWD python3 -m pytest -q -s -p no:cacheprovider tests/test_gpu_fast_path.py > "$OUT/gpu_tests.log" 2>&1
[ -n "$SKIP_TESTS" ] || grep -E "^image|^prompt|^step (0|24):|greedy|passed|failed|Error" "$OUT/gpu_tests.log" | tail -12
[ -z "$SYNCS" ] || PYTHONPATH=$PWD python3 benchmarks/find_syncs.py 2>&1 | grep -v Warning | tee "$OUT/syncs.log" | head -25
MODEL=$(PYTHONPATH=$PWD python3 -c "from flashsight.engine.testmodel import write_test_model as w; print(w('/tmp/ab-model', size='full'))" 2>/dev/null | tail -1)
summary() {  # the fields that compare runs, from inprocess.py's JSON lines
  grep -E '^\{"workload' | grep -oE '"(workload|concurrency|requests_s|ttft_ms_p50|ttft_ms_p95|decode_tok_s_p50|rows_per_step)": [^,]*|"gpu": \{[^}]*\}[^}]*\}|"ttft_phases_ms": \{[^}]*\}' \
    | paste -sd' ' | sed 's/ "workload/\n"workload/g'
}
run() {  # label, tree, extra arguments
  [ -n "$SKIP_C1" ] || (cd "$2" && PYTHONPATH=$PWD python3 benchmarks/inprocess.py --model "$MODEL" --workload W1 W1-repeat W2 \
     --concurrency 1 $3 --json "$OUT/$1-c1.json" 2>&1 | grep -v Warning | tee "$OUT/$1-c1.log" | summary | sed "s/^/$1 /")
  (cd "$2" && PYTHONPATH=$PWD timeout ${RUN_TIMEOUT:-300} python3 benchmarks/inprocess.py --model "$MODEL" --workload W1 W2 \
     --concurrency ${LEVELS:-100} $3 --json "$OUT/$1-load.json" 2>&1 | grep -v Warning | tee "$OUT/$1-load.log" | summary | sed "s/^/$1 /")
}
default="A1:$AB B:. A2:$AB"
[ -z "$ONE_A" ] || default="A1:$AB B:."
[ -z "$SKIP_A" ] || default="B:."
for spec in ${RUNS:-$default}; do
  IFS=: read -r label tree extra <<< "$spec"
  run "$label" "$tree" "${extra//,/ }"
done
bash "$(dirname "$0")/pack_out.sh"
