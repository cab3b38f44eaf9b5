"""Each request's time to first token by stage, in the order served, from the audit log: which
stage moves when one request's TTFT is 20-30 ms over the next one's (W1 c1 over HTTP spans
74-107 ms on the H100).

    python -m flashsight.cli logs show --dir /tmp/fs-data/audit | python benchmarks/ttft_phases.py [--last 33]

The server's own marks (flashsight/ops/audit_trace.py): receive, handoff, prepare, queue, prefill,
delivery; they add up to its TTFT, which the client sees plus the loopback's way.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys

PHASES = ("receive", "handoff", "prepare", "queue", "prefill", "delivery")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--last", type=int, default=0, help="only the last N requests")
    args = parser.parse_args()
    records = [r for r in map(json.loads, filter(str.strip, sys.stdin)) if r.get("ttft_phases_s")]
    records = records[-args.last :] if args.last else records
    print("   ttft " + " ".join(f"{phase:>8}" for phase in PHASES) + "  (ms)")
    for record in records:
        phases = record["ttft_phases_s"]
        print(f"{record['ttft_s'] * 1e3:7.1f} " + " ".join(f"{phases.get(p, 0) * 1e3:8.1f}" for p in PHASES))
    if len(records) > 1:
        spread = {p: statistics.pstdev(r["ttft_phases_s"].get(p, 0) * 1e3 for r in records) for p in PHASES}
        print("stdev   " + " ".join(f"{spread[p]:8.1f}" for p in PHASES) + f"  (ttft {statistics.pstdev(r['ttft_s'] * 1e3 for r in records):.1f})")


if __name__ == "__main__":
    main()
