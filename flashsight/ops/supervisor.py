"""The engine in a child process, supervised: the server's `EngineClient`.

The child (see `worker.py`) owns the model; this side relays requests and events over a pipe and
watches it. When the child dies, or stops making progress (work waiting and no step completed for
`watchdog_s`, or no heartbeat for as long), it is killed, every request in flight ends with an
error, new requests get 503 with Retry-After, and a new child is started after a back-off that
doubles with each consecutive failure. The server process never imports torch.
"""

from __future__ import annotations

import asyncio
import atexit
import itertools
import logging
import threading
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import anyio

from flashsight.engine.config import EngineConfig
from flashsight.engine.errors import EngineUnavailableError
from flashsight.engine.types import ChatRequest, GenerationEvent, ModelInfo
from flashsight.ops.child import EngineProcess, EngineStartError
from flashsight.ops.messages import Refusal, WorkerOptions

log = logging.getLogger("flashsight.ops")

_LOST = object()  # delivered to a request whose engine process went away
LOST_MESSAGE = "the engine stopped while serving this request; it is being restarted"


@dataclass(frozen=True)
class RestartPolicy:
    watchdog_s: float  # silence, or no step with work waiting, for this long: the engine is hung
    backoff_s: float  # wait before the first restart; doubles per consecutive failure
    backoff_max_s: float  # the longest wait; an engine that lived this long resets the doubling


@dataclass
class _Stream:
    """One request's events, handed from the reading thread to the requester's event loop."""

    loop: asyncio.AbstractEventLoop
    items: asyncio.Queue = field(default_factory=asyncio.Queue)
    last: GenerationEvent | None = None


class SupervisedEngine:
    def __init__(self, config: EngineConfig, options: WorkerOptions, policy: RestartPolicy):
        self.config, self.options, self.policy = config, options, policy
        self.restarts = 0
        self._lock = threading.Lock()  # guards _streams, _engine and _ready together
        self._streams: dict[int, _Stream] = {}
        self._keys = itertools.count()
        self._engine: EngineProcess | None = None
        self._ready = False
        self._launching: EngineProcess | None = None
        self._stopping = threading.Event()
        self._last_snapshot: dict[str, Any] = {}
        self._back_at = time.monotonic()  # when a restarting engine should serve again
        self._load_s = 0.0

    def start(self) -> SupervisedEngine:
        """Load the model in a child process and start watching it; EngineStartError if the model
        cannot be loaded (no restart loop for that)."""
        engine = self._launch()
        # Registered after multiprocessing's own exit hook, so it runs first: that hook would wait
        # forever for a child still serving when the server exits some unforeseen way.
        atexit.register(self._kill_at_exit)
        self.info: ModelInfo = engine.info  # type: ignore[assignment]
        self._sampling_defaults = engine.sampling_defaults
        self._adopt(engine)
        self._supervisor = threading.Thread(target=self._supervise, name="flashsight-supervisor", daemon=True)
        self._supervisor.start()
        return self

    # ---- EngineClient -------------------------------------------------------------------------

    def sampling_defaults(self) -> dict[str, Any]:
        return dict(self._sampling_defaults)

    def is_ready(self) -> bool:
        return self._ready

    def snapshot(self) -> dict[str, Any]:
        with self._lock:
            engine = self._engine if self._ready else None
        if engine is None:
            idle = {"running_requests": 0, "waiting_requests": 0}
            return self._last_snapshot | idle | {"engine_restarts": self.restarts, "engine_pid": None}
        return engine.snapshot | {"engine_restarts": self.restarts, "engine_pid": engine.pid}

    async def generate(self, request: ChatRequest) -> AsyncIterator[GenerationEvent]:
        stream = _Stream(asyncio.get_running_loop())
        with self._lock:
            engine = self._engine if self._ready else None
            key = next(self._keys)
            if engine is not None:
                self._streams[key] = stream
        if engine is None:
            raise self._unavailable()
        engine.send(("generate", key, request))
        ended = False
        try:
            while True:
                item = await stream.items.get()
                ended = item is _LOST or isinstance(item, Refusal) or bool(item.finish_reason)
                if item is _LOST and stream.last is None:
                    raise self._unavailable()
                if isinstance(item, Refusal):
                    raise item.exception()
                yield _lost_event(stream.last) if item is _LOST else item
                if ended:
                    return
                stream.last = item
        finally:
            with self._lock:
                self._streams.pop(key, None)
            if not ended:  # the client left: free the request's blocks in the engine
                engine.send(("abort", key))

    async def shutdown(self) -> None:
        self._stopping.set()
        with self._lock:
            self._ready, engine, launching = False, self._engine, self._launching
        if launching is not None:
            launching.kill()
        if engine is not None:
            await anyio.to_thread.run_sync(engine.stop)
        self._fail_streams()
        await anyio.to_thread.run_sync(self._supervisor.join, 5)

    def _kill_at_exit(self) -> None:
        self._stopping.set()
        for engine in (self._launching, self._engine):
            if engine is not None:
                engine.kill()

    # ---- supervision (its own thread) ---------------------------------------------------------

    def _supervise(self) -> None:
        failures = 0
        while (engine := self._engine) is not None:
            adopted_at = time.monotonic()
            reason = self._watch(engine)
            if reason is None:
                return
            self._lose(engine, reason)
            lived_long = time.monotonic() - adopted_at > self.policy.backoff_max_s
            failures = 1 if lived_long else failures + 1
            if not self._restart(failures):
                return

    def _watch(self, engine: EngineProcess) -> str | None:
        """Block until the engine dies or hangs (why, as a phrase), or None once stopping."""
        check_every = min(1.0, self.policy.watchdog_s / 4)
        while not self._stopping.is_set():
            if engine.lost.wait(check_every):
                if self._stopping.is_set():
                    return None
                engine.process.join(5)
                return _exit_reason(engine.process.exitcode)
            if (stalled := engine.stalled_for(self.policy.watchdog_s)) is not None:
                return stalled
        return None

    def _lose(self, engine: EngineProcess, reason: str) -> None:
        log.error("%s (pid %s); in-flight requests end with an error and the engine restarts", reason, engine.pid)
        with self._lock:
            self._ready = False
            self._last_snapshot = engine.snapshot
        engine.kill()
        self._fail_streams()

    def _restart(self, failures: int) -> bool:
        """Start a new engine after the back-off, retrying until one loads; False once stopping."""
        while True:
            delay = min(self.policy.backoff_max_s, self.policy.backoff_s * 2 ** (failures - 1))
            self._back_at = time.monotonic() + delay + self._load_s
            if self._stopping.wait(delay):
                return False
            try:
                engine = self._launch()
            except EngineStartError as exc:
                if self._stopping.is_set():
                    return False
                log.error("the engine could not restart: %s", exc)
                failures += 1
                continue
            if self._stopping.is_set():
                engine.kill()
                return False
            self.restarts += 1
            self._adopt(engine)
            log.info("the engine is back (pid %s, restart %d)", engine.pid, self.restarts)
            return True

    def _launch(self) -> EngineProcess:
        began = time.monotonic()
        engine = self._launching = EngineProcess(self.config, self.options)
        try:
            engine.wait_started()
        except BaseException:  # a Ctrl-C during loading too: leave no process behind
            engine.kill()
            raise
        finally:
            self._launching = None
        self._load_s = time.monotonic() - began
        return engine

    def _adopt(self, engine: EngineProcess) -> None:
        engine.serve(self._deliver)
        with self._lock:
            self._engine, self._ready = engine, True

    # ---- events to requesters -----------------------------------------------------------------

    def _deliver(self, batch: list[tuple[int, Any]]) -> None:
        """From the reading thread: each event to its request's queue, one wake-up per loop."""
        with self._lock:
            routed = [(self._streams[key], item) for key, item in batch if key in self._streams]
        _hand_over(routed)

    def _fail_streams(self) -> None:
        with self._lock:
            streams, self._streams = list(self._streams.values()), {}
        _hand_over([(stream, _LOST) for stream in streams])

    def _unavailable(self) -> EngineUnavailableError:
        wait_s = max(1.0, self._back_at - time.monotonic())
        return EngineUnavailableError("the engine is restarting; retry shortly", retry_after_s=wait_s)


def _hand_over(routed: list[tuple[_Stream, Any]]) -> None:
    by_loop: dict[asyncio.AbstractEventLoop, list[tuple[_Stream, Any]]] = {}
    for stream, item in routed:
        by_loop.setdefault(stream.loop, []).append((stream, item))
    for loop, items in by_loop.items():
        try:
            loop.call_soon_threadsafe(_put_all, items)
        except RuntimeError:  # that event loop is closed: nobody is listening
            pass


def _put_all(items: list[tuple[_Stream, Any]]) -> None:
    for stream, item in items:
        stream.items.put_nowait(item)


def _lost_event(last: GenerationEvent | None) -> GenerationEvent:
    prompt, completion = (last.prompt_tokens, last.completion_tokens) if last else (0, 0)
    return GenerationEvent("", [], prompt, completion, "error", LOST_MESSAGE)


def _exit_reason(exitcode: int | None) -> str:
    if exitcode is not None and exitcode < 0:
        return f"the engine process was killed by signal {-exitcode}"
    return f"the engine process exited with code {exitcode}"
