"""Where a benchmark ran: the date, the server, and its GPU when the server is on this machine."""

from __future__ import annotations

import platform
import shutil
import socket
import subprocess
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlsplit

NVIDIA_SMI_TIMEOUT_S = 10
LOCAL_NAMES = {"localhost", "127.0.0.1", "::1", "0.0.0.0", "[::1]"}


def is_local(base_url: str) -> bool:
    """True when the URL names this machine, so this machine's GPUs are the server's."""
    host = urlsplit(base_url).hostname or ""
    if host in LOCAL_NAMES or host.startswith("127."):
        return True
    return host in {socket.gethostname(), socket.getfqdn()}


def gpus() -> list[dict[str, Any]] | None:
    """Each GPU's name and memory (MiB) from nvidia-smi; None where there is no nvidia-smi or it fails."""
    executable = shutil.which("nvidia-smi")
    if executable is None:
        return None
    query = ["--query-gpu=name,memory.total,memory.used", "--format=csv,noheader,nounits"]
    try:
        done = subprocess.run([executable, *query], capture_output=True, text=True, timeout=NVIDIA_SMI_TIMEOUT_S)
    except (OSError, subprocess.TimeoutExpired):
        return None
    if done.returncode != 0:
        return None
    return [_gpu(line) for line in done.stdout.splitlines() if line.strip()]


def _gpu(line: str) -> dict[str, Any]:
    name, total, used = (field.strip() for field in line.rsplit(",", 2))
    return {"name": name, "memory_total_mib": _number(total), "memory_used_mib": _number(used)}


def _number(text: str) -> int | None:
    return int(text) if text.isdigit() else None


def environment(base_url: str, model: str) -> dict[str, Any]:
    local = is_local(base_url)
    return {
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "base_url": base_url,
        "model": model,
        "server_is_local": local,
        "gpus": gpus() if local else None,
        "client": {"python": platform.python_version(), "platform": platform.platform()},
    }
