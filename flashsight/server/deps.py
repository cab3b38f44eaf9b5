"""What route handlers take as typed parameters; `create_app` puts each on `app.state`."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from flashsight.engine.protocol import EngineClient
from flashsight.server.conversion import RequestConverter


# Async, though they only read app.state: FastAPI runs a plain `def` dependency in the thread
# pool, two hops per request that queue behind image decoding and audit writes under load.
async def _engine(request: Request) -> EngineClient:
    return request.app.state.engine


async def _converter(request: Request) -> RequestConverter:
    return request.app.state.converter


EngineDep = Annotated[EngineClient, Depends(_engine)]
ConverterDep = Annotated[RequestConverter, Depends(_converter)]
