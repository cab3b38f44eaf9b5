"""`GET /v1/status`: the model and the engine's statistics, for the status page and operators."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request

from flashsight.server.deps import EngineDep

router = APIRouter()


@router.get("/v1/status")
async def status(engine: EngineDep, request: Request) -> dict[str, Any]:
    info = engine.info
    security_stats = getattr(request.app.state, "security_stats", None)
    return {
        "model": info.name,
        "device": info.device,
        "dtype": info.dtype,
        "max_model_len": info.max_model_len,
        "ready": engine.is_ready(),
        "engine": engine.snapshot(),
        "security": security_stats() if security_stats else None,
    }
