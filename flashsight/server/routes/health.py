"""`GET /health`: is the server up, and is the model ready to serve?"""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse

from flashsight.ops.audit_app import audit_health
from flashsight.server.deps import EngineDep

router = APIRouter()


@router.get("/health")
async def health(request: Request, engine: EngineDep) -> JSONResponse:
    audit = audit_health(request.app)  # "failing" when records cannot be written (a full disk)
    if not engine.is_ready():
        return JSONResponse({"status": "loading", "model": engine.info.name, "audit": audit}, status_code=503)
    return JSONResponse({"status": "ok", "model": engine.info.name, "audit": audit})
