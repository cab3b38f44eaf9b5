#!/usr/bin/env bash
# One device call's HTTP half: `flashsight serve` on the full-size synthetic checkpoint, measured by
# `flashsight bench` from another process over loopback, as a user (or the anchors' vLLM runs)
# would see it. The server's own packages (FastAPI, pydantic...) are not on the device's image:
# carry them as wheels in .whl/ (BENCHMARKS.md says which). Logs and JSON under $OUT.
#   MODEL      a checkpoint directory (default: write the full-size synthetic one)
#   HTTP_RUNS  workload:concurrency pairs in order (default "W1:1 W1-repeat:1 W2:1 W1:100 W2:100")
#   SERVE_ARGS extra `flashsight serve` arguments
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
flashsight() { python3 -m flashsight.cli "$@"; }
MODEL=${MODEL:-$(python3 -c "from flashsight.engine.testmodel import write_test_model as w; print(w('/tmp/ab-model', size='full'))" 2>/dev/null | tail -1)}
PORT=${PORT:-8123}
start=$(date +%s.%N)
flashsight serve --model "$MODEL" --port "$PORT" --data-dir /tmp/fs-data $SERVE_ARGS > "$OUT/server.log" 2>&1 &
server=$!
python3 - "$PORT" <<'EOF' || { tail -30 "$OUT/server.log"; kill $server; exit 1; }
import sys, time, urllib.request
for _ in range(600):
    try:
        urllib.request.urlopen(f"http://127.0.0.1:{sys.argv[1]}/ready", timeout=2)
        sys.exit(0)
    except Exception:
        time.sleep(0.5)
sys.exit(1)
EOF
python3 -c "import time; print(f'serve: ready after {time.time() - $start:.1f} s (checkpoint on local disk)')"
for spec in ${HTTP_RUNS:-W1:1 W1-repeat:1 W2:1 W1:100 W2:100}; do
  IFS=: read -r workload concurrency <<< "$spec"
  flashsight bench --base-url "http://127.0.0.1:$PORT/v1" --workload "$workload" --concurrency "$concurrency" \
    --json "$OUT/http-$workload-c$concurrency.json" 2>&1 | grep -v Warning | tee "$OUT/http-$workload-c$concurrency.log"
done
kill -INT $server
wait $server
grep -iE "error|traceback" "$OUT/server.log" | head -5
