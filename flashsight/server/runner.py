"""Run the app under uvicorn, and say so once the socket is listening.

On SIGTERM (or Ctrl-C) uvicorn stops accepting connections, lets requests in flight finish for
`shutdown_grace_s`, cancels what is left, and only then runs the app's lifespan shutdown (which
stops the engine and flushes the audit log). A shutdown asked for this way exits with status 0.
"""

from __future__ import annotations

import contextlib
import copy
import socket
from collections.abc import Iterator
from typing import Any

import uvicorn
from fastapi import FastAPI
from uvicorn.config import LOGGING_CONFIG

from flashsight.ops.heap import freeze_startup_heap
from flashsight.server.settings import ServerSettings


class AnnouncingServer(uvicorn.Server):
    """Prints one line once listening, so people and scripts know when to connect."""

    def __init__(self, config: uvicorn.Config, model: str) -> None:
        super().__init__(config)
        self.model = model

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets)
        if self.started:
            host, port = self.servers[0].sockets[0].getsockname()[:2]
            host = f"[{host}]" if ":" in host else host
            scheme = "https" if self.config.is_ssl else "http"
            print(f"flashsight: serving {self.model} on {scheme}://{host}:{port}", flush=True)
            freeze_startup_heap()

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        """uvicorn re-raises the signal that stopped it once it has shut down, so the process
        would die by SIGTERM; a shutdown that went as asked is a success instead."""
        with super().capture_signals():
            try:
                yield
            finally:
                self._captured_signals.clear()


def run(app: FastAPI, settings: ServerSettings, model: str) -> bool:
    """Serve until interrupted; False if the server never started (the port was taken...)."""
    config = uvicorn.Config(
        app, host=settings.host, port=settings.port, log_level=settings.log_level, log_config=log_config(),
        **transport_options(settings),
        timeout_graceful_shutdown=settings.shutdown_grace_s,
    )  # fmt: skip
    server = AnnouncingServer(config, model)
    server.run()
    return server.started


def log_config() -> dict[str, Any]:
    """uvicorn's logging, plus flashsight's own loggers (engine failures, broken streams) beside it."""
    config = copy.deepcopy(LOGGING_CONFIG)
    formatter = {"()": "uvicorn.logging.DefaultFormatter", "fmt": "%(levelprefix)s %(name)s: %(message)s"}
    config["formatters"]["flashsight"] = formatter
    handler = {"formatter": "flashsight", "class": "logging.StreamHandler", "stream": "ext://sys.stderr"}
    config["handlers"]["flashsight"] = handler
    config["loggers"]["flashsight"] = {"handlers": ["flashsight"], "level": "INFO", "propagate": False}
    return config


def transport_options(settings: ServerSettings) -> dict[str, Any]:
    """The security layer's part: TLS, the header limit, and no X-Forwarded-For handling by
    uvicorn (it trusts loopback by default; the security layer trusts only configured proxies)."""
    options: dict[str, Any] = {"proxy_headers": False, "h11_max_incomplete_event_size": 2 * settings.max_header_bytes}
    if settings.ssl_certfile is not None:
        options |= {"ssl_certfile": str(settings.ssl_certfile), "ssl_keyfile": str(settings.ssl_keyfile)}
    return options
