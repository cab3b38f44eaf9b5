"""The server's one typed configuration object, read from arguments and `FLASHSIGHT_*` variables."""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

MIB = 1024 * 1024


def default_data_dir() -> Path:
    """Where the server keeps its SQLite store (keys, users, conversations) and logs."""
    base = os.environ.get("XDG_DATA_HOME") or os.path.join(os.path.expanduser("~"), ".local", "share")
    return Path(base) / "flashsight"

# "host", "host:port", "[v6addr]" or "[v6addr]:port": no scheme, path or spaces.
_HOST_ENTRY = re.compile(r"^(\[[0-9a-fA-F:.]+\]|[A-Za-z0-9.-]+)(:\d{1,5})?$")


class ServerSettings(BaseSettings):
    """Everything the HTTP layer needs; validated once at start-up and passed down."""

    model_config = SettingsConfigDict(env_prefix="FLASHSIGHT_", extra="ignore", frozen=True)

    host: str = "127.0.0.1"
    port: int = Field(default=8000, ge=0, le=65535)
    log_level: str = "info"

    # One directory for everything the server stores; the SQLite file lives inside it.
    data_dir: Path = Field(default_factory=default_data_dir)

    # Requests. JSON bodies carry base64 images, hence the generous body limit.
    max_body_bytes: int = Field(default=64 * MIB, gt=0)
    max_messages: int = Field(default=256, gt=0)
    max_images_per_request: int = Field(default=8, ge=0)

    # Images, wherever they come from.
    max_image_bytes: int = Field(default=20 * MIB, gt=0)
    max_image_pixels: int = Field(default=50_000_000, gt=0)
    max_image_aspect_ratio: float = Field(default=200.0, ge=1.0)
    image_load_concurrency: int = Field(default=4, gt=0)

    # Image URLs may only reach public addresses; these "host" / "host:port" entries are let
    # through even when they resolve to a private or loopback address.
    allowed_image_hosts: Annotated[tuple[str, ...], NoDecode] = ()
    image_connect_timeout_s: float = Field(default=5.0, gt=0)
    image_total_timeout_s: float = Field(default=20.0, gt=0)
    image_max_redirects: int = Field(default=3, ge=0)

    @field_validator("allowed_image_hosts", mode="before")
    @classmethod
    def _split_hosts(cls, value: Any) -> Any:
        """`FLASHSIGHT_ALLOWED_IMAGE_HOSTS=a.example,b.example:8080` reads as two hosts."""
        if isinstance(value, str):
            return tuple(entry.strip() for entry in value.split(",") if entry.strip())
        return value

    @field_validator("allowed_image_hosts")
    @classmethod
    def _check_hosts(cls, hosts: tuple[str, ...]) -> tuple[str, ...]:
        for entry in hosts:
            if not _HOST_ENTRY.match(entry):
                raise ValueError(f"{entry!r} is not a host or host:port (no scheme, no path)")
        return tuple(entry.lower() for entry in hosts)

    # ---- security (keys, logins, limits) ----

    # ---- the web page and its history ----

    # ---- operations (audit log, metrics, supervisor) ----

    # The audit log: one JSONL record per chat request, encrypted when a key is given (a file
    # holding the base64 key, or the key itself in FLASHSIGHT_AUDIT_KEY).
    audit_enabled: bool = True
    audit_dir: Path | None = None  # default: data_dir / "audit"
    audit_key_file: Path | None = None
    audit_key: SecretStr | None = None
    audit_include_images: bool = False  # the images themselves, not only their hashes and sizes
    audit_rotate_bytes: int = Field(default=100 * MIB, gt=0)
    audit_rotate_daily: bool = True
    audit_retention_days: int = Field(default=90, ge=0)  # 0: keep every file
    audit_on_failure: Literal["serve", "refuse"] = "serve"  # when a record cannot be written

    # Prometheus metrics at /metrics, or on their own port (no auth there: bind it privately).
    metrics_enabled: bool = True
    metrics_port: int | None = Field(default=None, ge=0, le=65535)
    metrics_host: str = "127.0.0.1"

    @property
    def audit_path(self) -> Path:
        return self.audit_dir or self.data_dir / "audit"

    @property
    def database_path(self) -> Path:
        return self.data_dir / "flashsight.db"
