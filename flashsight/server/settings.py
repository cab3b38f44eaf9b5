"""The server's one typed configuration object, read from arguments and `FLASHSIGHT_*` variables."""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Annotated, Any

from pydantic import Field, field_validator, model_validator
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

    # The engine runs in a child process. It counts as hung when it sends no heartbeat, or
    # completes no step while requests wait, for `engine_watchdog_s`; then it is restarted after
    # a back-off that doubles per consecutive failure, up to `engine_restart_backoff_max_s`.
    engine_watchdog_s: float = Field(default=60.0, gt=0)
    engine_heartbeat_s: float = Field(default=0.5, gt=0)
    engine_restart_backoff_s: float = Field(default=1.0, gt=0)
    engine_restart_backoff_max_s: float = Field(default=60.0, gt=0)
    # Above this share of the GPU's memory in use (every process's), the engine drops its caches.
    # It must sit above the KV cache's share (--gpu-memory-utilization, 0.9 by default).
    engine_gpu_trim_fraction: float = Field(default=0.95, gt=0, le=1)
    # Test hook: a request whose messages contain this text hangs the engine. Never set it in use.
    engine_test_hang_marker: str | None = None
    # On SIGTERM: stop accepting, let requests in flight finish for this long, then stop.
    shutdown_grace_s: float = Field(default=30.0, ge=0)

    @model_validator(mode="after")
    def _check_watchdog(self) -> ServerSettings:
        if self.engine_watchdog_s <= 2 * self.engine_heartbeat_s:
            raise ValueError("engine_watchdog_s must be more than twice engine_heartbeat_s")
        return self

    @property
    def database_path(self) -> Path:
        return self.data_dir / "flashsight.db"
