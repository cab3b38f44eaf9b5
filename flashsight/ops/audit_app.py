"""The operations layer's place in the app: the audit log and metrics on `app.state`, their
middleware and route, the metrics admin port, and the log's state for /health."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

import anyio
from fastapi import FastAPI

from flashsight.ops.audit_crypto import AuditKeyError, RecordCipher, parse_key, read_key_file
from flashsight.ops.audit_log import AuditLog
from flashsight.ops.audit_middleware import OperationsMiddleware
from flashsight.ops.loop_lag import LoopLagProbe
from flashsight.ops.metrics import ServerMetrics
from flashsight.ops.metrics import router as metrics_router

if TYPE_CHECKING:
    from flashsight.server.settings import ServerSettings

logger = logging.getLogger("flashsight.audit")


def install_operations(app: FastAPI, settings: ServerSettings) -> None:
    """Contract 6: `app.state.audit` offers `record_event(kind, **fields)` (None when the log is off)."""
    app.state.audit = audit_log(settings) if settings.audit_enabled else None
    app.state.metrics = ServerMetrics(app.state)
    app.state.loop_lag = LoopLagProbe(app.state.metrics.loop_lag)
    app.state.metrics_server = None
    refuse = settings.audit_on_failure == "refuse"
    app.add_middleware(OperationsMiddleware, include_images=settings.audit_include_images, refuse_on_failure=refuse)
    if settings.metrics_enabled and settings.metrics_port is None:
        app.include_router(metrics_router)


def audit_log(settings: ServerSettings) -> AuditLog:
    key = audit_key(settings)
    return AuditLog(
        settings.audit_path,
        cipher=RecordCipher(key) if key is not None else None,
        rotate_bytes=settings.audit_rotate_bytes,
        rotate_daily=settings.audit_rotate_daily,
        retention_days=settings.audit_retention_days,
    )


def audit_key(settings: ServerSettings) -> bytes | None:
    if settings.audit_key_file is not None and settings.audit_key is not None:
        raise AuditKeyError("give the audit key once: audit_key_file or audit_key, not both")
    if settings.audit_key_file is not None:
        return read_key_file(settings.audit_key_file)
    if settings.audit_key is not None:
        return parse_key(settings.audit_key.get_secret_value(), "FLASHSIGHT_AUDIT_KEY")
    return None


def start_operations(app: FastAPI) -> None:
    """At start-up, in the server's loop: the loop's lag probe, and the metrics admin port when one
    is configured (it has no auth: bind it privately)."""
    app.state.loop_lag.start()
    settings: ServerSettings = app.state.settings
    if settings.metrics_enabled and settings.metrics_port is not None:
        from prometheus_client import start_http_server

        server, _ = start_http_server(settings.metrics_port, settings.metrics_host, registry=app.state.metrics.registry)
        app.state.metrics_server = server


async def stop_operations(app: FastAPI) -> None:
    """At shutdown, after the last request: stop the probe and the admin port, and wait for the
    log's last write."""
    await app.state.loop_lag.stop()
    server = app.state.metrics_server
    if server is not None:
        await anyio.to_thread.run_sync(server.shutdown)
        server.server_close()
    if app.state.audit is not None:
        await anyio.to_thread.run_sync(app.state.audit.close)


def audit_health(app: FastAPI) -> str:
    """For /health: "ok", "failing" (records cannot be written) or "off"."""
    audit = getattr(app.state, "audit", None)
    return "off" if audit is None else audit.state
