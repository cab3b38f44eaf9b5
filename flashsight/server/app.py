"""`create_app`: the routes, error handlers and lifespan around one engine."""

from __future__ import annotations

import functools
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI

from flashsight.engine.protocol import EngineClient
from flashsight.ops.audit_app import install_operations, start_operations, stop_operations
from flashsight.security.fetch import FetchPolicy, SafeFetcher
from flashsight.security.setup import install_security
from flashsight.server.body_limit import BodySizeLimit
from flashsight.server.conversion import RequestConverter
from flashsight.server.errors import install_error_handlers
from flashsight.server.images import ImageLimits, load_image
from flashsight.server.routes import routers
from flashsight.server.settings import ServerSettings
from flashsight.web import install_web


def create_app(settings: ServerSettings, engine: EngineClient) -> FastAPI:
    fetcher = SafeFetcher(fetch_policy(settings))
    load = functools.partial(load_image, limits=image_limits(settings), fetcher=fetcher)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        start_operations(app)  # ---- operations: the metrics admin port ----
        try:
            yield
        finally:
            try:
                await fetcher.aclose()
            finally:
                await engine.shutdown()
                await stop_operations(app)  # ---- operations: the audit log's last write ----

    app = FastAPI(title="flashsight", version="0.1.0", lifespan=lifespan)
    app.state.engine = engine
    app.state.converter = RequestConverter(settings, engine, load)
    app.state.started_at = int(time.time())
    app.state.settings = settings
    # Starlette runs the middleware added last first: the body limit stays outermost.
    # ---- security middleware ----
    install_security(app, settings)

    # ---- operations middleware ----
    install_operations(app, settings)  # the audit log and metrics; /metrics

    app.add_middleware(BodySizeLimit, max_bytes=settings.max_body_bytes)
    install_error_handlers(app)
    for router in routers:
        app.include_router(router)
    # ---- the web page ----
    install_web(app, settings)

    return app


def image_limits(settings: ServerSettings) -> ImageLimits:
    return ImageLimits(
        max_bytes=settings.max_image_bytes,
        max_pixels=settings.max_image_pixels,
        max_aspect_ratio=settings.max_image_aspect_ratio,
    )


def fetch_policy(settings: ServerSettings) -> FetchPolicy:
    return FetchPolicy(
        allowed_hosts=settings.allowed_image_hosts,
        connect_timeout_s=settings.image_connect_timeout_s,
        total_timeout_s=settings.image_total_timeout_s,
        max_bytes=settings.max_image_bytes,
        max_redirects=settings.image_max_redirects,
    )
