#!/usr/bin/env bash
# One device call's HTTP half: `flashsight serve` on the full-size synthetic checkpoint, measured
# by `flashsight bench` over loopback (benchmarks/serve_bench.py). The server's packages are not on
# the device's image: carry them as cp312 wheels in .whl/ (benchmarks/device_wheels.txt lists them
# and says how to fetch them). Logs and JSON under $OUT (one archive, out.tgz, when more than a call brings back).
#   MODEL      a checkpoint directory (default: write the full-size synthetic one)
#   HTTP_RUNS  workload:concurrency[:requests] in order (default "W1:1 W1-repeat:1 W2:1 W1:100 W2:100")
#   BENCH_ARGS extra serve_bench.py arguments (e.g. "--py-spy 8": profile the loaded levels)
#   SERVE_ARGS extra `flashsight serve` arguments
#   TREES      label:tree pairs run in turn, each into $OUT/label (default "main:."): e.g.
#              "B1:. A1:.ab B2:. A2:.ab" alternates this tree with a checkout in .ab/ (carry it),
#              since one HTTP run a variant is within the run-to-run spread
#   FLASHSIGHT_STEP_TRACE=DIR  the engine process traces a window of loaded steps into DIR
#              (benchmarks/step_trace.py: kernel time, and the GPU's idle gaps inside steps)
#   FLASHSIGHT_SWITCH_INTERVAL_MS, FLASHSIGHT_PDL_ORDER, FLASHSIGHT_PREFETCH_COLUMNS  knobs of the
#              engine process (benchmarks/trace_site/sitecustomize.py says what each sets)
#   FLASHSIGHT_RECEIVE_MARKS=1  the server marks where each request's receive stage goes
#              (benchmarks/receive_marks.py), summarised after each tree's runs
set -o pipefail
export PYTHONUNBUFFERED=1
OUT=${OUT:-/tmp/out}
mkdir -p "$OUT"
if [ -d .whl ] && [ -z "$WHEELS_DONE" ]; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
    || exit 1
  export PYTHONPATH=/tmp/site:$PWD WHEELS_DONE=1
else
  export PYTHONPATH=${PYTHONPATH:+$PYTHONPATH:}$PWD
fi
# Fail in a second, not after the readiness wait, when a package is missing.
python3 -c "import uvicorn, flashsight.server.app, flashsight.ops.supervisor, flashsight.bench.command" || exit 1
MODEL=${MODEL:-$(python3 -c "from flashsight.engine.testmodel import write_test_model as w; print(w('/tmp/ab-model', size='full'))" 2>/dev/null | tail -1)}
SITE=$(echo "$PYTHONPATH" | tr ':' '\n' | grep -m1 '^/tmp/site$')
for spec in ${TREES:-main:.}; do
  IFS=: read -r label tree <<< "$spec"
  [ -n "$TREES" ] && echo "== $label ($tree)" && out="$OUT/$label" || out="$OUT"
  trace=""
  [ -n "$FLASHSIGHT_STEP_TRACE$FLASHSIGHT_SWITCH_INTERVAL_MS$FLASHSIGHT_PDL_ORDER$FLASHSIGHT_PREFETCH_COLUMNS$FLASHSIGHT_RECEIVE_MARKS" ] \
    && trace=":$PWD/benchmarks/trace_site"
  [ -n "$FLASHSIGHT_STEP_TRACE" ] && export FLASHSIGHT_STEP_TRACE="$out/trace"
  [ -n "$FLASHSIGHT_RECEIVE_MARKS" ] && mkdir -p "$out" && export FLASHSIGHT_RECEIVE_MARKS="$out/receive.jsonl"
  (cd "$tree" && PYTHONPATH=${SITE:+$SITE:}$PWD$trace python3 benchmarks/serve_bench.py --model "$MODEL" --out "$out" $BENCH_ARGS \
    --runs ${HTTP_RUNS:-W1:1 W1-repeat:1 W2:1 W1:100 W2:100} -- $SERVE_ARGS 2>&1 | grep -vE "^  (mean JPEG|wrote)|^ +----")
  if [ -n "$FLASHSIGHT_RECEIVE_MARKS" ]; then python3 benchmarks/receive_marks.py "$FLASHSIGHT_RECEIVE_MARKS"; fi
done
bash "$(dirname "$0")/pack_out.sh"
