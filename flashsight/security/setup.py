"""`install_security(app, settings)`: the one call `create_app` makes for this layer."""

from __future__ import annotations

import sys

from fastapi import FastAPI
from fastapi.middleware.cors import CORSMiddleware

from flashsight.security.gate import SecurityGate
from flashsight.security.layer import SecurityLayer
from flashsight.security.network import is_loopback_host
from flashsight.security.routes import router
from flashsight.server.settings import ServerSettings


def install_security(app: FastAPI, settings: ServerSettings) -> SecurityLayer:
    """The gate, CORS when origins are configured (outside the gate: preflights carry no
    credentials), the login routes and the stats for /v1/status and /metrics."""
    layer = SecurityLayer(settings)
    app.state.security = layer
    app.state.security_stats = layer.stats
    app.add_middleware(SecurityGate, layer=layer)
    if settings.cors_origins:
        app.add_middleware(
            CORSMiddleware, allow_origins=list(settings.cors_origins), allow_credentials=False,
            allow_methods=["GET", "POST", "PATCH", "DELETE"],
            allow_headers=["Authorization", "X-Api-Key", "Content-Type"],
            expose_headers=["Retry-After", "X-RateLimit-Remaining-Requests", "X-RateLimit-Reset-Requests"],
        )  # fmt: skip
    app.include_router(router)
    warn_if_open(settings)
    return layer


def warn_if_open(settings: ServerSettings) -> None:
    if settings.auth == "off" and not is_loopback_host(settings.host):
        bar = "!" * 78
        print(f"{bar}\nflashsight: WARNING: auth is OFF and the server listens on {settings.host}:\n"
              f"anyone who can reach this address can use the model and read every conversation.\n{bar}",
              file=sys.stderr, flush=True)  # fmt: skip
