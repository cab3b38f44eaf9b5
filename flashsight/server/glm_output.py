"""GLM-4.6V's output text as OpenAI fields: reasoning, content, tool calls and grounding boxes.

The model writes `<think>...</think>` before its answer, calls tools as
`<tool_call>NAME\\n<arg_key>K</arg_key>\\n<arg_value>V</arg_value>\\n...</tool_call>`, and may
wrap its answer in `<|begin_of_box|>...<|end_of_box|>`. One state machine (`StreamParser`) reads
the text in pieces of any size; `parse_output` feeds it the whole text at once, so a streamed
answer and a complete one split the same way, however the stream is cut.

Reasoning follows vLLM's glm45 parser: text after `<think>` up to `</think>` (or to the end, when
cut short) is reasoning; a stray `</think>` is dropped. With thinking on, a `</think>` within the
first `EARLY_REASONING_CHARS` characters and no `<think>` before it ends reasoning that began
with the output (the model left out the opening tag): the start of a thinking output is held back
until a think tag or that many characters say which it is. GLM writes `<think>` first, so this
costs a stream nothing in the usual case. Malformed tool-call markup stays in the content as it was
written, never an error; with `parallel_calls` off, calls after the first are dropped.
"""

from __future__ import annotations

import json
import re
import secrets
from dataclasses import dataclass, field
from typing import Any, Literal

from flashsight.engine.types import ChatRequest

THINK_OPEN, THINK_CLOSE = "<think>", "</think>"
CALL_OPEN, CALL_CLOSE = "<tool_call>", "</tool_call>"
BOX_OPEN, BOX_CLOSE = "<|begin_of_box|>", "<|end_of_box|>"

_ARG = re.compile(r"\s*<arg_key>(.*?)</arg_key>\s*<arg_value>(.*?)</arg_value>", re.S)
_BOX = re.compile(r"\[\s*(\d{1,4})\s*,\s*(\d{1,4})\s*,\s*(\d{1,4})\s*,\s*(\d{1,4})\s*\]")
_JSON_LABEL = re.compile(r'"(?:label|name|text)"\s*:\s*"([^"]{1,80})"')
_LABEL_JUNK = " \t\n:=-–—([{\"'`*,#>"
_MAX_LABEL = 60
# How much of a thinking output a stream may hold back while it shows no think tag: enough for a
# short thought whose opening tag is missing, little for a plain answer to wait (~250 tokens).
EARLY_REASONING_CHARS = 1024

State = Literal["undecided", "reasoning", "content", "call"]


@dataclass(frozen=True)
class Delta:
    """One piece of output in OpenAI's streaming shape: exactly one of the three is set."""

    reasoning_content: str | None = None
    content: str | None = None
    tool_call: dict[str, Any] | None = None  # one entry of a chunk's `delta.tool_calls`


@dataclass
class ParsedOutput:
    content: str
    reasoning_content: str
    tool_calls: list[dict[str, Any]] = field(default_factory=list)  # OpenAI's message shape


# ---- tool calls -----------------------------------------------------------------------------


def string_parameters(tools: list[dict[str, Any]] | None) -> dict[str, set[str]]:
    """For each tool name, the parameters its schema declares as strings (kept verbatim)."""
    found: dict[str, set[str]] = {}
    for tool in tools or []:
        function = tool.get("function") or {}
        properties = (function.get("parameters") or {}).get("properties") or {}
        names = {key for key, schema in properties.items() if _is_string_schema(schema)}
        found[str(function.get("name"))] = names
    return found


def _is_string_schema(schema: Any) -> bool:
    kind = schema.get("type") if isinstance(schema, dict) else None
    return kind == "string" or (isinstance(kind, list) and kind and all(k in ("string", "null") for k in kind))


def parse_call(body: str, strings: dict[str, set[str]]) -> dict[str, Any] | None:
    """The OpenAI tool call written between `<tool_call>` and `</tool_call>`; None if malformed."""
    name, key_tag, rest = body.partition("<arg_key>")
    name = name.strip()
    if not name or "<" in name or "\n" in name:
        return None
    rest = key_tag + rest
    arguments: dict[str, Any] = {}
    position = 0
    for match in _ARG.finditer(rest):
        if match.start() != position:
            return None
        # Whitespace around a value is layout (GLM writes newlines; constrained calls allow one).
        key, value = match.group(1).strip(), match.group(2).strip()
        arguments[key] = value if key in strings.get(name, set()) else _json_or_text(value)
        position = match.end()
    if rest[position:].strip():
        return None  # an <arg_key> without its value, or text between arguments
    function = {"name": name, "arguments": json.dumps(arguments, ensure_ascii=False)}
    return {"id": f"call_{secrets.token_hex(12)}", "type": "function", "function": function}


def _json_or_text(value: str) -> Any:
    try:
        return json.loads(value)
    except ValueError:
        return value


# ---- the state machine ----------------------------------------------------------------------


class _Channel:
    """Reasoning or content text, trimmed at both ends: leading whitespace is dropped and trailing
    whitespace held back until more text follows it."""

    def __init__(self) -> None:
        self.parts: list[str] = []
        self._pending_space = ""

    def push(self, text: str) -> str:
        if not self.parts:
            text = text.lstrip()
        if not text:
            return ""
        text = self._pending_space + text
        kept = text.rstrip()
        self._pending_space = text[len(kept):]
        if kept:
            self.parts.append(kept)
        return kept

    def text(self) -> str:
        return "".join(self.parts)


class StreamParser:
    """Feed text deltas, get `Delta`s out in order. Text that may be the start of a tag is held
    back until the next piece (or `finish`) says what it is. `markup=False` reads the output as
    plain content, tags and all (JSON under a grammar: a string value may spell `</think>`)."""

    def __init__(
        self,
        tools: list[dict[str, Any]] | None = None,
        *,
        parse_tools: bool = True,
        thinking: bool = True,
        parallel_calls: bool = True,
        markup: bool = True,
    ):
        self.strings = string_parameters(tools)
        self.parallel_calls = parallel_calls
        tags = [THINK_OPEN, THINK_CLOSE, BOX_OPEN, BOX_CLOSE] + ([CALL_OPEN] if parse_tools else [])
        self.content_tags = tags if markup else []
        self.state: State = "undecided" if thinking and markup else "content"
        self.buffer = ""
        self.reasoning = _Channel()
        self.content = _Channel()
        self.tool_calls: list[dict[str, Any]] = []

    def feed(self, text: str) -> list[Delta]:
        self.buffer += text
        out: list[Delta] = []
        while self._step(out):
            pass
        return out

    def finish(self) -> list[Delta]:
        """The end of the output: whatever is held back is plain text of the current state."""
        if self.state == "undecided":
            self.state = "content"
        out = self.feed("")
        rest, self.buffer = self.buffer, ""
        if self.state == "reasoning":
            self._reason(rest, out)
        elif self.state == "call":
            self._say(CALL_OPEN + rest, out)
        else:
            self._say(rest, out)
        return out

    def result(self) -> ParsedOutput:
        return ParsedOutput(self.content.text(), self.reasoning.text(), list(self.tool_calls))

    # One step: handle the first tag in the buffer (True), or emit what is surely text (False).

    def _step(self, out: list[Delta]) -> bool:
        return getattr(self, f"_step_{self.state}")(out)

    def _step_undecided(self, out: list[Delta]) -> bool:
        index, tag = _first_tag(self.buffer, [THINK_OPEN, THINK_CLOSE])
        if tag == THINK_CLOSE and index <= EARLY_REASONING_CHARS:
            self._reason(self.buffer[:index], out)
            self.buffer = self.buffer[index + len(tag) :]
            self.state = "content"
            return True
        if tag is not None or len(self.buffer) >= EARLY_REASONING_CHARS + len(THINK_CLOSE):
            self.state = "content"  # the output began as an answer (or with <think>): read it so
            return True
        return False

    def _step_reasoning(self, out: list[Delta]) -> bool:
        index, tag = _first_tag(self.buffer, [THINK_CLOSE])
        if tag is None:
            safe = _safe_prefix(self.buffer, [THINK_CLOSE])
            self._reason(self.buffer[:safe], out)
            self.buffer = self.buffer[safe:]
            return False
        self._reason(self.buffer[:index], out)
        self.buffer = self.buffer[index + len(tag):]
        self.state = "content"
        return True

    def _step_content(self, out: list[Delta]) -> bool:
        tags = self.content_tags
        index, tag = _first_tag(self.buffer, tags)
        if tag is None:
            safe = _safe_prefix(self.buffer, tags)
            self._say(self.buffer[:safe], out)
            self.buffer = self.buffer[safe:]
            return False
        self._say(self.buffer[:index], out)
        self.buffer = self.buffer[index + len(tag):]
        self.state = {THINK_OPEN: "reasoning", CALL_OPEN: "call"}.get(tag, "content")
        return True

    def _step_call(self, out: list[Delta]) -> bool:
        index, tag = _first_tag(self.buffer, [CALL_CLOSE])
        if tag is None:
            return False
        body = self.buffer[:index]
        self.buffer = self.buffer[index + len(tag):]
        self.state = "content"
        call = parse_call(body, self.strings)
        if call is None:
            self._say(CALL_OPEN + body + CALL_CLOSE, out)
        elif self.parallel_calls or not self.tool_calls:
            self._call(call, out)
        return True

    def _reason(self, text: str, out: list[Delta]) -> None:
        if kept := self.reasoning.push(text):
            out.append(Delta(reasoning_content=kept))

    def _say(self, text: str, out: list[Delta]) -> None:
        if kept := self.content.push(text):
            out.append(Delta(content=kept))

    def _call(self, call: dict[str, Any], out: list[Delta]) -> None:
        index = len(self.tool_calls)
        self.tool_calls.append(call)
        name = call["function"]["name"]
        head = {"index": index, "id": call["id"], "type": "function", "function": {"name": name, "arguments": ""}}
        out.append(Delta(tool_call=head))
        out.append(Delta(tool_call={"index": index, "function": {"arguments": call["function"]["arguments"]}}))


def _first_tag(text: str, tags: list[str]) -> tuple[int, str | None]:
    found = [(text.find(tag), tag) for tag in tags if tag in text]
    return min(found) if found else (-1, None)


def _safe_prefix(text: str, tags: list[str]) -> int:
    """How much of `text` can be emitted: all but a tail that may begin one of `tags`."""
    if not tags:
        return len(text)
    for start in range(max(0, len(text) - max(map(len, tags)) + 1), len(text)):
        tail = text[start:]
        if any(tag.startswith(tail) for tag in tags):
            return start
    return len(text)


def parse_output(text: str, tools: list[dict[str, Any]] | None = None, **options: bool) -> ParsedOutput:
    """A complete output at once; `options` are `StreamParser`'s."""
    parser = StreamParser(tools, **options)
    parser.feed(text)
    parser.finish()
    return parser.result()


# ---- grounding boxes ------------------------------------------------------------------------


def find_boxes(
    content: str, image_index: int | None = None, image_size: tuple[int, int] | None = None
) -> list[dict[str, Any]]:
    """Every `[x1,y1,x2,y2]` with corners in 0-1000 (x1 <= x2, y1 <= y2), with the text label
    just before it and, when the image's (width, height) is known, its corners in pixels."""
    boxes, label_from = [], 0
    for match in _BOX.finditer(content):
        corners = [int(v) for v in match.groups()]
        before, label_from = content[label_from : match.start()], match.end()
        if max(corners) > 1000 or corners[0] > corners[2] or corners[1] > corners[3]:
            continue
        box: dict[str, Any] = {
            "label": _label(before),
            "box_1000": corners,
            "image_index": image_index,
            "box_pixels": _to_pixels(corners, image_size) if image_size else None,
        }
        boxes.append(box)
    return boxes


def _label(before: str) -> str | None:
    line = before.rsplit("\n", 1)[-1]
    if named := _JSON_LABEL.findall(line):
        return named[-1]
    label = line.strip(_LABEL_JUNK + "]}")
    label = label.removesuffix('"bbox_2d"').removesuffix('"bbox"').strip(_LABEL_JUNK)
    return label if 0 < len(label) <= _MAX_LABEL else None


def _to_pixels(corners: list[int], size: tuple[int, int]) -> list[int]:
    width, height = size
    scale = (width, height, width, height)
    return [round(value * side / 1000) for value, side in zip(corners, scale, strict=True)]


# ---- for one request ------------------------------------------------------------------------


class OutputReader:
    """How one request's output is read: tool calls only when tools were offered (one at most
    when parallel calls are off), JSON under a grammar verbatim, boxes only in free text, scaled
    to the last image."""

    def __init__(self, request: ChatRequest, *, parallel_tool_calls: bool = True) -> None:
        self.tools = request.tools
        guided = request.sampling.guided
        self.with_boxes = guided is None
        self.options = {
            "parse_tools": self.tools is not None,
            "thinking": bool(request.chat_template_kwargs.get("enable_thinking", True)),
            "parallel_calls": parallel_tool_calls,
            "markup": guided is None or guided.kind == "tool_calls",
        }
        self.image_index, self.image_size = last_image(request.messages)

    def stream(self) -> StreamParser:
        return StreamParser(self.tools, **self.options)

    def parse(self, text: str) -> ParsedOutput:
        return parse_output(text, self.tools, **self.options)

    def boxes(self, content: str) -> list[dict[str, Any]]:
        return find_boxes(content, self.image_index, self.image_size) if self.with_boxes else []


def last_image(messages: list[dict[str, Any]]) -> tuple[int | None, tuple[int, int] | None]:
    """The index of the conversation's last image and its (width, height), or (None, None)."""
    images = [
        part["image"]
        for message in messages
        if isinstance(message.get("content"), list)
        for part in message["content"]
        if part.get("type") == "image"
    ]
    return (len(images) - 1, tuple(images[-1].size)) if images else (None, None)
