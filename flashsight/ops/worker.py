"""The engine process: loads the model, then serves the supervisor's requests over its pipe.

It ignores SIGINT and SIGTERM (a Ctrl-C or a service manager signals the whole group; the server
decides when the engine stops) and exits when told to or when the server's end of the pipe closes.
"""

from __future__ import annotations

import asyncio
import logging
import signal
import threading
from multiprocessing.connection import Connection
from typing import Any

from flashsight.engine.config import EngineConfig
from flashsight.engine.errors import EngineError, ModelNotFoundError
from flashsight.engine.types import ChatRequest
from flashsight.ops import wire
from flashsight.ops.heap import freeze_startup_heap
from flashsight.ops.messages import Refusal, WorkerOptions

log = logging.getLogger("flashsight.engine")


def run_worker(conn: Connection, config: EngineConfig, options: WorkerOptions) -> None:
    """The engine process's entry point."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    _configure_logging()
    try:
        engine = build_engine(config)
    except Exception as exc:  # the server prints it as one line and exits
        conn.send(("load_failed", str(exc)))
        return
    if options.hang_marker:
        _install_hang_hook(engine, options.hang_marker)
    freeze_startup_heap()
    conn.send(("started", engine.info, engine.sampling_defaults(), engine.snapshot()))
    asyncio.run(EngineService(conn, engine, options).serve())


def build_engine(config: EngineConfig) -> Any:
    from flashsight.engine.engine import Engine

    try:
        return Engine(config)
    except ModelNotFoundError:
        raise
    except Exception as exc:
        detail = " ".join(str(exc).split()) or type(exc).__name__
        raise RuntimeError(f"could not load the model {config.model!r}: {detail}") from exc


class EngineService:
    """Runs each request as a task on the engine, and sends its events back in batches: all the
    events ready in one turn of the event loop travel as one message."""

    def __init__(self, conn: Connection, engine: Any, options: WorkerOptions):
        self.conn = conn
        self.engine = engine
        self.options = options
        self.tasks: dict[int, asyncio.Task] = {}
        self.pending: list[tuple[int, Any]] = []

    async def serve(self) -> None:
        loop = asyncio.get_running_loop()
        commands: asyncio.Queue = asyncio.Queue()
        threading.Thread(target=self._receive, args=(loop, commands), name="flashsight-pipe", daemon=True).start()
        heartbeat = asyncio.create_task(self._heartbeat())
        while (command := await commands.get()) is not None and command[0] != "stop":
            if command[0] == "generate":
                key, request = command[1], command[2]
                self.tasks[key] = asyncio.create_task(self._generate(key, request))
            elif (task := self.tasks.pop(command[1], None)) is not None:
                task.cancel()
        heartbeat.cancel()
        for task in self.tasks.values():
            task.cancel()
        await self.engine.shutdown()

    def _receive(self, loop: asyncio.AbstractEventLoop, commands: asyncio.Queue) -> None:
        """Unpickling (images included) happens here, off the event loop."""
        try:
            while True:
                loop.call_soon_threadsafe(commands.put_nowait, wire.receive(self.conn))
        except (EOFError, OSError):  # the server is gone
            loop.call_soon_threadsafe(commands.put_nowait, None)

    async def _generate(self, key: int, request: ChatRequest) -> None:
        try:
            async for event in self.engine.generate(request):
                self._emit(key, event)
        except EngineError as exc:
            self._emit(key, Refusal.of(exc))
        except Exception as exc:
            log.exception("request %s failed before generation", request.request_id)
            self._emit(key, Refusal.of(exc))
        finally:
            self.tasks.pop(key, None)

    def _emit(self, key: int, item: Any) -> None:
        if not self.pending:
            asyncio.get_running_loop().call_soon(self._flush)
        self.pending.append((key, item))

    def _flush(self) -> None:
        batch, self.pending = self.pending, []
        self._send(("events", batch, self.engine.counts()))

    async def _heartbeat(self) -> None:
        while True:
            snapshot = self.engine.snapshot()
            if memory_is_short(snapshot.get("gpu_memory"), self.options.gpu_trim_fraction):
                self.engine.request_trim()
            self._send(("heartbeat", snapshot))
            await asyncio.sleep(self.options.heartbeat_s)

    def _send(self, message: tuple) -> None:
        try:
            self.conn.send(message)
        except OSError:  # the server is gone; the receiving thread ends the service
            pass


def memory_is_short(gpu_memory: dict[str, int] | None, fraction: float) -> bool:
    return gpu_memory is not None and gpu_memory["used_bytes"] > fraction * gpu_memory["total_bytes"]


def _install_hang_hook(engine: Any, marker: str) -> None:
    """Test hook, off unless FLASHSIGHT_ENGINE_TEST_HANG_MARKER is set: once a request whose
    messages contain `marker` has its first token, the next step never returns, as a wedged GPU."""
    execute, generate, hanging = engine.runner.execute, engine.generate, set()

    def execute_or_hang(batch, previous=None):
        # A token read back, not one still on the GPU: the requester has it.
        if any(seq.request_id in hanging and seq.num_known > seq.prompt_len for seq, _ in batch):
            threading.Event().wait()
        return execute(batch, previous)

    def generate_marked(request: ChatRequest):
        if marker in repr(request.messages):
            hanging.add(request.request_id)
        return generate(request)

    engine.runner.execute, engine.generate = execute_or_hang, generate_marked


def _configure_logging() -> None:
    """The engine's log lines look like the server's (the server configures its own in uvicorn)."""
    from uvicorn.logging import DefaultFormatter

    handler = logging.StreamHandler()
    handler.setFormatter(DefaultFormatter("%(levelprefix)s %(name)s: %(message)s"))
    logger = logging.getLogger("flashsight")
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    logger.propagate = False
