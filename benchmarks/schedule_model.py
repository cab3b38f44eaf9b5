"""A model of the engine loop under a closed-loop load, to weigh a scheduling change before a
device call: how requests/s and TTFT follow from the step's token budget, a prompt's GPU cost,
the time a request spends before the engine sees it, and a mixed step's fixed cost. No GPU, no
engine: each turn launches step k, builds the arrivals' prompts, then waits for step k-1 and
reads its tokens back, as `Engine._serve` does; a step's GPU time comes from the costs below.

    python benchmarks/schedule_model.py [--workload W1] [--budget 8192 4096] [--prompt-ms 62 58]

Calibration (H100): a decode-only step 6.5 ms at 1 row, 9.15 at 70, 9.72 at 100 (run 68); a W1
prompt ~62 ms and a W2 prompt ~17.4 ms of GPU in mixed steps (runs 63 and 71); a decode row
riding a mixed step ~0.048 ms (its share of the products and the paged decode). With a 0.17 s
path from the client to the engine it gives W1 c100 13.3 req/s and W2 c100 45.4 (measured over
HTTP: 13.40, and 43.7-47.2); an earlier version reproduced run 36's budgets (W1 at 2048: 12.68
against 12.61 measured, 217 mixed steps against 215) with a 10 ms fixed cost a mixed step,
and so does this one for run 80's budget of 1024 (11.59 against 11.98 req/s, 444 mixed steps of
571 against 441 of 568): at 8192 the fixed cost hardly counts, at small budgets it decides.
"""

from __future__ import annotations

import argparse
import heapq
import itertools

WORKLOADS = {"W1": (1405, 128, 62.0), "W2": (420, 32, 17.4)}  # prompt tokens, output tokens, prompt GPU ms


def decode_step_ms(rows: int) -> float:
    return 6.5 + rows * 2.65 / 69 if rows <= 70 else 9.15 + (rows - 70) * 0.019


def simulate(workload: str, budget: int, prompt_ms: float, requests: int = 300, concurrency: int = 100,
             path_s: float = 0.17, mixed_fixed_ms: float = 1.0, ride_ms: float = 0.048, build_ms: float = 3.3,
             launch_mixed_ms: float = 15.0, launch_decode_ms: float = 1.0) -> dict:  # fmt: skip
    tokens, output, _ = WORKLOADS[workload]
    incoming = [(0.01 + i * 0.001, i) for i in range(concurrency)]
    sent_at = dict.fromkeys(range(concurrency), 0.0)
    sent, finished = concurrency, 0
    arrivals, prepared, waiting = [], [], []
    left: dict[int, int] = {}  # running request -> tokens it still has to be scheduled for
    unfilled: dict[int, int] = {}  # request whose prompt is split over steps -> prompt tokens left
    now = gpu_free = 0.0
    in_flight, ttft, steps, mixed = None, [], 0, 0
    def take_arrived() -> None:
        while incoming and incoming[0][0] <= now:
            arrivals.append(heapq.heappop(incoming)[1])

    while finished < requests:
        waiting += prepared
        prepared = []
        take_arrived()
        if not (left or unfilled or waiting or arrivals or in_flight):
            now = incoming[0][0]
            continue
        room = budget
        decodes = [r for r, n in left.items() if n > 0]
        room -= len(decodes)
        first_tokens, prompt_tokens = [], 0
        for r in list(unfilled):
            take = min(unfilled[r], room)
            if take <= 0:
                break
            unfilled[r] -= take
            prompt_tokens, room = prompt_tokens + take, room - take
            if not unfilled[r]:
                del unfilled[r]
                first_tokens.append(r)
        while waiting and room > 0:
            r = waiting.pop(0)
            take = min(tokens, room)
            prompt_tokens, room = prompt_tokens + take, room - take
            if take < tokens:
                unfilled[r] = tokens - take
            else:
                first_tokens.append(r)
        step = None
        if decodes or prompt_tokens:
            is_mixed = prompt_tokens > 0
            cost = (prompt_tokens / tokens * prompt_ms + len(decodes) * ride_ms + mixed_fixed_ms) if is_mixed \
                else decode_step_ms(len(decodes))  # fmt: skip
            now += (launch_mixed_ms if is_mixed else launch_decode_ms) / 1e3
            gpu_free = max(gpu_free, now) + cost / 1e3
            steps, mixed = steps + 1, mixed + is_mixed
            for r in decodes:
                left[r] -= 1
            for r in first_tokens:
                left[r] = output - 1
            step = (gpu_free, decodes + first_tokens, first_tokens)
        take_arrived()
        now += build_ms / 1e3 * len(arrivals)
        prepared, arrivals = arrivals, []
        if in_flight is not None:
            end, rows, firsts = in_flight
            now = max(now, end) + 0.01e-3 * len(rows)
            ttft += [now - sent_at[r] for r in firsts]
            for r in [r for r in rows if left.get(r) == 0]:
                del left[r]
                finished += 1
                if sent < requests:
                    sent_at[sent] = now
                    heapq.heappush(incoming, (now + path_s, sent))
                    sent += 1
        in_flight = step
    ttft.sort()
    return {"req/s": round(requests / now, 2), "TTFT p50 s": round(ttft[len(ttft) // 2], 2),
            "TTFT p95 s": round(ttft[int(0.95 * len(ttft))], 2), "steps": steps, "mixed": mixed}  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--workload", nargs="+", default=["W1", "W2"], choices=list(WORKLOADS))
    parser.add_argument("--budget", type=int, nargs="+", default=[8192, 4096, 2048])
    parser.add_argument("--prompt-ms", type=float, nargs="+", help="a prompt's GPU ms (default: the workload's)")
    parser.add_argument("--path-s", type=float, nargs="+", default=[0.17], help="client to engine, seconds")
    parser.add_argument("--mixed-fixed-ms", type=float, nargs="+", default=[1.0])
    args = parser.parse_args()
    for workload in args.workload:
        for budget, prompt_ms, path_s, fixed in itertools.product(
            args.budget, args.prompt_ms or [WORKLOADS[workload][2]], args.path_s, args.mixed_fixed_ms
        ):
            result = simulate(workload, budget, prompt_ms, path_s=path_s, mixed_fixed_ms=fixed)
            print(f"{workload} c100, budget {budget}, prompt {prompt_ms} ms, path {path_s} s, mixed step +{fixed} ms: {result}")


if __name__ == "__main__":
    main()
