"""The page with login on: Debian's Chromium against a live `flashsight serve --auth on`, its users
made with `flashsight users add`. Sign in, writes that pass the server's CSRF and Origin checks,
each user's own history, and sign out."""

from __future__ import annotations

import tempfile

import httpx
import pytest
from browser import WATCH_SCRIPT, browser, screenshot  # noqa: F401 (browser: a fixture)
from security_server import PASSWORDS, flashsight_cli
from server_process import flashsight_server

from flashsight.security.sessions import COOKIE_NAME

# Each test signs in a few times, all from 127.0.0.1: room enough that none is refused for it.
SERVER_ENV = {"FLASHSIGHT_LOGIN_ATTEMPTS_PER_MINUTE": "100"}

# The page's own way to write: the CSRF token from /auth/session, the browser's own Origin.
PAGE_FETCH = """async ([method, path, body]) => {
  const session = await (await fetch('/auth/session')).json();
  const headers = { 'Content-Type': 'application/json', 'X-CSRF-Token': session.csrf_token || '' };
  const init = { method, headers, body: body === null ? undefined : JSON.stringify(body) };
  const response = await fetch(path, init);
  const text = await response.text();
  return { status: response.status, body: text ? JSON.parse(text) : null };
}"""


@pytest.fixture(scope="module")
def server(tiny_model_dir) -> str:
    with tempfile.TemporaryDirectory() as data_dir:
        for user, password in PASSWORDS.items():
            added = flashsight_cli("users", "add", user, "--password-stdin", data_dir=data_dir, stdin=password + "\n")
            assert added.returncode == 0, added.stderr
        env = {**SERVER_ENV, "FLASHSIGHT_DATA_DIR": data_dir}
        with flashsight_server(tiny_model_dir, [], env, ("--auth", "on")) as base_url:
            yield base_url


@pytest.fixture
def new_context(browser, server):
    """Fresh browser contexts (no cookies shared between them), closed after the test."""
    contexts = []

    def make():
        context = browser.new_context(base_url=server, viewport={"width": 1280, "height": 800})
        context.add_init_script(WATCH_SCRIPT)
        contexts.append(context)
        return context

    yield make
    for context in contexts:
        context.close()


def sign_in_dialog(page):
    return page.get_by_role("dialog", name="Sign in to flashsight")


def sign_in(page, user: str, password: str | None = None) -> None:
    page.get_by_label("User name").fill(user)
    page.get_by_label("Password").fill(password or PASSWORDS[user])
    page.get_by_role("button", name="Sign in").click()


def open_signed_in(context, user: str, fragment: str = ""):
    page = context.new_page()
    page.goto(f"/{fragment}")
    sign_in_dialog(page).wait_for()
    sign_in(page, user)
    page.wait_for_selector("body[data-ready=true]")
    return page


def page_fetch(page, method: str, path: str, body: dict | None = None) -> dict:
    return page.evaluate(PAGE_FETCH, [method, path, body])


def status_of_get(page, path: str) -> int:
    return page.evaluate("async (path) => (await fetch(path)).status", path)


def session_cookie(context) -> dict:
    return next(cookie for cookie in context.cookies() if cookie["name"] == COOKIE_NAME)


def send_and_wait(page, text: str) -> None:
    page.get_by_role("button", name="Chat settings").click()
    page.get_by_label("Max tokens").fill("2")
    page.get_by_label("Max tokens").dispatch_event("change")
    page.get_by_label("Message text").fill(text)
    page.get_by_label("Message text").press("Enter")
    page.locator("article.message.assistant").last.get_by_role("button", name="Copy the answer").wait_for()


def test_signed_out_the_api_refuses_and_the_form_signs_in(new_context):
    page = new_context().new_page()
    page.goto("/")
    dialog = sign_in_dialog(page)
    dialog.wait_for()
    assert status_of_get(page, "/api/conversations") == 401
    screenshot(page, "sign-in")
    sign_in(page, "alice", "not-her-password")
    page.get_by_role("alert").filter(has_text="Wrong user name or password.").wait_for()
    assert dialog.is_visible() and not any(c["name"] == COOKIE_NAME for c in page.context.cookies())

    sign_in(page, "alice")
    page.wait_for_selector("body[data-ready=true]")
    assert not dialog.is_visible()
    assert page.locator("#account-user").inner_text() == "Signed in as alice"
    cookie = session_cookie(page.context)
    assert cookie["httpOnly"] and cookie["sameSite"] == "Strict" and cookie["path"] == "/"
    assert status_of_get(page, "/api/conversations") == 200
    assert page.evaluate("window.__cspViolations") == []


def test_signed_in_writes_pass_the_csrf_check_and_history_survives_a_reload(new_context):
    page = open_signed_in(new_context(), "alice")
    writes = []
    page.on("request", lambda request: request.method != "GET" and writes.append(request))
    send_and_wait(page, "Signed in and asking")
    token = page_fetch(page, "GET", "/auth/session")["body"]["csrf_token"]
    paths = [request.url.split("/", 3)[3] for request in writes]
    assert len(paths) >= 4 and "v1/chat/completions" in paths  # created, asked, generated, answer stored
    assert all(request.headers.get("x-csrf-token") == token for request in writes)
    conversation_id = page.evaluate("location.hash.slice(1)")
    stored = page_fetch(page, "GET", f"/api/conversations/{conversation_id}")["body"]
    assert [message["role"] for message in stored["messages"]] == ["user", "assistant"]
    # The same write without the token is refused, so the page's writes passed on their token.
    refused = page.evaluate("async () => (await fetch('/api/conversations', {method: 'POST', "
                            "headers: {'Content-Type': 'application/json'}, body: '{}'})).status")  # fmt: skip
    assert refused == 403

    page.reload()
    page.wait_for_selector("body[data-ready=true]")
    assert not sign_in_dialog(page).is_visible()
    page.get_by_role("button", name="Open conversation Signed in and asking").click()
    page.locator("article.message.user", has_text="Signed in and asking").wait_for()


def test_another_user_sees_none_of_the_first_users_conversations(new_context):
    alice = open_signed_in(new_context(), "alice")
    created = page_fetch(alice, "POST", "/api/conversations", {"title": "Alice's gearbox"})
    assert created["status"] == 201
    conversation_id = created["body"]["id"]
    path = f"/api/conversations/{conversation_id}"
    assert page_fetch(alice, "POST", f"{path}/messages", {"role": "user", "content": "Is it worn?"})["status"] == 201

    bob = open_signed_in(new_context(), "bob", f"#{conversation_id}")
    bob.get_by_role("alert").filter(has_text="No such conversation.").wait_for()
    assert bob.locator("#chat-title").inner_text() == "New chat"
    assert bob.locator("#conversation-list li").count() == 0
    assert bob.locator("#messages article").count() == 0
    attempts = [("GET", path, None), ("PATCH", path, {"title": "Bob's now"}), ("DELETE", path, None),
                ("POST", f"{path}/messages", {"role": "user", "content": "bob was here"})]  # fmt: skip
    for method, target, body in attempts:
        answer = page_fetch(bob, method, target, body)
        assert answer["status"] == 404 and answer["body"]["error"]["code"] == "not_found", (method, answer)
    assert page_fetch(bob, "GET", "/api/conversations?q=gearbox")["body"] == []

    kept = page_fetch(alice, "GET", path)["body"]
    assert kept["title"] == "Alice's gearbox" and [m["content"] for m in kept["messages"]] == ["Is it worn?"]
    alice.reload()
    alice.get_by_role("button", name="Open conversation Alice's gearbox").wait_for()


def test_sign_out_ends_the_session(new_context, server):
    context = new_context()
    page = open_signed_in(context, "alice")
    other_tab = context.new_page()
    other_tab.goto("/")
    other_tab.wait_for_selector("body[data-ready=true]")
    token = session_cookie(context)["value"]

    page.get_by_role("button", name="Sign out").click()
    sign_in_dialog(page).wait_for()
    assert page.locator("#account").is_hidden() and page.locator("#conversation-list li").count() == 0
    assert status_of_get(page, "/api/conversations") == 401
    assert not any(cookie["name"] == COOKIE_NAME for cookie in context.cookies())
    # Ended on the server, not only forgotten by the browser: the old cookie is refused.
    replayed = httpx.get(f"{server}/api/conversations", cookies={COOKIE_NAME: token})
    assert replayed.status_code == 401 and replayed.json()["error"]["code"] == "session_expired"

    # The other tab learns it from its next API call's 401 and asks for a login too.
    other_tab.get_by_label("Search conversations by title").fill("anything")
    sign_in_dialog(other_tab).wait_for()
    assert other_tab.locator("#conversation-list li").count() == 0

    sign_in(page, "alice")
    page.wait_for_selector("body[data-ready=true]")
    assert page.locator("#account-user").inner_text() == "Signed in as alice"


def test_a_session_renewed_elsewhere_keeps_the_page_writing(new_context, server):
    """Signing in again elsewhere replaces the cookie this tab sends, and so the CSRF token due:
    the page's write refused for the old token goes again with the new one."""
    context = new_context()
    page = open_signed_in(context, "alice")
    with httpx.Client(base_url=server) as elsewhere:
        assert elsewhere.post("/auth/login", json={"username": "alice", "password": PASSWORDS["alice"]}).status_code == 200
        renewed = elsewhere.cookies[COOKIE_NAME]
    context.add_cookies([{"name": COOKIE_NAME, "value": renewed, "url": server, "httpOnly": True, "sameSite": "Strict"}])
    refused = []
    page.on("response", lambda response: response.status == 403 and refused.append(response.url))
    send_and_wait(page, "After a renewal")
    assert refused and all(url.endswith("/api/conversations") for url in refused)
    assert not sign_in_dialog(page).is_visible() and page.locator("#error").is_hidden()
