"""Adversarial suite, part 2: what an authenticated caller may send. SSRF spellings, oversize
headers and bodies, deep JSON, request limits, slow clients. Each refusal is checked for status,
OpenAI's error shape and leaks, then a canary request must still succeed."""

from __future__ import annotations

import json
import socket
import time

import httpx
import pytest

from security_server import (
    MAX_HEADER_BYTES,
    SecuredServer,
    assert_canary,
    chat_body,
    check_refused,
    image_url_body,
    raw_request,
    start_secured_server,
)


@pytest.fixture(scope="session")
def secured(tiny_model_dir, image_host) -> SecuredServer:
    yield from start_secured_server(tiny_model_dir, image_host.host_port)


def _post(server: SecuredServer, body, **kwargs) -> httpx.Response:
    return httpx.post(f"{server.base_url}/v1/chat/completions", json=body, headers=server.auth(), timeout=60, **kwargs)


# ---- SSRF: the forbidden loopback host must never see a request ---------------------------------


def _ssrf_urls(port: int, allowed: str) -> dict[str, str]:
    return {
        "decimal address": f"http://2130706433:{port}/x.png",
        "octal address": f"http://0177.0.0.1:{port}/x.png",
        "short address": f"http://127.1:{port}/x.png",
        "hex address": f"http://0x7f000001:{port}/x.png",
        "ipv6 loopback": f"http://[::1]:{port}/x.png",
        "ipv6-mapped ipv4": f"http://[::ffff:127.0.0.1]:{port}/x.png",
        "0.0.0.0": f"http://0.0.0.0:{port}/x.png",
        "userinfo trick": f"http://{allowed}@127.0.0.1:{port}/x.png",
        "backslash trick": f"http://127.0.0.1:{port}\\@{allowed}/x.png",
        "hostname resolving to loopback": f"http://localhost:{port}/x.png",
        "cloud metadata": "http://169.254.169.254/latest/meta-data/",
        "file scheme": "file:///etc/passwd",
        "redirect to a forbidden host": f"http://{allowed}/to-forbidden.png",
    }


@pytest.mark.parametrize("form", list(_ssrf_urls(1, "a")))
def test_ssrf_forms_are_refused(secured, forbidden_image_host, image_host, form):
    port = int(forbidden_image_host.host_port.rsplit(":", 1)[1])
    before = list(forbidden_image_host.requested)
    reply = _post(secured, image_url_body(_ssrf_urls(port, image_host.host_port)[form]))
    check_refused(secured, reply, 400)
    assert reply.json()["error"]["param"].startswith("messages[0].content[0]")
    assert forbidden_image_host.requested == before


def test_an_allowed_image_host_still_works(secured, image_host):
    assert _post(secured, image_url_body(image_host.url("/red.png"))).status_code == 200


# ---- sizes ----------------------------------------------------------------------------------------


def test_one_oversize_header(secured):
    reply = httpx.get(f"{secured.base_url}/v1/models", headers={**secured.auth(), "X-Padding": "a" * MAX_HEADER_BYTES})
    check_refused(secured, reply, 431, "headers_too_large")


def test_many_headers_add_up(secured):
    padding = {f"X-Pad-{i}": "b" * 100 for i in range(MAX_HEADER_BYTES // 100)}
    reply = httpx.get(f"{secured.base_url}/v1/models", headers={**secured.auth(), **padding})
    check_refused(secured, reply, 431, "headers_too_large")


def test_a_declared_oversize_body(secured):
    head = (f"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {secured.keys['main']}\r\n"
            "Content-Type: application/json\r\nContent-Length: 5000000\r\nConnection: close\r\n\r\n")  # fmt: skip
    check_refused(secured, raw_request(secured, head.encode() + b"{"), 413, "request_too_large")


def test_a_chunked_oversize_body(secured):
    def chunks():
        yield b'{"messages": [{"role": "user", "content": "'
        for _ in range(40):
            yield b"x" * 32768
    reply = httpx.post(f"{secured.base_url}/v1/chat/completions", content=chunks(),
                       headers={**secured.auth(), "Content-Type": "application/json"}, timeout=60)  # fmt: skip
    check_refused(secured, reply, 413, "request_too_large")


def _nested(depth: int) -> str:
    return "[" * depth + "]" * depth


@pytest.mark.parametrize("depth", [20, 100_000])
def test_deep_json(secured, depth):
    text = '{"messages": [{"role": "user", "content": "hi"}], "chat_template_kwargs": {"x": %s}}' % _nested(depth)
    reply = httpx.post(f"{secured.base_url}/v1/chat/completions", content=text,
                       headers={**secured.auth(), "Content-Type": "application/json"}, timeout=60)  # fmt: skip
    check_refused(secured, reply, 400)


def test_deep_json_in_a_tool_schema(secured):
    schema: dict = {"type": "object"}
    for _ in range(20):
        schema = {"type": "object", "properties": {"a": schema}}
    tool = {"type": "function", "function": {"name": "f", "parameters": schema}}
    check_refused(secured, _post(secured, chat_body(tools=[tool])), 400, "json_too_deep")


@pytest.mark.parametrize(("overrides", "param"), [
    ({"max_tokens": 1_000_000}, "max_tokens"),
    ({"max_completion_tokens": 5000}, "max_tokens"),
    ({"n": 5}, "n"),
    ({"stop": ["s"] * 100}, "stop"),
    ({"messages": [{"role": "user", "content": "m"}] * 300}, "messages"),
    ({"messages": []}, "messages"),
])  # fmt: skip
def test_request_limits(secured, overrides, param):
    error = check_refused(secured, _post(secured, chat_body(**overrides)), 400)
    assert error["param"] == param


def test_not_json_at_all(secured):
    reply = httpx.post(f"{secured.base_url}/v1/chat/completions", content=b"\xff\xfe{not json",
                       headers={**secured.auth(), "Content-Type": "application/json"})  # fmt: skip
    check_refused(secured, reply, 400)


# ---- slow clients --------------------------------------------------------------------------------


def test_a_slow_body_is_cut_off_and_does_not_hold_the_server(secured):
    body = json.dumps(chat_body()).encode()
    head = (f"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nX-Api-Key: {secured.keys['main']}\r\n"
            f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n").encode()  # fmt: skip
    with socket.create_connection(("127.0.0.1", secured.port), timeout=20) as sock:
        sock.sendall(head + body[:5])
        assert_canary(secured)  # the server answers others while this body trickles
        for byte in body[5:12]:
            time.sleep(0.5)  # the test server allows 2 s for a whole body
            try:
                sock.sendall(bytes([byte]))
            except OSError:
                break
        answer = b""
        while chunk := sock.recv(65536):
            answer += chunk
    status, _, rest = answer.partition(b"\r\n\r\n")
    check_refused(secured, (int(status.split(b" ")[1]), rest), 408, "body_timeout")


def test_slow_headers_do_not_hold_the_server(secured):
    sockets = [socket.create_connection(("127.0.0.1", secured.port), timeout=10) for _ in range(20)]
    try:
        for sock in sockets:
            sock.sendall(b"GET /v1/models HTTP/1.1\r\nHost: x\r\nX-Slow: ")
        for _ in range(3):
            assert_canary(secured)
            for sock in sockets:
                sock.sendall(b"a")
    finally:
        for sock in sockets:
            sock.close()
    assert_canary(secured)
