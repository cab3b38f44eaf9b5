"""The server's one typed configuration object, read from arguments and `FLASHSIGHT_*` variables."""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import Field, SecretStr, field_validator, model_validator
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
    # The TOML file read beneath the environment (set by --config or FLASHSIGHT_CONFIG).
    config: Path | None = None
    # auto: on when `host` is not a loopback address. off beyond loopback is allowed, loudly.
    auth: Literal["auto", "on", "off"] = "auto"
    session_hours: float = Field(default=12.0, gt=0, le=24 * 30)
    # Client networks let in (CIDRs, IPv4 or IPv6); empty lets in every address.
    allowed_networks: Annotated[tuple[str, ...], NoDecode] = ()
    # Proxies whose X-Forwarded-For is believed (CIDRs); from anyone else the header is ignored.
    trusted_proxies: Annotated[tuple[str, ...], NoDecode] = ()
    # Origins a browser may call the API from; empty: none (CORS off).
    cors_origins: Annotated[tuple[str, ...], NoDecode] = ()
    # Per key and per client address; a key's own limits (keys create --rpm/--tpm) replace these.
    rate_limit_requests_per_minute: int = Field(default=600, ge=0)  # 0: no limit
    rate_limit_tokens_per_minute: int = Field(default=4_000_000, ge=0)
    login_attempts_per_minute: int = Field(default=10, gt=0)  # per address and per user name
    # Circuit breaker: this many failed requests in a row from one address bans it for ban_seconds.
    ban_after_failures: int = Field(default=5, ge=0)  # 0: never ban
    ban_seconds: float = Field(default=600.0, gt=0)
    # Per-address limits and bans skip loopback callers (the operator's own tools) unless this is on.
    limit_loopback: bool = False
    max_header_bytes: int = Field(default=16 * 1024, ge=1024)
    max_json_depth: int = Field(default=32, ge=4)
    max_tokens_cap: int = Field(default=32768, gt=0)
    request_timeout_s: float = Field(default=600.0, gt=0)
    body_timeout_s: float = Field(default=30.0, gt=0)  # the whole body must arrive within this
    max_concurrent_requests_per_client: int = Field(default=128, gt=0)
    ssl_certfile: Path | None = None
    ssl_keyfile: Path | None = None

    @field_validator("allowed_networks", "trusted_proxies", "cors_origins", mode="before")
    @classmethod
    def _split_lists(cls, value: Any) -> Any:
        if isinstance(value, str):
            return tuple(entry.strip() for entry in value.split(",") if entry.strip())
        return value

    @field_validator("allowed_networks", "trusted_proxies")
    @classmethod
    def _check_networks(cls, networks: tuple[str, ...]) -> tuple[str, ...]:
        from flashsight.security.network import parse_networks

        parse_networks(networks)
        return networks

    @field_validator("cors_origins")
    @classmethod
    def _check_origins(cls, origins: tuple[str, ...]) -> tuple[str, ...]:
        from flashsight.security.network import check_origin

        return tuple(check_origin(origin) for origin in origins)

    @model_validator(mode="after")
    def _refuse_unsafe(self) -> ServerSettings:
        from flashsight.security.network import refuse_unsafe_settings

        refuse_unsafe_settings(self)
        return self

    @classmethod
    def settings_customise_sources(
        cls, settings_cls: type[BaseSettings], init_settings: Any, env_settings: Any, **other_sources: Any
    ) -> tuple[Any, ...]:
        from flashsight.security.config_file import ConfigFileSource

        named = init_settings.init_kwargs.get("config") or os.environ.get("FLASHSIGHT_CONFIG")
        return init_settings, env_settings, ConfigFileSource(settings_cls, Path(named) if named else None)

    def auth_enabled(self) -> bool:
        from flashsight.security.network import is_loopback_host

        return self.auth == "on" or (self.auth == "auto" and not is_loopback_host(self.host))

    # ---- the web page and its history ----
    # The page downscales an image in the browser until its long side fits this, before upload.
    web_image_long_side: int = Field(default=1536, ge=64, le=8192)
    # Each image a conversation keeps, so a reload shows it; a larger one is refused with 413.
    web_max_stored_image_bytes: int = Field(default=8 * MIB, gt=0)

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
