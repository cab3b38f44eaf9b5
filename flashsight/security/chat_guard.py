"""The chat route's own checks, before and after its request is converted: JSON depth, the
max_tokens cap, and the tokens-per-minute budget (which needs the decoded images' sizes)."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

from fastapi import Request

from flashsight.security.layer import Caller, SecurityLayer
from flashsight.security.principal import ANONYMOUS, client_ip_of
from flashsight.security.tokens import prompt_tokens, text_tokens
from flashsight.server.errors import APIError

if TYPE_CHECKING:
    from flashsight.engine.types import ChatRequest
    from flashsight.server.conversion import RequestConverter
    from flashsight.server.schemas import ChatCompletionRequest


async def admit_chat(request: Request, body: ChatCompletionRequest, converter: RequestConverter) -> ChatRequest:
    """`converter.convert(body)`, once the request has passed the security layer's limits."""
    layer: SecurityLayer | None = getattr(request.app.state, "security", None)
    if layer is None:
        return await converter.convert(body)
    check_depth(await request.json(), layer.settings.max_json_depth)
    cap = layer.settings.max_tokens_cap
    if (asked := body.output_limit()) is not None and asked > cap:
        message = f"max_tokens: {asked} is more than this server's limit of {cap}."
        raise APIError(400, message, param="max_tokens", code="max_tokens_too_large")
    chat_request = await converter.convert(body)
    output = chat_request.sampling.max_tokens or min(cap, converter.engine.info.max_model_len)
    cost = prompt_tokens(chat_request.messages) + text_tokens(json.dumps(chat_request.tools or [])) + output
    caller = getattr(request.state, "security_caller", None) or Caller(ANONYMOUS)
    verdict = layer.take_tokens(caller, client_ip_of(request), cost)
    if verdict is not None and not verdict.allowed:
        message = f"Too many tokens: this request costs about {cost}; retry after the time in Retry-After."
        raise APIError(429, message, code="rate_limit_exceeded", headers=verdict.headers("Tokens"))
    return chat_request


def check_depth(value: Any, limit: int) -> None:
    """400 when arrays and objects nest deeper than `limit`; iterative, so depth costs no stack."""
    stack = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        children = item.values() if isinstance(item, dict) else item if isinstance(item, list) else None
        if children is None:
            continue
        if depth > limit:
            raise APIError(400, f"The request's JSON nests deeper than the limit of {limit} levels.", code="json_too_deep")
        stack.extend((child, depth + 1) for child in children)
