"""Every failure leaves the server as OpenAI's error body:
`{"error": {"message": ..., "type": ..., "param": ..., "code": ...}}`.

Messages name what the client got wrong; tracebacks and internals stay in the server log.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from flashsight.engine.errors import EngineError, EngineOverloadedError, EngineUnavailableError, InvalidRequestError

logger = logging.getLogger("flashsight.server")

INVALID_REQUEST = "invalid_request_error"
NOT_FOUND = "not_found_error"
SERVER_ERROR = "server_error"

_HTTP_CODES = {404: "not_found", 405: "method_not_allowed", 413: "request_too_large"}
# pydantic's wording where it would name our classes or sound odd to an API client.
_PLAIN_MESSAGES = {
    "model_type": "must be a JSON object",
    "model_attributes_type": "must be a JSON object",
    "dict_type": "must be a JSON object",
    "missing": "is required",
}
# Union branches pydantic adds to error locations ("str", "list[ContentPart]"...): not fields.
_BRANCH_LABELS = {"str", "int", "float", "bool", "none", "dict", "list"}


class APIError(Exception):
    """An error whose message the client should see as it is."""

    def __init__(
        self,
        status: int,
        message: str,
        *,
        type: str = INVALID_REQUEST,
        param: str | None = None,
        code: str | None = None,
        headers: dict[str, str] | None = None,
    ):
        super().__init__(message)
        self.status = status
        self.message = message
        self.type = type
        self.param = param
        self.code = code
        self.headers = headers

    def body(self) -> dict[str, Any]:
        return error_body(self.message, self.type, self.param, self.code)

    def response(self) -> JSONResponse:
        return JSONResponse(self.body(), status_code=self.status, headers=self.headers)


def error_body(message: str, type: str, param: str | None = None, code: str | None = None) -> dict[str, Any]:
    return {"error": {"message": message, "type": type, "param": param, "code": code}}


def api_error_from(exc: Exception) -> APIError:
    """What the client is told about an exception; anything unforeseen becomes a bare 500."""
    if isinstance(exc, APIError):
        return exc
    if isinstance(exc, InvalidRequestError):
        return APIError(400, str(exc), param=exc.param)
    if isinstance(exc, EngineOverloadedError):
        retry_after = str(max(1, math.ceil(exc.retry_after_s)))
        code = "engine_unavailable" if isinstance(exc, EngineUnavailableError) else "overloaded"
        return APIError(503, str(exc), type=SERVER_ERROR, code=code, headers={"Retry-After": retry_after})
    if isinstance(exc, EngineError):
        return APIError(500, "The engine failed while serving this request.", type=SERVER_ERROR)
    return APIError(500, "Internal server error.", type=SERVER_ERROR)


def describe_validation_errors(errors: Sequence[dict[str, Any]]) -> tuple[str, str | None]:
    """One readable sentence and the offending field's path, from pydantic's error list."""
    located = [(_field_path(error["loc"]), error) for error in errors]
    path, error = max(located, key=lambda item: item[0].count(".") + item[0].count("["))
    if error["type"] == "json_invalid":
        return _json_message(error), None
    if not path:
        return "The request body must be a JSON object, sent as Content-Type: application/json.", None
    message = _PLAIN_MESSAGES.get(error["type"]) or str(error["msg"]).removeprefix("Value error, ")
    return f"{path}: {message}", path


def _json_message(error: dict[str, Any]) -> str:
    reason = error.get("ctx", {}).get("error", "parse error")
    position = error["loc"][-1] if isinstance(error["loc"][-1], int) else None
    where = f" at character {position}" if position is not None else ""
    return f"The request body is not valid JSON: {reason}{where}."


def _field_path(loc: Sequence[str | int]) -> str:
    path = ""
    for part in loc[1:] if loc and loc[0] == "body" else loc:
        if isinstance(part, int):
            path += f"[{part}]"
        elif part not in _BRANCH_LABELS and "[" not in part and not part[:1].isupper():
            path += f".{part}" if path else part
    return path


async def _on_api_error(request: Request, exc: APIError) -> JSONResponse:
    return exc.response()


async def _on_validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
    message, param = describe_validation_errors(exc.errors())
    return APIError(400, message, param=param).response()


async def _on_http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
    status = exc.status_code
    message = _http_message(request, exc)
    type = NOT_FOUND if status == 404 else INVALID_REQUEST if status < 500 else SERVER_ERROR
    return APIError(status, message, type=type, code=_HTTP_CODES.get(status), headers=exc.headers).response()


def _http_message(request: Request, exc: StarletteHTTPException) -> str:
    if exc.status_code == 404:
        return f"Not found: {request.method} {request.url.path}"
    if exc.status_code == 405:
        return f"Method {request.method} is not allowed on {request.url.path}."
    return str(exc.detail)


async def _on_engine_error(request: Request, exc: EngineError) -> JSONResponse:
    error = api_error_from(exc)
    if error.status >= 500 and not isinstance(exc, EngineOverloadedError):
        logger.error("engine error on %s: %s", request.url.path, exc, exc_info=exc)
    return error.response()


async def _on_unexpected(request: Request, exc: Exception) -> JSONResponse:
    # Starlette re-raises after this, so the traceback lands in the server log.
    return api_error_from(exc).response()


def install_error_handlers(app: FastAPI) -> None:
    app.add_exception_handler(APIError, _on_api_error)
    app.add_exception_handler(RequestValidationError, _on_validation_error)
    app.add_exception_handler(StarletteHTTPException, _on_http_error)
    app.add_exception_handler(EngineError, _on_engine_error)
    app.add_exception_handler(Exception, _on_unexpected)
