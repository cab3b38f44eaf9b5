"""The page's history API (`/api/conversations`) on a real SQLite file, caller by caller.

The security layer is not part of this app: a small middleware records the caller's principal
exactly where the security layer would, so owner scoping is checked with two different callers.
"""

from __future__ import annotations

import base64
import sqlite3

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from server_process import png_bytes

from flashsight.security.principal import Principal
from flashsight.server.errors import install_error_handlers
from flashsight.server.settings import ServerSettings
from flashsight.web import install_web
from flashsight.web.page import CONTENT_SECURITY_POLICY


@pytest.fixture
def settings(tmp_path) -> ServerSettings:
    return ServerSettings(data_dir=tmp_path / "data", web_max_stored_image_bytes=50_000)


@pytest.fixture
def app(settings) -> FastAPI:
    app = FastAPI()
    app.state.settings = settings

    @app.middleware("http")
    async def principal_from_header(request, call_next):
        request.state.principal = Principal(kind="user", name=request.headers.get("x-test-user", "alice"))
        return await call_next(request)

    install_error_handlers(app)
    install_web(app, settings)
    return app


@pytest.fixture
def alice(app) -> TestClient:
    return TestClient(app, headers={"x-test-user": "alice"})


@pytest.fixture
def bob(app) -> TestClient:
    return TestClient(app, headers={"x-test-user": "bob"})


def data_url(data: bytes, media_type: str = "image/png") -> str:
    return f"data:{media_type};base64,{base64.b64encode(data).decode()}"


def test_conversation_lifecycle_and_stored_rows(alice, settings):
    created = alice.post("/api/conversations", json={"title": "  Parts  ", "settings": {"temperature": 0.2}})
    assert created.status_code == 201
    conversation = created.json()
    assert conversation["title"] == "Parts"
    assert conversation["settings"] == {"system_prompt": "", "temperature": 0.2, "max_tokens": None, "thinking": True}

    renamed = alice.patch(f"/api/conversations/{conversation['id']}", json={"title": "Gearbox"})
    assert renamed.json()["title"] == "Gearbox" and renamed.json()["settings"]["temperature"] == 0.2
    with sqlite3.connect(settings.database_path) as db:
        rows = db.execute("SELECT owner, title FROM conversations").fetchall()
    assert rows == [("user:alice", "Gearbox")]

    assert alice.delete(f"/api/conversations/{conversation['id']}").status_code == 204
    assert alice.get(f"/api/conversations/{conversation['id']}").status_code == 404
    assert alice.get("/api/conversations").json() == []


def test_messages_keep_content_reasoning_boxes_and_images(alice):
    conversation = alice.post("/api/conversations", json={}).json()
    path = f"/api/conversations/{conversation['id']}"
    image = png_bytes((40, 30))
    user = alice.post(f"{path}/messages", json={"role": "user", "content": "what?", "images": [data_url(image)]})
    assert user.status_code == 201
    box = {"label": "cat", "box_1000": [10, 20, 500, 600], "image_index": 0, "box_pixels": [0, 0, 20, 18]}
    answer = {"role": "assistant", "content": "**a cat**", "reasoning": "looking", "boxes": [box]}
    assert alice.post(f"{path}/messages", json=answer).status_code == 201

    messages = alice.get(path).json()["messages"]
    assert [m["role"] for m in messages] == ["user", "assistant"]
    assert messages[1]["reasoning"] == "looking" and messages[1]["boxes"] == [box]
    stored = alice.get(messages[0]["images"][0])
    assert stored.status_code == 200 and stored.content == image
    assert stored.headers["content-type"] == "image/png"

    assert alice.delete(f"{path}/messages/{messages[1]['id']}").status_code == 204
    assert [m["role"] for m in alice.get(path).json()["messages"]] == ["user"]


def test_search_matches_titles_literally(alice):
    for title in ["Invoice 2026", "Cat photo", "100% sure", "under_score"]:
        alice.post("/api/conversations", json={"title": title})
    titles = lambda q: sorted(c["title"] for c in alice.get("/api/conversations", params={"q": q}).json())  # noqa: E731
    assert titles("cat") == ["Cat photo"]
    assert titles("%") == ["100% sure"]
    assert titles("_") == ["under_score"]
    assert len(titles("")) == 4


def test_another_owner_sees_nothing_and_changes_nothing(alice, bob):
    conversation = alice.post("/api/conversations", json={"title": "mine"}).json()
    path = f"/api/conversations/{conversation['id']}"
    message = alice.post(f"{path}/messages", json={"role": "user", "content": "hi", "images": [data_url(png_bytes())]}).json()

    assert bob.get("/api/conversations").json() == []
    for response in [
        bob.get(path),
        bob.patch(path, json={"title": "stolen"}),
        bob.delete(path),
        bob.post(f"{path}/messages", json={"role": "user", "content": "x"}),
        bob.delete(f"{path}/messages/{message['id']}"),
        bob.get(message["images"][0]),
    ]:
        assert response.status_code == 404
        assert response.json()["error"]["type"] == "not_found_error"
    detail = alice.get(path).json()
    assert detail["title"] == "mine" and len(detail["messages"]) == 1


@pytest.mark.parametrize(
    "body, status, param",
    [
        ({"role": "system", "content": "x"}, 400, "role"),
        ({"role": "user", "images": ["http://example.com/a.png"]}, 400, "images[0]"),
        ({"role": "user", "images": ["data:image/png;base64,@@@"]}, 400, "images[0]"),
        ({"role": "user", "images": [data_url(b"<html><script>alert(1)</script>", "image/png")]}, 400, "images[0]"),
        ({"role": "user", "images": [data_url(b"\x89PNG" + b"0" * 80_000)]}, 413, "images[0]"),
    ],
)
def test_bad_messages_are_refused_clearly(alice, body, status, param):
    conversation = alice.post("/api/conversations", json={}).json()
    response = alice.post(f"/api/conversations/{conversation['id']}/messages", json=body)
    assert response.status_code == status
    assert response.json()["error"]["param"] == param
    assert alice.get(f"/api/conversations/{conversation['id']}").json()["messages"] == []


def test_bad_settings_and_titles_are_400(alice):
    assert alice.post("/api/conversations", json={"title": "   "}).status_code == 400
    assert alice.post("/api/conversations", json={"settings": {"temperature": 9}}).status_code == 400
    assert alice.post("/api/conversations", json={"settings": {"colour": "red"}}).status_code == 400


def test_page_shell_has_the_strict_csp_and_no_inline_script(alice, settings):
    page = alice.get("/")
    assert page.status_code == 200
    assert page.headers["content-security-policy"] == CONTENT_SECURITY_POLICY
    assert f'data-image-long-side="{settings.web_image_long_side}"' in page.text
    assert "<script>" not in page.text and "style=" not in page.text
    script = alice.get("/assets/js/main.js")
    assert script.status_code == 200 and "javascript" in script.headers["content-type"]
    assert alice.get("/assets/../store.py").status_code == 404
    assert alice.get("/favicon.ico").headers["content-type"].startswith("image/svg+xml")
