"""Helpers for the API tests: `flashsight serve` as a real subprocess, and small local HTTP servers
that play the part of image hosts (one allowed, one that must never be reached)."""

from __future__ import annotations

import io
import os
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx
from PIL import Image

REPO_ROOT = Path(__file__).resolve().parent.parent
STARTUP_TIMEOUT_S = 180.0
LIVE_MAX_BODY_BYTES = 1024 * 1024  # small, so the 413 tests send little


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def png_bytes(size: tuple[int, int] = (64, 64), color: tuple[int, int, int] = (200, 30, 30)) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", size, color).save(buffer, format="PNG")
    return buffer.getvalue()


@dataclass
class ServerProcess:
    base_url: str
    process: subprocess.Popen
    log: object  # the file its stdout and stderr go to

    def log_text(self) -> str:
        return _tail(self.log, chars=100_000)


@contextmanager
def flashsight_server(
    model_dir: str, allow_hosts: list[str], env: dict[str, str], extra_args: tuple[str, ...] = ()
) -> Iterator[str]:
    """Start `python -m flashsight.cli serve` on a free port; yield its base URL once ready."""
    with flashsight_process(model_dir, allow_hosts, env, extra_args) as server:
        yield server.base_url


@contextmanager
def flashsight_process(
    model_dir: str, allow_hosts: list[str], env: dict[str, str], extra_args: tuple[str, ...] = ()
) -> Iterator[ServerProcess]:
    """Like `flashsight_server`, with the process and its log at hand."""
    port = free_port()
    command = [sys.executable, "-m", "flashsight.cli", "serve", "--model", model_dir, "--port", str(port)]
    command += ["--device", "cpu"] + [arg for host in allow_hosts for arg in ("--allow-image-host", host)]
    command += list(extra_args)
    python_path = os.pathsep.join(filter(None, [str(REPO_ROOT), os.environ.get("PYTHONPATH")]))
    full_env = {**os.environ, **env, "PYTHONPATH": python_path}
    with tempfile.TemporaryFile("w+") as log, tempfile.TemporaryDirectory() as data_dir:
        full_env.setdefault("FLASHSIGHT_DATA_DIR", data_dir)
        process = subprocess.Popen(command, cwd=REPO_ROOT, env=full_env, stdout=log, stderr=subprocess.STDOUT)
        try:
            base_url = f"http://127.0.0.1:{port}"
            _wait_until_ready(base_url, process, log)
            yield ServerProcess(base_url, process, log)
        finally:
            _stop(process)


def _wait_until_ready(base_url: str, process: subprocess.Popen, log) -> None:
    deadline = time.monotonic() + STARTUP_TIMEOUT_S
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"flashsight serve exited with {process.returncode}:\n{_tail(log)}")
        try:
            if httpx.get(f"{base_url}/ready", timeout=2).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.2)
    raise RuntimeError(f"flashsight serve was not ready after {STARTUP_TIMEOUT_S:.0f}s:\n{_tail(log)}")


def _tail(log, chars: int = 4000) -> str:
    log.seek(0)
    return log.read()[-chars:]


def _stop(process: subprocess.Popen) -> None:
    if process.poll() is not None:
        return
    process.terminate()
    try:
        process.wait(timeout=20)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


class ImageHost:
    """An HTTP server on 127.0.0.1 answering fixed paths; it records every path requested."""

    def __init__(self) -> None:
        self.routes: dict[str, tuple[int, dict[str, str], bytes]] = {}
        self.requested: list[str] = []
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler_class())
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def host_port(self) -> str:
        return f"127.0.0.1:{self._server.server_address[1]}"

    def url(self, path: str) -> str:
        return f"http://{self.host_port}{path}"

    def serve(self, path: str, body: bytes, content_type: str = "image/png") -> None:
        self.routes[path] = (200, {"Content-Type": content_type}, body)

    def redirect(self, path: str, location: str) -> None:
        self.routes[path] = (302, {"Location": location}, b"")

    def __enter__(self) -> ImageHost:
        self._thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._server.shutdown()
        self._server.server_close()

    def _handler_class(self) -> type[BaseHTTPRequestHandler]:
        host = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 - the name http.server calls
                host.requested.append(self.path)
                status, headers, body = host.routes.get(self.path, (404, {}, b"not found"))
                self.send_response(status)
                for name, value in {**headers, "Content-Length": str(len(body))}.items():
                    self.send_header(name, value)
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: object) -> None:
                pass

        return Handler
