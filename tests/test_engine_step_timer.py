"""The engine adds up the time its device spends on steps, the time the device waits for the
engine between steps while there is work (not while the engine has nothing to do), and the time
its thread spends queueing the steps."""

from __future__ import annotations

import asyncio

import torch

from flashsight.engine.step_timer import StepTimer
from flashsight.engine.types import ChatRequest, SamplingParams
from test_batching_fidelity import make_engine


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def _step(timer: StepTimer, clock: Clock, seconds: float, mixed: bool = False) -> None:
    begun = timer.begin()
    clock.now += seconds
    timer.end(begun, mixed)


def test_waits_between_steps_count_and_idle_time_does_not():
    clock = Clock()
    timer = StepTimer(torch.device("cpu"), clock)
    _step(timer, clock, 0.02, mixed=True)
    clock.now += 0.03  # the engine is slow to queue the next step
    _step(timer, clock, 0.02)
    assert (round(timer.busy_s, 6), round(timer.mixed_s, 6), round(timer.wait_s, 6)) == (0.04, 0.02, 0.03)
    assert (round(timer.launch_s, 6), round(timer.launch_mixed_s, 6)) == (0.04, 0.02)  # on a CPU, queueing is running
    timer.idle()  # no requests: the gap that follows is nobody's fault
    clock.now += 5.0
    _step(timer, clock, 0.01)
    clock.now += 0.002
    _step(timer, clock, 0.01)
    assert (round(timer.busy_s, 6), round(timer.wait_s, 6)) == (0.06, 0.032)


def test_the_engine_reports_its_steps_device_time(tiny_model_dir):
    engine = make_engine(tiny_model_dir)
    try:
        before = engine.counts()

        async def generate() -> int:
            request = ChatRequest("timed", [{"role": "user", "content": "Count."}], SamplingParams(max_tokens=6, ignore_eos=True))
            return sum([len(event.token_ids) async for event in engine.generate(request)])

        assert asyncio.run(generate()) == 6
        after = engine.counts()
        assert after["gpu_busy_s"] > before["gpu_busy_s"]
        assert 0 < after["gpu_mixed_s"] - before["gpu_mixed_s"] < after["gpu_busy_s"] - before["gpu_busy_s"]
        assert after["gpu_wait_s"] >= before["gpu_wait_s"]
        assert after["gpu_busy_s"] + after["gpu_wait_s"] < 60
        assert 0 < after["launch_mixed_s"] - before["launch_mixed_s"] < after["launch_s"] - before["launch_s"]
    finally:
        asyncio.run(engine.shutdown())
