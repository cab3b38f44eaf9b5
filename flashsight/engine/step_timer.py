"""How long the device spent on the engine's steps, and how long it waited for the engine between
them while there was work.

The second figure tells a load bound by the GPU from one bound by the engine's own thread (its
Python, its GIL): requests stuck before the engine show up as fewer rows a step, but an engine
thread that cannot keep up shows up here. A third, the thread's own time queueing the steps, tells
a step whose device time is its launches (an eager mixed step of a few rows) from one whose
device time is its kernels. On a GPU each step is bracketed by two timing events,
read once the GPU has passed them (never waited for); on a CPU, where a step runs as it is
launched, by the clock.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable

import torch


class StepTimer:
    def __init__(self, device: torch.device, clock: Callable[[], float] = time.perf_counter):
        self._events = device.type == "cuda"
        self._clock = clock  # the host clock: steps off a GPU, and the launches anywhere
        self._open: deque[tuple[object, object, bool, bool]] = deque()  # begin, end, mixed, whether the gap before counts
        self._last_end: object | None = None
        self._resumed = True  # the engine had nothing to do before the next step: its gap is not a wait
        self.busy_s = 0.0
        self.mixed_s = 0.0  # of busy_s, on steps with a prompt chunk in them
        self.wait_s = 0.0
        # The engine thread's own time queueing steps, by the host clock: a mixed step runs
        # eagerly, and where queueing it takes as long as the device takes to run it, the step's
        # device time is the thread's launching, not the kernels' work.
        self.launch_s = 0.0
        self.launch_mixed_s = 0.0
        self._launch_began = 0.0

    def begin(self) -> object:
        self._launch_began = self._clock()
        return self._mark()

    def end(self, begin: object, mixed: bool) -> None:
        self._open.append((begin, self._mark(), mixed, not self._resumed))
        launch = self._clock() - self._launch_began
        self.launch_s += launch
        self.launch_mixed_s += launch if mixed else 0.0
        self._resumed = False
        self.collect()

    def idle(self) -> None:
        """The engine is about to wait for requests: the device's next gap is nobody's fault."""
        self._resumed = True

    def collect(self) -> None:
        """Adds up the steps the device has finished, in order; returns at the first still running."""
        while self._open:
            begin, end, mixed, counted = self._open[0]
            if self._events and not end.query():
                return
            self._open.popleft()
            busy = self._elapsed(begin, end)
            self.busy_s += busy
            self.mixed_s += busy if mixed else 0.0
            if counted and self._last_end is not None:
                self.wait_s += max(self._elapsed(self._last_end, begin), 0.0)
            self._last_end = end

    def _mark(self) -> object:
        if not self._events:
            return self._clock()
        event = torch.cuda.Event(enable_timing=True)
        event.record()
        return event

    def _elapsed(self, start: object, stop: object) -> float:
        return start.elapsed_time(stop) / 1e3 if self._events else stop - start
