"""Probes: `GET /health` (the process is up: 200 whenever it answers) and `GET /ready` (the model
is loaded and the engine alive: 200, else 503 with Retry-After while it starts or restarts)."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse

from flashsight.ops.audit_app import audit_health
from flashsight.server.deps import EngineDep
from flashsight.server.errors import SERVER_ERROR, APIError

router = APIRouter()

_RETRY_AFTER_S = "1"


@router.get("/health")
async def health(request: Request, engine: EngineDep) -> JSONResponse:
    audit = audit_health(request.app)  # "failing" when records cannot be written (a full disk)
    return JSONResponse({"status": "ok", "model": engine.info.name, "ready": engine.is_ready(), "audit": audit})


@router.get("/ready")
async def ready(engine: EngineDep) -> JSONResponse:
    if not engine.is_ready():
        raise APIError(503, "The engine is not ready; retry shortly.", type=SERVER_ERROR, code="engine_unavailable",
                       headers={"Retry-After": _RETRY_AFTER_S})  # fmt: skip
    return JSONResponse({"status": "ready", "model": engine.info.name})
