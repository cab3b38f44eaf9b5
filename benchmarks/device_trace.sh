#!/usr/bin/env bash
# One device call setting the same load side by side in its three homes: the engine in-process,
# in its own process behind the pipe (`--engine-process`), and behind `flashsight serve` over HTTP;
# each traces a window of its loaded steps (benchmarks/step_trace.py) to show whether the GPU's
# extra time over HTTP is slower kernels or idle gaps inside steps. The GPU's clocks, power and
# temperature are logged throughout ($OUT/smi.csv). First, benchmarks/prepare_parts.py: the prompt
# builder by part, and its threads against a launching thread. Carry .whl (see device_http.sh).
#   LOAD       the in-process load (default "--workload W2 --concurrency 100")
#   HTTP_RUNS  as device_http.sh (default: W2 c100 first, so its window is the traced one)
#   SKIP_TESTS=1  no GPU tests first; SKIP_ENGINE_PROCESS=1 no `--engine-process` home
#   MODEL      a checkpoint directory (default: write the full-size synthetic one)
#   VARIANT_RUNS  then untraced W2 c100 runs over HTTP, one per label:KNOB=value[,KNOB=value]
#                 (knobs: benchmarks/trace_site/sitecustomize.py; none for the default), e.g.
#                 "base: s05:FLASHSIGHT_SWITCH_INTERVAL_MS=0.5 base2:",
#                 while under VARIANTS_UNTIL_S (480) s of the call
set -o pipefail
export PYTHONUNBUFFERED=1
OUT=${OUT:-/tmp/out}
mkdir -p "$OUT"
nvidia-smi --query-gpu=name,memory.total,driver_version,power.limit --format=csv,noheader | tee "$OUT/gpu.txt"
nvidia-smi --query-gpu=timestamp,clocks.sm,power.draw,temperature.gpu,utilization.gpu --format=csv -l 2 > "$OUT/smi.csv" &
smi=$!
if [ -z "$WHEELS_DONE" ]; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
  export PYTHONPATH=/tmp/site:$PWD WHEELS_DONE=1
else
  export PYTHONPATH=${PYTHONPATH:+$PYTHONPATH:}$PWD
fi
if [ -z "$SKIP_TESTS" ]; then
  python3 -m pytest -q -s -p no:cacheprovider tests/test_gpu_fast_path.py > "$OUT/gpu_tests.log" 2>&1
  grep -E "greedy|passed|failed|Error" "$OUT/gpu_tests.log" | tail -6
fi
MODEL=${MODEL:-$(python3 -c "from flashsight.engine.testmodel import write_test_model as w; print(w('/tmp/ab-model', size='full'))" 2>/dev/null | tail -1)}
export MODEL
# The prompt builder's parts, and what its threads cost a launching thread (~15 s).
python3 benchmarks/prepare_parts.py --model "$MODEL" 2>&1 | grep -v Warning | tee "$OUT/prepare_parts.log"
traced() {  # label, inprocess.py arguments
  FLASHSIGHT_STEP_TRACE="$OUT/$1" PYTHONPATH=$PYTHONPATH:$PWD/benchmarks/trace_site python3 benchmarks/inprocess.py \
    --model "$MODEL" ${LOAD:---workload W2 --concurrency 100} --repetition-penalty 1.1 $2 2>&1 | grep -v Warning \
    > "$OUT/$1.log"
  echo "== $1 ($SECONDS s)"
  grep -E '^\{"workload' "$OUT/$1.log" | grep -oE '"(requests_s|ttft_ms_p50|rows_per_step|steps|mixed_steps)": [^,]*|"gpu_s": \{[^}]*\}' | paste -sd' '
}
traced inprocess
[ -n "$SKIP_ENGINE_PROCESS" ] || traced engine-process --engine-process
FLASHSIGHT_STEP_TRACE=1 TREES="http:." HTTP_RUNS=${HTTP_RUNS:-W2:100:300 W1:1 W1-repeat:1 W2:1 W1:100} bash benchmarks/device_http.sh
# Then untraced HTTP runs of engine-process variants, in order: throughput compares among these.
for spec in $VARIANT_RUNS; do
  IFS=: read -r label knobs <<< "$spec"
  [ "$SECONDS" -gt "${VARIANTS_UNTIL_S:-480}" ] && echo "== $label skipped: out of time" && continue
  env ${knobs//,/ } TREES="$label:." HTTP_RUNS="W2:100:300" bash benchmarks/device_http.sh \
    | grep -vE "^(flashsight bench|W2 against|server log|serve:)" | cut -c1-400
done
kill $smi
echo "== the traces' summaries ($SECONDS s)"  # made here, after the loads, never in a traced process
python3 benchmarks/step_trace.py "$OUT"/inprocess "$OUT"/engine-process "$OUT"/http/trace 2>&1 | cut -c1-160
awk -F', ' 'NR>1 {print $2, $3, $4}' "$OUT/smi.csv" | sort | uniq -c | sort -rn | head -5
# At most 8 files come back: the traces in one archive, everything else in another.
(cd "$OUT" && find . -name 'trace-*.json.gz' | tar czf /tmp/traces.tgz -T - && find . -type f ! -name 'trace-*.json.gz' | tar czf /tmp/logs.tgz -T - \
  && rm -rf "$OUT"/* && mv /tmp/traces.tgz /tmp/logs.tgz "$OUT"/)
