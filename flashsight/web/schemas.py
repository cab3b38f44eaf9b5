"""What the page may send to `/api/conversations` and what it gets back."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StringConstraints

MAX_IMAGES_PER_MESSAGE = 8
MAX_BOXES_PER_MESSAGE = 200

Title = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=200)]


class RequestModel(BaseModel):
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)


class ChatSettings(RequestModel):
    """One conversation's generation settings; None leaves the model's own default."""

    system_prompt: str = Field(default="", max_length=20_000)
    temperature: float | None = Field(default=None, ge=0, le=2)
    max_tokens: int | None = Field(default=None, ge=1, le=1_000_000)
    thinking: bool = True


class ConversationCreate(RequestModel):
    title: Title = "New chat"
    settings: ChatSettings = Field(default_factory=ChatSettings)


class ConversationUpdate(RequestModel):
    title: Title | None = None
    settings: ChatSettings | None = None


class Box(BaseModel):
    """A grounding box as `/v1/chat/completions` returned it (see the README)."""

    model_config = ConfigDict(extra="ignore", allow_inf_nan=False)

    label: str | None = Field(default=None, max_length=500)
    box_1000: list[float] = Field(min_length=4, max_length=4)
    image_index: int | None = None
    box_pixels: list[float] | None = Field(default=None, min_length=4, max_length=4)


class MessageCreate(RequestModel):
    role: Literal["user", "assistant"]
    content: str = Field(default="", max_length=1_000_000)
    reasoning: str | None = Field(default=None, max_length=1_000_000)
    boxes: list[Box] | None = Field(default=None, max_length=MAX_BOXES_PER_MESSAGE)
    # data:image/...;base64 URLs, as the page sends them to /v1/chat/completions.
    images: list[str] = Field(default_factory=list, max_length=MAX_IMAGES_PER_MESSAGE)


class ConversationPublic(BaseModel):
    id: str
    title: str
    settings: dict[str, Any]
    created_at: float
    updated_at: float


class MessagePublic(BaseModel):
    id: int
    role: str
    content: str
    reasoning: str | None
    boxes: list[dict[str, Any]] | None
    images: list[str]  # URLs under /api/conversations/{id}/images/
    created_at: float


class ConversationDetail(ConversationPublic):
    messages: list[MessagePublic]
