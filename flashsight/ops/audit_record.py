"""One chat request as an audit record: who asked what, with which images, and what came back.

Built after the response is sent (in a worker thread: images may be re-encoded). Only the
messages' text and the images' hashes and sizes go in, never headers, keys or cookies; the images
themselves only when `include_images` is set.
"""

from __future__ import annotations

import base64
import io
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit, urlunsplit

from flashsight.ops.audit_trace import RequestTrace

if TYPE_CHECKING:
    from PIL import Image

    from flashsight.server.schemas import ChatMessage


def request_record(trace: RequestTrace, include_images: bool) -> dict[str, Any]:
    """The request side of the record (its text and images); the middleware adds the rest."""
    if trace.body is None:
        return {}
    images = iter(_decoded_images(trace))
    messages = [_message(message, images, include_images) for message in trace.body.messages]
    named = {"model": trace.body.model} if trace.body.model is not None else {}
    return named | {"stream": bool(trace.body.stream), "messages": messages}


def _decoded_images(trace: RequestTrace) -> Iterator[Image.Image | None]:
    """The request's images in order as the engine got them; None for each when it never did."""
    if trace.chat_request is not None:
        for message in trace.chat_request.messages:
            for part in message["content"] if isinstance(message["content"], list) else []:
                if part.get("type") == "image":
                    yield part["image"]
    while True:
        yield None


def _message(message: ChatMessage, images: Iterator[Image.Image | None], include_images: bool) -> dict[str, Any]:
    entry: dict[str, Any] = {"role": message.role, "text": _text_of(message)}
    parts = message.content if isinstance(message.content, list) else []
    image_entries = [_image(part.image_url.url, next(images), include_images) for part in parts if part.image_url]
    if image_entries:
        entry["images"] = image_entries
    if message.tool_calls:
        entry["tool_calls"] = [{"name": c.function.name, "arguments": c.function.arguments} for c in message.tool_calls]
    return entry


def _text_of(message: ChatMessage) -> str:
    texts = [message.content] if isinstance(message.content, str) else [
        part.text for part in message.content or [] if part.type == "text" and part.text is not None
    ]  # fmt: skip
    return "\n".join(texts)


def _image(url: str, image: Image.Image | None, include_images: bool) -> dict[str, Any]:
    is_data = url[:5].lower() == "data:"
    entry: dict[str, Any] = {"source": "data" if is_data else _without_query(url)}
    if image is None:
        return entry | {"loaded": False}
    entry |= {"sha256": image.info.get("source_sha256"), "bytes": image.info.get("source_bytes"),
              "width": image.width, "height": image.height}  # fmt: skip
    if include_images:
        entry["data_url"] = url if is_data else _png_data_url(image)
    return entry


def _without_query(url: str) -> str:
    """An image URL without its query or fragment, where signed URLs keep their tokens."""
    parts = urlsplit(url[:2000])
    host = parts.netloc.rpartition("@")[2]  # user:password@ never reaches the log
    return urlunsplit((parts.scheme, host, parts.path, "", ""))


def _png_data_url(image: Image.Image) -> str:
    """A fetched image as the model saw it; its original bytes are not kept."""
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode()
