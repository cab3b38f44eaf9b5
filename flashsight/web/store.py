"""The page's history in SQLite: conversations, their messages and the images those carry.

Every method takes the owner (`principal_of(request).owner`) and only ever reads or changes that
owner's rows, so another caller's id behaves exactly like an id that does not exist.
"""

from __future__ import annotations

import json
import secrets
import sqlite3
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

SCHEMA = """
CREATE TABLE IF NOT EXISTS conversations (
    id TEXT PRIMARY KEY,
    owner TEXT NOT NULL,
    title TEXT NOT NULL,
    settings TEXT NOT NULL,
    created_at REAL NOT NULL,
    updated_at REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS conversations_by_owner ON conversations (owner, updated_at);
CREATE TABLE IF NOT EXISTS conversation_messages (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    conversation_id TEXT NOT NULL REFERENCES conversations (id) ON DELETE CASCADE,
    role TEXT NOT NULL,
    content TEXT NOT NULL,
    reasoning TEXT,
    boxes TEXT,
    created_at REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS messages_by_conversation ON conversation_messages (conversation_id, id);
CREATE TABLE IF NOT EXISTS conversation_images (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    message_id INTEGER NOT NULL REFERENCES conversation_messages (id) ON DELETE CASCADE,
    position INTEGER NOT NULL,
    media_type TEXT NOT NULL,
    data BLOB NOT NULL
);
CREATE INDEX IF NOT EXISTS images_by_message ON conversation_images (message_id, position);
"""


@dataclass(frozen=True)
class Conversation:
    id: str
    title: str
    settings: dict[str, Any]
    created_at: float
    updated_at: float


@dataclass(frozen=True)
class StoredImage:
    media_type: str
    data: bytes


@dataclass(frozen=True)
class NewMessage:
    role: str
    content: str
    reasoning: str | None = None
    boxes: list[dict[str, Any]] | None = None
    images: list[StoredImage] = field(default_factory=list)


@dataclass(frozen=True)
class Message:
    id: int
    role: str
    content: str
    reasoning: str | None
    boxes: list[dict[str, Any]] | None
    image_ids: list[int]
    created_at: float


class ConversationStore:
    """One SQLite file; a connection per call, since handlers run on several threads."""

    def __init__(self, database_path: Path) -> None:
        self.database_path = database_path
        self._schema_lock = threading.Lock()
        self._schema_ready = False

    @contextmanager
    def _connect(self) -> Iterator[sqlite3.Connection]:
        self._ensure_schema()
        connection = sqlite3.connect(self.database_path, timeout=10)
        try:
            connection.execute("PRAGMA foreign_keys = ON")
            with connection:  # one transaction: committed on success, rolled back on error
                yield connection
        finally:
            connection.close()

    def _ensure_schema(self) -> None:
        """Created on first use, so an app that never serves the page never touches the disk."""
        with self._schema_lock:
            if self._schema_ready:
                return
            self.database_path.parent.mkdir(parents=True, exist_ok=True)
            connection = sqlite3.connect(self.database_path, timeout=10)
            try:
                connection.execute("PRAGMA journal_mode = WAL")
                connection.executescript(SCHEMA)
            finally:
                connection.close()
            self._schema_ready = True

    # ---- conversations ----

    def list(self, owner: str, title_contains: str = "") -> list[Conversation]:
        pattern = "%" + _escape_like(title_contains) + "%"
        with self._connect() as db:
            rows = db.execute(
                "SELECT id, title, settings, created_at, updated_at FROM conversations"
                " WHERE owner = ? AND title LIKE ? ESCAPE '\\' ORDER BY updated_at DESC, rowid DESC",
                (owner, pattern),
            ).fetchall()
        return [_conversation(row) for row in rows]

    def create(self, owner: str, title: str, settings: dict[str, Any]) -> Conversation:
        now = time.time()
        conversation = Conversation(secrets.token_urlsafe(12), title, settings, now, now)
        with self._connect() as db:
            db.execute(
                "INSERT INTO conversations (id, owner, title, settings, created_at, updated_at) VALUES (?, ?, ?, ?, ?, ?)",
                (conversation.id, owner, title, json.dumps(settings), now, now),
            )
        return conversation

    def get(self, owner: str, conversation_id: str) -> Conversation | None:
        with self._connect() as db:
            return self._get(db, owner, conversation_id)

    def update(
        self, owner: str, conversation_id: str, title: str | None, settings: dict[str, Any] | None
    ) -> Conversation | None:
        with self._connect() as db:
            current = self._get(db, owner, conversation_id)
            if current is None:
                return None
            new_title = current.title if title is None else title
            new_settings = current.settings if settings is None else settings
            db.execute(
                "UPDATE conversations SET title = ?, settings = ?, updated_at = ? WHERE id = ? AND owner = ?",
                (new_title, json.dumps(new_settings), time.time(), conversation_id, owner),
            )
            return self._get(db, owner, conversation_id)

    def delete(self, owner: str, conversation_id: str) -> bool:
        with self._connect() as db:
            cursor = db.execute("DELETE FROM conversations WHERE id = ? AND owner = ?", (conversation_id, owner))
        return cursor.rowcount > 0

    def _get(self, db: sqlite3.Connection, owner: str, conversation_id: str) -> Conversation | None:
        row = db.execute(
            "SELECT id, title, settings, created_at, updated_at FROM conversations WHERE id = ? AND owner = ?",
            (conversation_id, owner),
        ).fetchone()
        return _conversation(row) if row else None

    # ---- messages and their images ----

    def messages(self, owner: str, conversation_id: str) -> list[Message] | None:
        with self._connect() as db:
            if self._get(db, owner, conversation_id) is None:
                return None
            rows = db.execute(
                "SELECT id, role, content, reasoning, boxes, created_at FROM conversation_messages"
                " WHERE conversation_id = ? ORDER BY id",
                (conversation_id,),
            ).fetchall()
            images = self._image_ids(db, conversation_id)
        return [_message(row, images.get(row[0], [])) for row in rows]

    def add_message(self, owner: str, conversation_id: str, message: NewMessage) -> Message | None:
        now = time.time()
        with self._connect() as db:
            if self._get(db, owner, conversation_id) is None:
                return None
            boxes = json.dumps(message.boxes) if message.boxes is not None else None
            cursor = db.execute(
                "INSERT INTO conversation_messages (conversation_id, role, content, reasoning, boxes, created_at)"
                " VALUES (?, ?, ?, ?, ?, ?)",
                (conversation_id, message.role, message.content, message.reasoning, boxes, now),
            )
            message_id = cursor.lastrowid
            image_ids = [self._add_image(db, message_id, position, image) for position, image in enumerate(message.images)]
            db.execute("UPDATE conversations SET updated_at = ? WHERE id = ?", (now, conversation_id))
        return Message(message_id, message.role, message.content, message.reasoning, message.boxes, image_ids, now)

    def delete_message(self, owner: str, conversation_id: str, message_id: int) -> bool:
        with self._connect() as db:
            if self._get(db, owner, conversation_id) is None:
                return False
            cursor = db.execute(
                "DELETE FROM conversation_messages WHERE id = ? AND conversation_id = ?", (message_id, conversation_id)
            )
        return cursor.rowcount > 0

    def image(self, owner: str, conversation_id: str, image_id: int) -> StoredImage | None:
        with self._connect() as db:
            row = db.execute(
                "SELECT i.media_type, i.data FROM conversation_images i"
                " JOIN conversation_messages m ON m.id = i.message_id"
                " JOIN conversations c ON c.id = m.conversation_id"
                " WHERE i.id = ? AND c.id = ? AND c.owner = ?",
                (image_id, conversation_id, owner),
            ).fetchone()
        return StoredImage(row[0], row[1]) if row else None

    def _add_image(self, db: sqlite3.Connection, message_id: int, position: int, image: StoredImage) -> int:
        cursor = db.execute(
            "INSERT INTO conversation_images (message_id, position, media_type, data) VALUES (?, ?, ?, ?)",
            (message_id, position, image.media_type, image.data),
        )
        return cursor.lastrowid

    def _image_ids(self, db: sqlite3.Connection, conversation_id: str) -> dict[int, list[int]]:
        rows = db.execute(
            "SELECT i.message_id, i.id FROM conversation_images i JOIN conversation_messages m ON m.id = i.message_id"
            " WHERE m.conversation_id = ? ORDER BY i.message_id, i.position",
            (conversation_id,),
        ).fetchall()
        by_message: dict[int, list[int]] = {}
        for message_id, image_id in rows:
            by_message.setdefault(message_id, []).append(image_id)
        return by_message


def _escape_like(text: str) -> str:
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


def _conversation(row: tuple) -> Conversation:
    return Conversation(row[0], row[1], json.loads(row[2]), row[3], row[4])


def _message(row: tuple, image_ids: list[int]) -> Message:
    boxes = json.loads(row[4]) if row[4] is not None else None
    return Message(row[0], row[1], row[2], row[3], boxes, image_ids, row[5])
