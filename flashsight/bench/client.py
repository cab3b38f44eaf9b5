"""One streamed chat completion, timed: when the first generated text arrived, when the stream
ended, how many tokens came, or why it failed.

Any OpenAI-compatible server: the stream is read as plain server-sent events and each chunk as
JSON, with no flashsight code involved. The HTTP client is aiohttp, as in vLLM's own benchmark:
its parser is C, so at a hundred streams the load generator's own work does not delay what it
times. (With httpx's pure-Python stack, a model-free stand-in server streaming 32 chunks at c100
measured ~0.09 s more TTFT and ~0.12 s more end-to-end per request than with aiohttp.)
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from typing import Any

import aiohttp

from flashsight.bench.sse import EventData
from flashsight.bench.workloads import PreparedRequest

JSON_HEADERS = {"Content-Type": "application/json"}

# Delta fields that carry generated text: the answer, and the thinking as vLLM (reasoning_content)
# and Ollama (reasoning) stream it. The first non-empty one is the first token.
TEXT_FIELDS = ("content", "reasoning_content", "reasoning")
ERROR_CHARS = 300


@dataclass
class RequestResult:
    index: int
    ok: bool
    ttft_s: float | None = None
    e2e_s: float | None = None
    output_tokens: int | None = None
    usage_reported: bool = False
    error: str | None = None

    @property
    def decode_tok_s(self) -> float | None:
        """This stream's decode speed: the tokens after the first over the time after the first."""
        if not self.ok or self.output_tokens is None or self.output_tokens < 2:
            return None
        assert self.ttft_s is not None and self.e2e_s is not None
        decode_s = self.e2e_s - self.ttft_s
        return (self.output_tokens - 1) / decode_s if decode_s > 0 else None


class StreamError(Exception):
    """The server answered, but not with a complete stream."""


@dataclass
class StreamTally:
    """What the chunks of one stream said, as they arrived."""

    first_token_at: float | None = None
    text_chunks: int = 0
    usage_tokens: int | None = None
    done: bool = False

    def read(self, data: str, now: float) -> None:
        if not data.strip():  # a keep-alive event some servers send
            return
        if data.strip() == "[DONE]":
            self.done = True
            return
        chunk = json.loads(data)
        if not isinstance(chunk, dict):
            raise StreamError(f"a stream chunk is not a JSON object: {_clip(data)}")
        if chunk.get("error"):
            raise StreamError(error_message(chunk))
        if has_text(chunk):
            self.text_chunks += 1
            if self.first_token_at is None:
                self.first_token_at = now
        usage = chunk.get("usage")
        if isinstance(usage, dict) and isinstance(usage.get("completion_tokens"), int):
            self.usage_tokens = usage["completion_tokens"]


def has_text(chunk: dict[str, Any]) -> bool:
    for choice in _dicts(chunk.get("choices")):
        delta = choice.get("delta")
        if not isinstance(delta, dict):
            continue
        if any(isinstance(delta.get(field), str) and delta[field] for field in TEXT_FIELDS):
            return True
        if any(isinstance(call.get("function"), dict) and call["function"].get("arguments")
               for call in _dicts(delta.get("tool_calls"))):  # fmt: skip
            return True
    return False


def _dicts(value: Any) -> list[dict[str, Any]]:
    """The objects of a JSON list, so that an odd chunk from some server is skipped, not a crash."""
    return [item for item in value if isinstance(item, dict)] if isinstance(value, list) else []


def error_message(body: Any) -> str:
    """The message of OpenAI's error shape `{"error": {"message": ...}}`, or the body itself."""
    if isinstance(body, dict):
        error = body.get("error")
        if isinstance(error, dict) and error.get("message"):
            return _clip(str(error["message"]))
        if isinstance(error, str) and error:
            return _clip(error)
        if isinstance(body.get("message"), str):
            return _clip(body["message"])
    return _clip(json.dumps(body) if not isinstance(body, str) else body)


async def send(session: aiohttp.ClientSession, url: str, request: PreparedRequest) -> RequestResult:
    """POST one prepared body and time its stream; every failure becomes a result, never a raise."""
    start = time.perf_counter()
    tally = StreamTally()
    try:
        await _stream(session, url, request.body, tally)
    except StreamError as exc:
        return RequestResult(request.index, ok=False, error=_clip(str(exc)))
    except TimeoutError:  # aiohttp's timeouts are TimeoutErrors
        return RequestResult(request.index, ok=False, error=f"no answer within the timeout ({url})")
    except aiohttp.ClientConnectorError as exc:
        return RequestResult(request.index, ok=False, error=f"could not reach {url}: {_describe(exc)}")
    except aiohttp.ClientConnectionError as exc:  # it answered, then the connection closed
        return RequestResult(request.index, ok=False, error=f"the connection to {url} broke: {_describe(exc)}")
    except aiohttp.ClientError as exc:  # a broken response: bad chunking, bad headers...
        return RequestResult(request.index, ok=False, error=f"a broken response from {url}: {_describe(exc)}")
    except json.JSONDecodeError:
        return RequestResult(request.index, ok=False, error="a stream chunk is not valid JSON")
    end = time.perf_counter()
    return _result(request.index, tally, start, end)


async def _stream(session: aiohttp.ClientSession, url: str, body: bytes, tally: StreamTally) -> None:
    async with session.post(url, data=body, headers=JSON_HEADERS, allow_redirects=False) as response:
        if response.status != 200:
            raise StreamError(await http_error(response))
        if response.content_type != "text/event-stream":
            raise StreamError(f"the answer is {response.content_type or 'untyped'}, not a text/event-stream")
        events = EventData()
        async for chunk in response.content.iter_any():
            now = time.perf_counter()  # when these bytes arrived, for every event in them
            for data in events.feed(chunk):
                tally.read(data, now)
                if tally.done:
                    return
    raise StreamError("the stream ended without [DONE]")


async def http_error(response: aiohttp.ClientResponse) -> str:
    """'HTTP 400: <the error's message>' for an answer that is not a success."""
    raw = (await response.read()).decode(errors="replace")
    try:
        message = error_message(json.loads(raw))
    except json.JSONDecodeError:
        message = _clip(raw.strip()) or (response.reason or "")
    return f"HTTP {response.status}: {message}"


def _result(index: int, tally: StreamTally, start: float, end: float) -> RequestResult:
    if tally.first_token_at is None:
        return RequestResult(index, ok=False, error="the stream carried no generated text")
    tokens = tally.usage_tokens if tally.usage_tokens is not None else tally.text_chunks
    return RequestResult(index, True, tally.first_token_at - start, end - start, tokens, tally.usage_tokens is not None)


def _describe(exc: Exception) -> str:
    return " ".join(str(exc).split()) or type(exc).__name__


def _clip(text: str) -> str:
    return text if len(text) <= ERROR_CHARS else text[: ERROR_CHARS - 3] + "..."
