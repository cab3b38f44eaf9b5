"""OpenAI's chat-completions wire format: what clients may send, and what they get back.

Requests ignore unknown fields, as OpenAI does, and refuse NaN and infinities. Numbers are strict:
`"temperature": "0.7"` is an error, not a float.
"""

from __future__ import annotations

import json
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator, model_validator

from flashsight.engine.types import GuidedDecoding

StrictInt = Annotated[int, Field(strict=True)]
StrictFloat = Annotated[float, Field(strict=True)]
StrictBool = Annotated[bool, Field(strict=True)]

MAX_STOP_STRINGS = 16


def _is_none(value: Any) -> bool:
    return value is None


class RequestModel(BaseModel):
    model_config = ConfigDict(extra="ignore", allow_inf_nan=False)


# ---- requests -------------------------------------------------------------------------------


class ImageURL(RequestModel):
    url: str = Field(min_length=1)
    detail: Literal["auto", "low", "high"] | None = None


class ContentPart(RequestModel):
    """`{"type": "text", "text": ...}` or `{"type": "image_url", "image_url": {"url": ...}}`."""

    type: Literal["text", "image_url"]
    text: str | None = None
    image_url: ImageURL | None = None

    @field_validator("image_url", mode="before")
    @classmethod
    def _bare_url(cls, value: Any) -> Any:
        return {"url": value} if isinstance(value, str) else value

    @model_validator(mode="after")
    def _has_payload(self) -> ContentPart:
        if self.type == "text" and self.text is None:
            raise ValueError("a text part needs a 'text' string")
        if self.type == "image_url" and self.image_url is None:
            raise ValueError("an image_url part needs an 'image_url' object or string")
        return self


class ToolCallFunction(RequestModel):
    name: str
    arguments: str


class ToolCall(RequestModel):
    id: str
    type: Literal["function"] = "function"
    function: ToolCallFunction


class ChatMessage(RequestModel):
    role: Literal["system", "developer", "user", "assistant", "tool"]
    content: str | list[ContentPart] | None = None
    name: str | None = None
    tool_calls: list[ToolCall] | None = None
    tool_call_id: str | None = None
    reasoning_content: str | None = None  # an earlier assistant turn's thinking, as we returned it

    @field_validator("content", mode="before")
    @classmethod
    def _content_shape(cls, value: Any) -> Any:
        if value is not None and not isinstance(value, str | list):
            raise ValueError("must be a string or a list of content parts")
        if value == []:
            raise ValueError("must not be an empty list")
        return value

    @model_validator(mode="after")
    def _fits_role(self) -> ChatMessage:
        if self.content is None and not (self.role == "assistant" and self.tool_calls):
            raise ValueError("content is required")
        if self.role not in ("user", "tool") and self.image_parts():
            raise ValueError("image parts are only allowed in user and tool messages")
        return self

    def image_parts(self) -> list[ContentPart]:
        if not isinstance(self.content, list):
            return []
        return [part for part in self.content if part.type == "image_url"]


class FunctionDefinition(RequestModel):
    name: str = Field(min_length=1, max_length=64)
    description: str | None = None
    parameters: dict[str, Any] | None = None
    strict: StrictBool | None = None


class Tool(RequestModel):
    type: Literal["function"]
    function: FunctionDefinition


class FunctionName(RequestModel):
    name: str


class NamedToolChoice(RequestModel):
    type: Literal["function"]
    function: FunctionName


class JsonSchemaFormat(RequestModel):
    name: str | None = None
    schema_: dict[str, Any] = Field(alias="schema")
    strict: StrictBool | None = None


class ResponseFormat(RequestModel):
    type: Literal["text", "json_object", "json_schema"]
    json_schema: JsonSchemaFormat | None = None

    @model_validator(mode="after")
    def _schema_given(self) -> ResponseFormat:
        if self.type == "json_schema" and self.json_schema is None:
            raise ValueError("a json_schema response format needs a json_schema object with a schema")
        return self


class StreamOptions(RequestModel):
    include_usage: StrictBool = False


class ChatCompletionRequest(RequestModel):
    model: str | None = None  # None: the served model
    messages: list[ChatMessage]
    max_tokens: StrictInt | None = Field(default=None, ge=1)
    max_completion_tokens: StrictInt | None = Field(default=None, ge=1)
    temperature: StrictFloat | None = Field(default=None, ge=0, le=2)
    top_p: StrictFloat | None = Field(default=None, gt=0, le=1)
    top_k: StrictInt | None = Field(default=None, ge=-1)  # vLLM extension; -1 or 0: off
    seed: StrictInt | None = Field(default=None, ge=-(2**63), lt=2**64)
    stop: str | list[str] | None = None
    presence_penalty: StrictFloat | None = Field(default=None, ge=-2, le=2)
    frequency_penalty: StrictFloat | None = Field(default=None, ge=-2, le=2)
    repetition_penalty: StrictFloat | None = Field(default=None, gt=0)  # vLLM extension
    ignore_eos: StrictBool | None = None  # vLLM extension
    min_tokens: StrictInt | None = Field(default=None, ge=0)  # vLLM extension
    n: StrictInt = 1
    logprobs: StrictBool | None = None
    stream: StrictBool = False
    stream_options: StreamOptions | None = None
    chat_template_kwargs: dict[str, Any] | None = None
    user: str | None = None
    thinking: StrictBool | None = None  # flashsight extension: false = chat_template_kwargs.enable_thinking false
    tools: list[Tool] | None = None
    tool_choice: Literal["auto", "none", "required"] | NamedToolChoice | None = None
    parallel_tool_calls: StrictBool | None = None
    response_format: ResponseFormat | None = None

    @field_validator("tools")
    @classmethod
    def _unique_names(cls, tools: list[Tool] | None) -> list[Tool] | None:
        names = [tool.function.name for tool in tools or []]
        if len(set(names)) < len(names):
            raise ValueError("function names must be unique")
        return tools

    @field_validator("tool_choice")
    @classmethod
    def _forced_call_is_possible(cls, choice: Any, info: ValidationInfo) -> Any:
        if choice != "required" and not isinstance(choice, NamedToolChoice):
            return choice
        tools = info.data.get("tools") or []
        if not tools:
            raise ValueError("forces a tool call, but no tools are given")
        if isinstance(choice, NamedToolChoice) and choice.function.name not in {t.function.name for t in tools}:
            raise ValueError(f"names {choice.function.name!r}, which is not among the tools")
        return choice

    @field_validator("response_format")
    @classmethod
    def _not_with_a_forced_call(cls, fmt: ResponseFormat | None, info: ValidationInfo) -> ResponseFormat | None:
        choice = info.data.get("tool_choice")
        if fmt is not None and fmt.type != "text" and (choice == "required" or isinstance(choice, NamedToolChoice)):
            raise ValueError("a JSON format cannot be combined with a forced tool call")
        return fmt

    def forces_tool_call(self) -> bool:
        return self.tool_choice == "required" or isinstance(self.tool_choice, NamedToolChoice)

    def template_tools(self) -> list[dict[str, Any]] | None:
        """The tools the model is shown (and whose calls are parsed): none under tool_choice 'none'."""
        if not self.tools or self.tool_choice == "none":
            return None
        return [tool.model_dump(exclude_none=True) for tool in self.tools]

    def guided_decoding(self) -> GuidedDecoding | None:
        """The output constraint `tool_choice` or `response_format` asks for, if any."""
        if self.forces_tool_call():
            choice = self.tool_choice if isinstance(self.tool_choice, str) else self.tool_choice.model_dump()
            parallel = self.parallel_tool_calls is not False
            tools = [_with_parameters(tool) for tool in self.template_tools() or []]
            spec = {"tools": tools, "tool_choice": choice, "parallel_tool_calls": parallel}
            return GuidedDecoding("tool_calls", json.dumps(spec))
        fmt = self.response_format
        if fmt is None or fmt.type == "text":
            return None
        if fmt.type == "json_object":
            return GuidedDecoding("json_object")
        return GuidedDecoding("json_schema", json.dumps(fmt.json_schema.schema_))

    @field_validator("messages")
    @classmethod
    def _not_empty(cls, messages: list[ChatMessage]) -> list[ChatMessage]:
        if not messages:
            raise ValueError("must not be empty")
        return messages

    @field_validator("stop", mode="before")
    @classmethod
    def _stop_shape(cls, value: Any) -> Any:
        if value is not None and not isinstance(value, str | list):
            raise ValueError("must be a string or a list of strings")
        return value

    @field_validator("stop")
    @classmethod
    def _check_stop(cls, stop: str | list[str] | None) -> str | list[str] | None:
        strings = [stop] if isinstance(stop, str) else stop or []
        if len(strings) > MAX_STOP_STRINGS:
            raise ValueError(f"at most {MAX_STOP_STRINGS} stop strings are supported")
        if any(not s for s in strings):
            raise ValueError("stop strings must not be empty")
        return stop

    @field_validator("n")
    @classmethod
    def _single_choice(cls, n: int) -> int:
        if n != 1:
            raise ValueError("only n=1 is supported")
        return n

    @field_validator("logprobs")
    @classmethod
    def _no_logprobs(cls, logprobs: bool | None) -> bool | None:
        if logprobs:
            raise ValueError("logprobs are not supported")
        return logprobs

    @model_validator(mode="after")
    def _min_within_max(self) -> ChatCompletionRequest:
        limit = self.output_limit()
        if self.min_tokens is not None and limit is not None and self.min_tokens > limit:
            raise ValueError("min_tokens must not exceed max_tokens")
        return self

    def output_limit(self) -> int | None:
        """`max_completion_tokens` (OpenAI's current name) wins over `max_tokens`."""
        return self.max_completion_tokens if self.max_completion_tokens is not None else self.max_tokens

    def include_usage(self) -> bool:
        return self.stream_options is not None and self.stream_options.include_usage


def _with_parameters(tool: dict[str, Any]) -> dict[str, Any]:
    """A function without `parameters` takes none, as OpenAI reads it (a grammar would allow any)."""
    empty = {"type": "object", "properties": {}, "additionalProperties": False}
    return {**tool, "function": {"parameters": empty, **tool["function"]}}


# ---- responses ------------------------------------------------------------------------------


class Usage(BaseModel):
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int


class FunctionCall(BaseModel):
    name: str
    arguments: str  # JSON text


class ToolCallOut(BaseModel):
    id: str
    type: Literal["function"] = "function"
    function: FunctionCall


class Box(BaseModel):
    """A grounding box the answer mentions (flashsight extension)."""

    label: str | None
    box_1000: list[int]  # [x1, y1, x2, y2], 0-1000 of the image's width and height
    image_index: int | None  # the conversation's last image (0-based), if any
    box_pixels: list[int] | None  # the corners in that image's pixels, when known


class AssistantMessage(BaseModel):
    role: Literal["assistant"] = "assistant"
    content: str | None
    reasoning_content: str | None = Field(default=None, exclude_if=_is_none)
    tool_calls: list[ToolCallOut] | None = Field(default=None, exclude_if=_is_none)
    boxes: list[Box] | None = Field(default=None, exclude_if=_is_none)


class Choice(BaseModel):
    index: int = 0
    message: AssistantMessage
    logprobs: None = None
    finish_reason: str


class ChatCompletion(BaseModel):
    id: str
    object: Literal["chat.completion"] = "chat.completion"
    created: int
    model: str
    choices: list[Choice]
    usage: Usage


class ChunkDelta(BaseModel):
    role: Literal["assistant"] | None = Field(default=None, exclude_if=_is_none)
    content: str | None = Field(default=None, exclude_if=_is_none)
    reasoning_content: str | None = Field(default=None, exclude_if=_is_none)
    tool_calls: list[dict[str, Any]] | None = Field(default=None, exclude_if=_is_none)  # OpenAI's delta shape
    boxes: list[Box] | None = Field(default=None, exclude_if=_is_none)  # on the last chunk, when found


class ChunkChoice(BaseModel):
    index: int = 0
    delta: ChunkDelta
    logprobs: None = None
    finish_reason: str | None = None


class ChatCompletionChunk(BaseModel):
    id: str
    object: Literal["chat.completion.chunk"] = "chat.completion.chunk"
    created: int
    model: str
    choices: list[ChunkChoice]
    usage: Usage | None = Field(default=None, exclude_if=_is_none)


class ModelCard(BaseModel):
    id: str
    object: Literal["model"] = "model"
    created: int
    owned_by: str = "flashsight"
    max_model_len: int  # vLLM extension


class ModelList(BaseModel):
    object: Literal["list"] = "list"
    data: list[ModelCard]
