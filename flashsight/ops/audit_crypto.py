"""The audit log's encryption at rest: AES-256-GCM, one fresh 96-bit nonce per record.

Each record is sealed with its place in the log (file name and line number) as associated data, so
a record that is edited, moved to another line or another file, or reordered fails authentication.
A sealed line is JSON too: `{"key_id": ..., "nonce": ..., "ciphertext": ...}`; `key_id` names the
key (a hash of it, never the key), so a reader can tell "wrong key" from "tampered".
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import os
from pathlib import Path

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

KEY_BYTES = 32
NONCE_BYTES = 12


class AuditKeyError(ValueError):
    """A key that is missing, unreadable or not 32 bytes of base64; the message says which."""


class RecordAuthenticationError(ValueError):
    """A sealed record that does not open: altered, moved, or sealed under another key."""


def parse_key(text: str, source: str) -> bytes:
    try:
        key = base64.b64decode(text.strip(), validate=True)
    except (binascii.Error, ValueError):
        raise AuditKeyError(f"the audit key in {source} is not base64") from None
    if len(key) != KEY_BYTES:
        raise AuditKeyError(f"the audit key in {source} is {len(key)} bytes; it must be {KEY_BYTES}")
    return key


def read_key_file(path: Path) -> bytes:
    try:
        text = path.read_text()
    except OSError as exc:
        raise AuditKeyError(f"cannot read the audit key file {path}: {exc.strerror or exc}") from None
    return parse_key(text, f"the file {path}")


def write_new_key_file(path: Path) -> None:
    """A fresh random key, readable by its owner only; an existing file is never overwritten."""
    encoded = base64.b64encode(AESGCM.generate_key(bit_length=KEY_BYTES * 8)) + b"\n"
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(descriptor, "wb") as file:
        file.write(encoded)
        file.flush()
        os.fsync(file.fileno())


def key_id(key: bytes) -> str:
    return hashlib.sha256(b"flashsight audit key\0" + key).hexdigest()[:16]


def place_of(file_name: str, line_number: int) -> bytes:
    """The associated data that ties a record to its line."""
    return f"{file_name}:{line_number}".encode()


def is_sealed(entry: dict) -> bool:
    return "ciphertext" in entry and "nonce" in entry


class RecordCipher:
    def __init__(self, key: bytes) -> None:
        self._aead = AESGCM(key)
        self.key_id = key_id(key)

    def seal(self, plaintext: str, file_name: str, line_number: int) -> str:
        nonce = os.urandom(NONCE_BYTES)
        sealed = self._aead.encrypt(nonce, plaintext.encode(), place_of(file_name, line_number))
        entry = {"key_id": self.key_id, "nonce": _b64(nonce), "ciphertext": _b64(sealed)}
        return json.dumps(entry, separators=(",", ":"))

    def open(self, entry: dict, file_name: str, line_number: int) -> str:
        if entry.get("key_id") != self.key_id:
            raise RecordAuthenticationError("sealed under another key")
        try:
            nonce = base64.b64decode(entry["nonce"], validate=True)
            sealed = base64.b64decode(entry["ciphertext"], validate=True)
            return self._aead.decrypt(nonce, sealed, place_of(file_name, line_number)).decode()
        except (InvalidTag, binascii.Error, ValueError, TypeError):
            raise RecordAuthenticationError("authentication failed: the record was altered or moved") from None


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()
