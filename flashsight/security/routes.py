"""The page's login API (contract 3): `GET /auth/session`, `POST /auth/login`, `POST /auth/logout`."""

from __future__ import annotations

import asyncio

from fastapi import APIRouter, Request, Response
from pydantic import BaseModel, ConfigDict, Field

from flashsight.security.credentials import AmbiguousCredentials, credentials_of
from flashsight.security.layer import SecurityLayer
from flashsight.security.principal import client_ip_of
from flashsight.security.ratelimit import Verdict
from flashsight.security.sessions import COOKIE_NAME
from flashsight.server.errors import APIError

router = APIRouter()


class LoginForm(BaseModel):
    model_config = ConfigDict(extra="forbid")
    username: str = Field(min_length=1, max_length=64)
    password: str = Field(min_length=1, max_length=1024)


def _layer(request: Request) -> SecurityLayer:
    return request.app.state.security


def _session_token(request: Request) -> str | None:
    try:
        return credentials_of(request.headers).session_token
    except AmbiguousCredentials:
        return None


@router.get("/auth/session")
async def session_status(request: Request) -> dict[str, object]:
    layer = _layer(request)
    token = _session_token(request)
    session = layer.sessions.find(token) if layer.auth_required and token else None
    return {
        "auth_required": layer.auth_required,
        "user": session.username if session else None,
        "csrf_token": session.csrf_token if session else None,
    }


@router.post("/auth/login")
async def login(form: LoginForm, request: Request, response: Response) -> dict[str, str]:
    layer = _layer(request)
    if not layer.auth_required:
        raise APIError(400, "This server does not require a login.", code="auth_disabled")
    user_subject = f"user:{form.username}"
    _refuse_if_spent(layer, layer.logins.take(f"ip:{client_ip_of(request)}", layer.settings.login_attempts_per_minute))
    _refuse_if_spent(layer, layer.logins.peek(user_subject, layer.settings.login_attempts_per_minute))
    # Argon2 takes tens of milliseconds: off the event loop.
    if not await asyncio.to_thread(layer.users.verify, form.username, form.password):
        layer.counters["login_failures_total"] += 1
        layer.logins.take(user_subject, layer.settings.login_attempts_per_minute)  # a user's budget is for failures
        raise APIError(401, "The user name or password is wrong.", code="invalid_credentials")
    token, session = layer.sessions.start(form.username)
    response.set_cookie(
        COOKIE_NAME, token, max_age=int(layer.settings.session_hours * 3600), path="/",
        httponly=True, samesite="strict", secure=request.url.scheme == "https",
    )  # fmt: skip
    return {"user": session.username, "csrf_token": session.csrf_token}


def _refuse_if_spent(layer: SecurityLayer, verdict: Verdict) -> None:
    if not verdict.allowed:
        layer.counters["rate_limit_rejections_total"] += 1
        message = "Too many login attempts: wait and try again."
        raise APIError(429, message, code="rate_limit_exceeded", headers=verdict.headers("Requests"))


@router.post("/auth/logout", status_code=204)
async def logout(request: Request) -> Response:
    token = _session_token(request)
    if token:
        _layer(request).sessions.end(token)
    response = Response(status_code=204)
    response.delete_cookie(COOKIE_NAME, path="/", httponly=True, samesite="strict",
                           secure=request.url.scheme == "https")  # fmt: skip
    return response
