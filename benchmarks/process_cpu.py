"""CPU seconds per thread of a running process, from Linux's /proc: to see, per benchmark level,
whether a process (the server, the engine, the load generator) or one of its threads is the
bottleneck. A thread near 1.0 CPU second per second of wall time is saturated."""

from __future__ import annotations

import os
from pathlib import Path

_TICK_S = 1.0 / os.sysconf("SC_CLK_TCK")


def thread_cpu(pid: int) -> dict[int, tuple[str, float]]:
    """{thread id: (thread name, user + system CPU seconds)}; empty once the process is gone."""
    threads: dict[int, tuple[str, float]] = {}
    try:
        tasks = list(Path(f"/proc/{pid}/task").iterdir())
    except OSError:
        return threads
    for task in tasks:
        try:
            stat = (task / "stat").read_text()
        except OSError:  # the thread ended meanwhile
            continue
        name, rest = stat[stat.index("(") + 1 : stat.rindex(")")], stat[stat.rindex(")") + 2 :].split()
        threads[int(task.name)] = (name, (int(rest[11]) + int(rest[12])) * _TICK_S)
    return threads


def busy_line(label: str, before: dict, after: dict, wall_s: float, top: int = 4) -> str:
    """'label 3.10 CPU/s (threads 0.98 main, 0.61 ...)': CPU seconds per wall second, in all and
    for its busiest threads, between two `thread_cpu` readings."""
    used = sorted(((seconds - before.get(tid, (name, 0.0))[1], name) for tid, (name, seconds) in after.items()), reverse=True)
    total = sum(seconds for seconds, _ in used)
    threads = ", ".join(f"{seconds / wall_s:.2f} {name}" for seconds, name in used[:top] if seconds > 0)
    return f"{label} {total / wall_s:.2f} CPU/s ({threads})"
