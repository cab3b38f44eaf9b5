"""How much a busy Python thread slows a thread that launches many short operations, at several
GIL switch intervals: a stand-in, on any machine, for the engine thread launching a mixed step's
~800 operations beside the engine process's other threads.

    python3 benchmarks/gil_convoy.py

PyTorch releases the GIL around every operator it dispatches (Triton around every launch), so a
thread that is ready to run takes the GIL at each one, and the launching thread waits until that
thread blocks or the switch interval runs out. Prints the median time of 1500 such operations,
alone and beside a thread busy in Python for a share of its time.
"""

from __future__ import annotations

import statistics
import sys
import threading
import time

import torch


def launch_step(operand: torch.Tensor, count: int = 1500) -> float:
    start = time.perf_counter()
    for _ in range(count):
        torch.add(operand, 1)  # releases and retakes the GIL, as a kernel launch does
        [i for i in range(20)]  # a little Python between launches
    return time.perf_counter() - start


def busy_python(stop: threading.Event, share: float, period_s: float = 0.002) -> None:
    """Python for `share` of each period, asleep (the GIL free) for the rest."""
    while not stop.is_set():
        until = time.perf_counter() + period_s * share / (1 - share)
        while time.perf_counter() < until:
            sum(range(200))
        time.sleep(period_s)


def main() -> None:
    torch.set_num_threads(1)
    operand = torch.zeros(4)
    for interval_ms in (5.0, 1.0, 0.5):
        sys.setswitchinterval(interval_ms / 1e3)
        for share in (0.0, 0.2, 0.5):
            stop = threading.Event()
            other = threading.Thread(target=busy_python, args=(stop, share), daemon=True) if share else None
            if other:
                other.start()
            time.sleep(0.05)
            median = statistics.median(launch_step(operand) for _ in range(7))
            stop.set()
            if other:
                other.join()
            print(f"switch interval {interval_ms:.1f} ms, other thread busy {share:.0%}: 1500 operations in {median * 1e3:.1f} ms")


if __name__ == "__main__":
    main()
