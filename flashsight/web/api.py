"""`/api/conversations`: the page's history, every query scoped to the caller's owner id."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Query, Request, Response

from flashsight.security.principal import principal_of
from flashsight.server.errors import NOT_FOUND, APIError
from flashsight.web.images import stored_image
from flashsight.web.schemas import (
    ConversationCreate,
    ConversationDetail,
    ConversationPublic,
    ConversationUpdate,
    MessageCreate,
    MessagePublic,
)
from flashsight.web.store import Conversation, ConversationStore, Message, NewMessage

router = APIRouter(prefix="/api/conversations")


def _store(request: Request) -> ConversationStore:
    return request.app.state.conversations


def _owner(request: Request) -> str:
    return principal_of(request).owner


StoreDep = Annotated[ConversationStore, Depends(_store)]
OwnerDep = Annotated[str, Depends(_owner)]


def not_found(what: str) -> APIError:
    return APIError(404, f"No such {what}.", type=NOT_FOUND, code="not_found")


@router.get("")
def list_conversations(
    store: StoreDep, owner: OwnerDep, q: Annotated[str, Query(max_length=200)] = ""
) -> list[ConversationPublic]:
    return [public(conversation) for conversation in store.list(owner, q.strip())]


@router.post("", status_code=201)
def create_conversation(body: ConversationCreate, store: StoreDep, owner: OwnerDep) -> ConversationPublic:
    return public(store.create(owner, body.title, body.settings.model_dump()))


@router.get("/{conversation_id}")
def get_conversation(conversation_id: str, store: StoreDep, owner: OwnerDep) -> ConversationDetail:
    conversation = store.get(owner, conversation_id)
    messages = store.messages(owner, conversation_id)
    if conversation is None or messages is None:
        raise not_found("conversation")
    shown = [message_public(conversation_id, message) for message in messages]
    return ConversationDetail(**public(conversation).model_dump(), messages=shown)


@router.patch("/{conversation_id}")
def update_conversation(
    conversation_id: str, body: ConversationUpdate, store: StoreDep, owner: OwnerDep
) -> ConversationPublic:
    settings = body.settings.model_dump() if body.settings is not None else None
    conversation = store.update(owner, conversation_id, body.title, settings)
    if conversation is None:
        raise not_found("conversation")
    return public(conversation)


@router.delete("/{conversation_id}", status_code=204)
def delete_conversation(conversation_id: str, store: StoreDep, owner: OwnerDep) -> Response:
    if not store.delete(owner, conversation_id):
        raise not_found("conversation")
    return Response(status_code=204)


@router.post("/{conversation_id}/messages", status_code=201)
def add_message(
    conversation_id: str, body: MessageCreate, request: Request, store: StoreDep, owner: OwnerDep
) -> MessagePublic:
    max_bytes = request.app.state.settings.web_max_stored_image_bytes
    images = [stored_image(url, max_bytes, f"images[{index}]") for index, url in enumerate(body.images)]
    boxes = [box.model_dump() for box in body.boxes] if body.boxes is not None else None
    new = NewMessage(body.role, body.content, body.reasoning, boxes, images)
    message = store.add_message(owner, conversation_id, new)
    if message is None:
        raise not_found("conversation")
    return message_public(conversation_id, message)


@router.delete("/{conversation_id}/messages/{message_id}", status_code=204)
def delete_message(conversation_id: str, message_id: int, store: StoreDep, owner: OwnerDep) -> Response:
    if not store.delete_message(owner, conversation_id, message_id):
        raise not_found("message")
    return Response(status_code=204)


@router.get("/{conversation_id}/images/{image_id}")
def get_image(conversation_id: str, image_id: int, store: StoreDep, owner: OwnerDep) -> Response:
    image = store.image(owner, conversation_id, image_id)
    if image is None:
        raise not_found("image")
    headers = {"Cache-Control": "private, max-age=86400", "Content-Disposition": "inline"}
    return Response(image.data, media_type=image.media_type, headers=headers)


def public(conversation: Conversation) -> ConversationPublic:
    return ConversationPublic(
        id=conversation.id,
        title=conversation.title,
        settings=conversation.settings,
        created_at=conversation.created_at,
        updated_at=conversation.updated_at,
    )


def message_public(conversation_id: str, message: Message) -> MessagePublic:
    urls = [f"/api/conversations/{conversation_id}/images/{image_id}" for image_id in message.image_ids]
    return MessagePublic(
        id=message.id,
        role=message.role,
        content=message.content,
        reasoning=message.reasoning,
        boxes=message.boxes,
        images=urls,
        created_at=message.created_at,
    )
