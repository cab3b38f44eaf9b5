"""One engine process, as the supervisor sees it: the pipe to it, a thread sending, a thread
reading, and what its heartbeats said. No torch here: the process is started with `spawn`."""

from __future__ import annotations

import dataclasses
import logging
import multiprocessing
import queue
import threading
import time
from collections.abc import Callable
from typing import Any

from PIL import Image

from flashsight.engine.config import EngineConfig
from flashsight.engine.types import ChatRequest, ModelInfo, Picture
from flashsight.ops import wire
from flashsight.ops.messages import WorkerOptions
from flashsight.ops.worker import run_worker

log = logging.getLogger("flashsight.ops")

_SPAWN = multiprocessing.get_context("spawn")
_STOP_WAIT_S = 30.0


class EngineStartError(RuntimeError):
    """The engine process could not load the model; the message says why, in one sentence."""


class EngineProcess:
    def __init__(self, config: EngineConfig, options: WorkerOptions):
        self.conn, child_end = _SPAWN.Pipe()
        self.process = _SPAWN.Process(target=run_worker, args=(child_end, config, options), name="flashsight-engine")
        self.process.start()
        child_end.close()  # so that reading our end fails at once when the process dies
        self.lost = threading.Event()  # set once the process is gone (or its pipe is)
        self.snapshot: dict[str, Any] = {}
        self.info: ModelInfo | None = None
        self.sampling_defaults: dict[str, Any] = {}
        self._outbox: queue.SimpleQueue = queue.SimpleQueue()
        self._heard_at = self._progress_at = time.monotonic()

    @property
    def pid(self) -> int | None:
        return self.process.pid

    def wait_started(self) -> None:
        """Block until the model is loaded; EngineStartError if it cannot be."""
        try:
            message = self.conn.recv()
        except (EOFError, OSError):
            self.process.join()
            self.conn.close()
            code = self.process.exitcode
            raise EngineStartError(f"the engine process exited while loading the model (exit code {code})") from None
        if message[0] == "load_failed":
            self.process.join()
            self.conn.close()
            raise EngineStartError(message[1])
        _, self.info, self.sampling_defaults, self.snapshot = message
        self._heard_at = self._progress_at = time.monotonic()

    def serve(self, on_events: Callable[[list], None]) -> None:
        """Start relaying: messages out through one thread, events in to `on_events` from another."""
        threading.Thread(target=self._send_all, name="flashsight-engine-out", daemon=True).start()
        threading.Thread(target=self._read_all, args=(on_events,), name="flashsight-engine-in", daemon=True).start()

    def send(self, message: tuple) -> None:
        """Queue a message; pickling a request's images happens on the sending thread."""
        self._outbox.put(message)

    def stalled_for(self, watchdog_s: float) -> str | None:
        """Why the process counts as hung, or None: silent for `watchdog_s`, or work waiting and
        no engine step completed for `watchdog_s` (alive, but making no progress)."""
        now = time.monotonic()
        if now - self._heard_at > watchdog_s:
            return f"the engine process sent no heartbeat for {watchdog_s:g}s"
        if now - self._progress_at > watchdog_s:
            return f"the engine made no progress for {watchdog_s:g}s with requests waiting"
        return None

    def stop(self) -> None:
        """Ask the process to finish; kill it if it has not within `_STOP_WAIT_S`."""
        self.send(("stop",))
        self.process.join(_STOP_WAIT_S)
        self.kill()

    def kill(self) -> None:
        """The reading thread sees the pipe close and cleans up after it."""
        if self.process.is_alive():
            self.process.kill()
        self.process.join()

    def _send_all(self) -> None:
        while (message := self._outbox.get()) is not None:
            if message[0] == "generate":
                try:
                    message = (*message[:2], with_pictures(message[2]))
                except Exception:  # never leave this thread: the images still cross, as PIL images
                    log.exception("a request's images could not be turned into pictures")
            try:
                wire.send(self.conn, message)
            except (OSError, ValueError):  # the process is gone; the reading thread says so
                return

    def _read_all(self, on_events: Callable[[list], None]) -> None:
        try:
            while True:
                message = self.conn.recv()
                self._observe(message[-1])
                if message[0] == "events":
                    on_events(message[1])
        except (EOFError, OSError):
            pass
        except Exception:
            log.exception("the engine process sent something unreadable")
        finally:
            self._outbox.put(None)
            self.conn.close()
            self.lost.set()

    def _observe(self, update: dict[str, Any]) -> None:
        """A heartbeat's snapshot or an event batch's counts: the engine is alive; did it step?"""
        now, steps = time.monotonic(), self.snapshot.get("steps")
        self.snapshot = self.snapshot | update
        idle = self.snapshot["running_requests"] == 0 and self.snapshot["waiting_requests"] == 0
        if idle or self.snapshot["steps"] != steps:
            self._progress_at = now
        self._heard_at = now


def with_pictures(request: ChatRequest) -> ChatRequest:
    """The request with its RGB PIL images as `Picture`s, to cross the pipe as their bytes (the
    server's own request keeps its images: the audit record reads them)."""
    messages = [_with_pictures(message) for message in request.messages]
    return dataclasses.replace(request, messages=messages)


def _with_pictures(message: dict[str, Any]) -> dict[str, Any]:
    content = message.get("content")
    if not isinstance(content, list) or not any(part.get("type") == "image" for part in content):
        return message
    parts = [{**part, "image": Picture.of(part["image"])} if _rgb_image(part) else part for part in content]
    return {**message, "content": parts}


def _rgb_image(part: dict[str, Any]) -> bool:
    return part.get("type") == "image" and isinstance(part.get("image"), Image.Image) and part["image"].mode == "RGB"
