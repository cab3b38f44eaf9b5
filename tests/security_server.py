"""The adversarial suites' server: `flashsight serve --auth on` with its own data directory, keys
made with `flashsight keys create` and users with `flashsight users add`, and helpers that check
each hostile request's answer and then that an ordinary request still works."""

from __future__ import annotations

import base64
import json
import os
import socket
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

import httpx
import pytest

from server_process import REPO_ROOT, flashsight_server, png_bytes

PASSWORDS = {"alice": "alice-password-1", "bob": "bob-password-22"}
MAX_HEADER_BYTES = 8192
PER_ADDRESS_RPM = 20
MAIN_KEY_RPM = 100_000
# Hints that a response leaked internals: a traceback, a source path, the data directory.
LEAK_MARKERS = ("Traceback", 'File "', "site-packages", str(REPO_ROOT), "/tmp/", "sqlite", "Exception")


@dataclass
class SecuredServer:
    base_url: str
    data_dir: str
    keys: dict[str, str]  # name -> the full key, as `keys create` printed it
    secrets: list[str] = field(default_factory=list)  # every key and password: none may be echoed

    @property
    def port(self) -> int:
        return int(self.base_url.rsplit(":", 1)[1])

    def auth(self, name: str = "main") -> dict[str, str]:
        return {"Authorization": f"Bearer {self.keys[name]}"}


def flashsight_cli(*args: str, data_dir: str, stdin: str | None = None) -> subprocess.CompletedProcess:
    python_path = os.pathsep.join(filter(None, [str(REPO_ROOT), os.environ.get("PYTHONPATH")]))
    command = [sys.executable, "-m", "flashsight.cli", *args, "--data-dir", data_dir]
    env = {**os.environ, "PYTHONPATH": python_path}
    return subprocess.run(command, cwd=REPO_ROOT, env=env, input=stdin, capture_output=True, text=True, timeout=60)


def make_key(data_dir: str, name: str, *limits: str) -> str:
    result = flashsight_cli("keys", "create", "--name", name, *limits, data_dir=data_dir)
    assert result.returncode == 0, result.stderr
    return result.stdout.strip()


def start_secured_server(tiny_model_dir: str, allowed_image_host: str):
    """A generator for a session fixture: yields a SecuredServer, stops it afterwards."""
    with tempfile.TemporaryDirectory() as data_dir:
        # The canary's key has limits of its own, so that no test's spending can starve it.
        keys = {"main": make_key(data_dir, "main", "--rpm", str(MAIN_KEY_RPM), "--tpm", "100000000")}
        keys |= {name: make_key(data_dir, name) for name in ("other", "revoked")}
        keys["tight"] = make_key(data_dir, "tight", "--rpm", "3")
        keys["thrifty"] = make_key(data_dir, "thrifty", "--tpm", "2000")
        assert flashsight_cli("keys", "revoke", "revoked", data_dir=data_dir).returncode == 0
        for user, password in PASSWORDS.items():
            added = flashsight_cli("users", "add", user, "--password-stdin", data_dir=data_dir, stdin=password + "\n")
            assert added.returncode == 0, added.stderr
        env = {
            "FLASHSIGHT_DATA_DIR": data_dir,
            "FLASHSIGHT_MAX_BODY_BYTES": str(1024 * 1024),
            "FLASHSIGHT_MAX_HEADER_BYTES": str(MAX_HEADER_BYTES),
            "FLASHSIGHT_BODY_TIMEOUT_S": "2",
            "FLASHSIGHT_RATE_LIMIT_REQUESTS_PER_MINUTE": str(PER_ADDRESS_RPM),
            "FLASHSIGHT_MAX_TOKENS_CAP": "4096",
            "FLASHSIGHT_MAX_JSON_DEPTH": "16",
        }
        # Loopback is the "proxy", so each test can speak for a client address of its own.
        args = ("--auth", "on", "--trusted-proxy", "127.0.0.1")
        with flashsight_server(tiny_model_dir, [allowed_image_host], env, args) as base_url:
            yield SecuredServer(base_url, data_dir, keys, [*keys.values(), *PASSWORDS.values()])


def chat_body(**overrides) -> dict:
    return {"messages": [{"role": "user", "content": "hello"}], "max_tokens": 2, **overrides}


def image_message(image: bytes, text: str = "what is this?") -> dict:
    url = "data:image/png;base64," + base64.b64encode(image).decode()
    return {"role": "user", "content": [{"type": "image_url", "image_url": {"url": url}}, {"type": "text", "text": text}]}


def image_url_body(url: str) -> dict:
    part = {"type": "image_url", "image_url": {"url": url}}
    return chat_body(messages=[{"role": "user", "content": [part, {"type": "text", "text": "hi"}]}])


def check_refused(server: SecuredServer, response: httpx.Response | tuple[int, bytes], status: int,
                  code: str | None = None) -> dict:  # fmt: skip
    """The answer has `status`, OpenAI's error shape, no leak; then a canary request succeeds."""
    got_status, text = (response.status_code, response.text) if isinstance(response, httpx.Response) else (
        response[0], response[1].decode(errors="replace"))  # fmt: skip
    assert got_status == status, text[:500]
    error = json.loads(text[text.index("{"):])["error"] if "{" in text else pytest.fail(f"no JSON body: {text[:300]}")
    assert set(error) == {"message", "type", "param", "code"} and error["message"], error
    if code is not None:
        assert error["code"] == code, error
    assert_no_leak(server, text)
    assert_canary(server)
    return error


def assert_no_leak(server: SecuredServer, text: str) -> None:
    for marker in (*LEAK_MARKERS, server.data_dir, *server.secrets):
        assert marker not in text, f"response echoes {marker[:12]!r}..."


def assert_canary(server: SecuredServer) -> None:
    reply = httpx.post(f"{server.base_url}/v1/chat/completions", json=chat_body(), headers=server.auth(), timeout=60)
    assert reply.status_code == 200, reply.text[:300]
    assert reply.json()["choices"][0]["message"]["role"] == "assistant"


def raw_request(server: SecuredServer, request: bytes, timeout: float = 10.0) -> tuple[int, bytes]:
    """Send bytes exactly as given (no client-side path normalisation); the status and body back."""
    with socket.create_connection(("127.0.0.1", server.port), timeout=timeout) as sock:
        sock.sendall(request)
        data = b""
        while chunk := sock.recv(65536):
            data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    return int(head.split(b" ", 2)[1]), body


def raw_get(server: SecuredServer, target: str, *headers: str) -> tuple[int, bytes]:
    lines = [f"GET {target} HTTP/1.1", "Host: 127.0.0.1", "Connection: close", *headers, "", ""]
    return raw_request(server, "\r\n".join(lines).encode())


@contextmanager
def login(server: SecuredServer, user: str, forwarded_for: str | None = None) -> Iterator[httpx.Client]:
    """An httpx client holding `user`'s session cookie, with X-CSRF-Token set for writes."""
    with httpx.Client(base_url=server.base_url, timeout=60) as client:
        headers = {"X-Forwarded-For": forwarded_for} if forwarded_for else {}
        reply = client.post("/auth/login", json={"username": user, "password": PASSWORDS[user]}, headers=headers)
        assert reply.status_code == 200, reply.text
        client.headers["X-CSRF-Token"] = reply.json()["csrf_token"]
        yield client


__all__ = ["png_bytes"]
