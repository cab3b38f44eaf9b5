"""Adversarial suite, part 1: who may get in. Every route without credentials, path and key
variants, revoked keys, sessions and CSRF, foreign origins, rate limits and bans, other users'
conversations. Each refusal is checked for status, OpenAI's error shape and leaks, then a canary
request must still succeed."""

from __future__ import annotations

import base64

import httpx
import pytest

from security_server import (
    MAIN_KEY_RPM,
    PASSWORDS,
    PER_ADDRESS_RPM,
    SecuredServer,
    assert_canary,
    assert_no_leak,
    chat_body,
    check_refused,
    flashsight_cli,
    image_message,
    login,
    make_key,
    png_bytes,
    raw_get,
    start_secured_server,
)


@pytest.fixture(scope="session")
def secured(tiny_model_dir, image_host) -> SecuredServer:
    yield from start_secured_server(tiny_model_dir, image_host.host_port)


# ---- every route without credentials ----------------------------------------------------------

PROTECTED = [
    ("GET", "/v1/models"), ("GET", "/v1/models/tiny"), ("POST", "/v1/chat/completions"), ("GET", "/v1/status"),
    ("GET", "/metrics"), ("GET", "/api/conversations"), ("POST", "/api/conversations"), ("GET", "/docs"),
    ("GET", "/openapi.json"), ("POST", "/auth/logout"), ("DELETE", "/v1/models"), ("PUT", "/health"),
]  # fmt: skip


@pytest.mark.parametrize(("method", "path"), PROTECTED)
def test_routes_need_credentials(secured, method, path):
    reply = httpx.request(method, secured.base_url + path, json=chat_body() if method == "POST" else None)
    check_refused(secured, reply, 401, "missing_credentials")
    assert reply.headers["WWW-Authenticate"] == "Bearer"


@pytest.mark.parametrize("path", ["/health", "/auth/session"])
def test_only_the_listed_routes_are_open(secured, path):
    reply = httpx.get(secured.base_url + path)
    assert reply.status_code == 200 and "error" not in reply.json()
    assert reply.headers["X-Content-Type-Options"] == "nosniff" and reply.headers["X-Frame-Options"] == "DENY"
    assert reply.headers["Referrer-Policy"] == "no-referrer"


# ---- path variants: sent byte for byte, so no client normalises them first --------------------

PATH_VARIANTS = ["//v1/models", "/v1/models/", "/v1%2Fmodels", "/V1/models", "/./v1/models", "/health/../v1/models",
                 "/assets/../v1/models", "/assets/%2e%2e/v1/models", "/health%2F..%2Fv1%2Fmodels", "/v1/models%00",
                 "/health/", "//health", "/assets//etc/passwd", "/assets/..%5cv1%5cmodels"]  # fmt: skip


@pytest.mark.parametrize("target", PATH_VARIANTS)
def test_path_variants_need_credentials(secured, target):
    check_refused(secured, raw_get(secured, target), 401, "missing_credentials")


# ---- key variants ------------------------------------------------------------------------------


def _key_variants(key: str, other: str, revoked: str) -> dict[str, list[tuple[str, str]]]:
    return {
        "upper case": [("Authorization", f"Bearer {key.upper()}")],
        "swapped case": [("Authorization", f"Bearer {key.swapcase()}")],
        "one more character": [("Authorization", f"Bearer {key}x")],
        "a prefix": [("Authorization", f"Bearer {key[:30]}")],
        "inner whitespace": [("Authorization", f"Bearer  {key}")],
        "space inside the key": [("X-Api-Key", f"{key[:20]} {key[20:]}")],
        "another scheme": [("Authorization", f"Basic {base64.b64encode(key.encode()).decode()}")],
        "no scheme": [("Authorization", key)],
        "bearer without a key": [("Authorization", "Bearer")],
        "two authorization headers": [("Authorization", f"Bearer {key}"), ("Authorization", f"Bearer {other}")],
        "the same key twice": [("Authorization", f"Bearer {key}"), ("Authorization", f"Bearer {key}")],
        "bearer and x-api-key disagree": [("Authorization", f"Bearer {key}"), ("X-Api-Key", other)],
        "two x-api-key headers": [("X-Api-Key", key), ("X-Api-Key", other)],
        "revoked key": [("Authorization", f"Bearer {revoked}")],
        "revoked key as x-api-key": [("X-Api-Key", revoked)],
        "openai-shaped key": [("Authorization", "Bearer sk-" + "a" * 48)],
    }


@pytest.mark.parametrize("variant", list(_key_variants("k", "o", "r")))
def test_key_variants_are_refused(secured, variant):
    headers = _key_variants(secured.keys["main"], secured.keys["other"], secured.keys["revoked"])[variant]
    reply = httpx.post(f"{secured.base_url}/v1/chat/completions", json=chat_body(), headers=headers)
    check_refused(secured, reply, 401)


def test_a_key_in_the_query_string_is_not_a_credential(secured):
    reply = httpx.get(f"{secured.base_url}/v1/models", params={"api_key": secured.keys["main"]})
    check_refused(secured, reply, 401, "missing_credentials")


def test_bearer_and_x_api_key_work_alike_and_together(secured):
    key = secured.keys["main"]
    for headers in ({"Authorization": f"Bearer {key}"}, {"X-Api-Key": key}, {"Authorization": f"bearer {key}", "X-Api-Key": key}):
        reply = httpx.get(f"{secured.base_url}/v1/models", headers=headers)
        assert reply.status_code == 200, reply.text
        assert reply.headers["X-RateLimit-Limit-Requests"] == str(MAIN_KEY_RPM)


def test_wrong_keys_are_indistinguishable(secured):
    """A wrong secret for a real key id and an unknown id get the same answer: no oracle."""
    key = secured.keys["main"]
    wrong_secret = key[:-4] + ("AAAA" if not key.endswith("AAAA") else "BBBB")
    unknown_id = "fsk_000000000000_" + key.split("_", 2)[2]
    answers = [httpx.get(f"{secured.base_url}/v1/models", headers={"X-Api-Key": k}) for k in (wrong_secret, unknown_id)]
    assert [a.status_code for a in answers] == [401, 401]
    assert answers[0].json() == answers[1].json()
    check_refused(secured, answers[0], 401, "invalid_api_key")


def test_a_key_revoked_while_the_server_runs_stops_at_once(secured):
    key = make_key(secured.data_dir, "short-lived")
    assert httpx.get(f"{secured.base_url}/v1/models", headers={"X-Api-Key": key}).status_code == 200
    assert flashsight_cli("keys", "revoke", "short-lived", data_dir=secured.data_dir).returncode == 0
    check_refused(secured, httpx.get(f"{secured.base_url}/v1/models", headers={"X-Api-Key": key}), 401, "invalid_api_key")


def test_keys_list_never_shows_a_key(secured):
    listing = flashsight_cli("keys", "list", data_dir=secured.data_dir)
    assert listing.returncode == 0 and "main" in listing.stdout and "revoked" in listing.stdout
    assert_no_leak(secured, listing.stdout + listing.stderr)


# ---- page login, sessions, CSRF, origins ---------------------------------------------------------


def test_login_sets_a_strict_cookie_and_session_reports_the_user(secured):
    with login(secured, "alice") as page:
        cookie = next(h for h in page.cookies.jar)
        assert cookie.name == "flashsight_session" and cookie.path == "/" and not cookie.secure
        assert cookie.has_nonstandard_attr("HttpOnly") and cookie.get_nonstandard_attr("SameSite").lower() == "strict"
        session = page.get("/auth/session").json()
        assert session == {"auth_required": True, "user": "alice", "csrf_token": page.headers["X-CSRF-Token"]}
        assert page.get("/v1/models").status_code == 200  # a GET needs no CSRF token


@pytest.mark.parametrize(("user", "password"), [("alice", "wrong-password"), ("nobody", "alice-password-1"), ("alice", "")])
def test_bad_logins_are_refused_alike(secured, user, password):
    reply = httpx.post(f"{secured.base_url}/auth/login", json={"username": user, "password": password})
    check_refused(secured, reply, 401 if password else 400)


@pytest.mark.parametrize("token", [None, "", "wrong-token"])
def test_a_cookie_write_needs_the_csrf_token(secured, token):
    with login(secured, "alice") as page:
        headers = {} if token is None else {"X-CSRF-Token": token}
        del page.headers["X-CSRF-Token"]
        check_refused(secured, page.post("/v1/chat/completions", json=chat_body(), headers=headers), 403, "csrf_token_invalid")
        assert page.post("/v1/chat/completions", json=chat_body(), headers={"X-CSRF-Token": page.get("/auth/session").json()["csrf_token"]}).status_code == 200  # noqa: E501


def test_a_foreign_origin_gets_no_cors_and_cannot_use_a_session(secured):
    evil = {"Origin": "https://evil.example"}
    preflight = httpx.options(f"{secured.base_url}/v1/chat/completions",
                              headers={**evil, "Access-Control-Request-Method": "POST"})  # fmt: skip
    assert "access-control-allow-origin" not in preflight.headers
    check_refused(secured, preflight, 401)
    with_key = httpx.get(f"{secured.base_url}/v1/models", headers={**evil, **secured.auth()})
    assert with_key.status_code == 200 and "access-control-allow-origin" not in with_key.headers
    with login(secured, "alice") as page:
        check_refused(secured, page.post("/v1/chat/completions", json=chat_body(), headers=evil), 403, "foreign_origin")


def test_logout_ends_the_session(secured):
    with login(secured, "bob") as page:
        cookie = page.cookies["flashsight_session"]
        assert page.post("/auth/logout").status_code == 204
        stale = httpx.get(f"{secured.base_url}/v1/models", cookies={"flashsight_session": cookie})
        check_refused(secured, stale, 401, "session_expired")


def test_a_session_over_https_at_a_trusted_proxy_gets_a_secure_cookie(secured):
    headers = {"X-Forwarded-For": "198.51.100.90", "X-Forwarded-Proto": "https"}
    reply = httpx.post(f"{secured.base_url}/auth/login", json={"username": "bob", "password": PASSWORDS["bob"]}, headers=headers)
    assert reply.status_code == 200 and "; secure" in reply.headers["set-cookie"].lower()


def test_a_forged_cookie_is_refused(secured):
    reply = httpx.get(f"{secured.base_url}/v1/models", cookies={"flashsight_session": "forged-" + "x" * 40})
    check_refused(secured, reply, 401, "session_expired")


def test_login_attempts_per_user_are_rate_limited(secured):
    # From a new address each time, so only the per-user budget (10 a minute) stops the guessing.
    answers = [httpx.post(f"{secured.base_url}/auth/login", json={"username": "mallory", "password": f"guess-{i}"},
                          headers={"X-Forwarded-For": f"198.51.100.{100 + i}"}) for i in range(11)]  # fmt: skip
    assert [a.status_code for a in answers[:10]] == [401] * 10
    check_refused(secured, answers[10], 429, "rate_limit_exceeded")
    assert int(answers[10].headers["Retry-After"]) >= 1


def test_failed_logins_from_one_address_ban_it(secured):
    address = {"X-Forwarded-For": "198.51.100.78"}
    for i in range(5):
        wrong = httpx.post(f"{secured.base_url}/auth/login", json={"username": "bob", "password": f"guess-{i}"}, headers=address)
        assert wrong.status_code == 401
    right = httpx.post(f"{secured.base_url}/auth/login", json={"username": "bob", "password": PASSWORDS["bob"]}, headers=address)
    check_refused(secured, right, 403, "client_banned")


# ---- rate limits and bans ------------------------------------------------------------------------


def test_a_keys_own_request_limit(secured):
    answers = [httpx.get(f"{secured.base_url}/v1/models", headers=secured.auth("tight")) for _ in range(4)]
    assert [a.status_code for a in answers[:3]] == [200, 200, 200]
    check_refused(secured, answers[3], 429, "rate_limit_exceeded")
    limited = answers[3].headers
    assert limited["X-RateLimit-Limit-Requests"] == "3" and limited["X-RateLimit-Remaining-Requests"] == "0"
    assert 1 <= int(limited["Retry-After"]) <= 20 and limited["X-RateLimit-Reset-Requests"].endswith("s")


def test_the_same_limit_whichever_header_carries_the_key(secured):
    key = make_key(secured.data_dir, "either-header", "--rpm", "2")
    first = httpx.get(f"{secured.base_url}/v1/models", headers={"Authorization": f"Bearer {key}"})
    second = httpx.get(f"{secured.base_url}/v1/models", headers={"X-Api-Key": key})
    assert (first.status_code, second.status_code) == (200, 200)
    check_refused(secured, httpx.get(f"{secured.base_url}/v1/models", headers={"X-Api-Key": key}), 429)


def test_a_per_address_request_limit(secured):
    address = {"X-Forwarded-For": "198.51.100.20", **secured.auth()}
    answers = [httpx.get(f"{secured.base_url}/v1/models", headers=address) for _ in range(PER_ADDRESS_RPM + 1)]
    assert all(a.status_code == 200 for a in answers[:PER_ADDRESS_RPM])
    check_refused(secured, answers[-1], 429, "rate_limit_exceeded")


def test_tokens_per_minute_count_images_by_their_token_cost(secured):
    # A 1024x1024 image is 1369 tokens to GLM: the key's 2000 tokens/minute pass one such request, not two.
    body = chat_body(messages=[image_message(png_bytes((1024, 1024)))])
    first = httpx.post(f"{secured.base_url}/v1/chat/completions", json=body, headers=secured.auth("thrifty"), timeout=120)
    assert first.status_code == 200, first.text
    second = httpx.post(f"{secured.base_url}/v1/chat/completions", json=body, headers=secured.auth("thrifty"), timeout=120)
    check_refused(secured, second, 429, "rate_limit_exceeded")
    assert second.headers["X-RateLimit-Limit-Tokens"] == "2000" and int(second.headers["Retry-After"]) >= 1


def test_repeated_failures_ban_the_address_and_show_in_status(secured):
    address = {"X-Forwarded-For": "198.51.100.66"}
    for _ in range(5):
        assert httpx.get(f"{secured.base_url}/v1/models", headers={**address, "X-Api-Key": "fsk_bad"}).status_code == 401
    banned = httpx.get(f"{secured.base_url}/v1/models", headers={**address, **secured.auth()})
    check_refused(secured, banned, 403, "client_banned")
    assert 500 <= int(banned.headers["Retry-After"]) <= 601
    security = httpx.get(f"{secured.base_url}/v1/status", headers=secured.auth()).json()["security"]
    assert security["bans_total"] >= 1 and "198.51.100.66" in security["banned_addresses"]
    assert security["banned_clients"] >= 1 and security["auth_failures_total"] >= 5
    assert security["rate_limit_rejections_total"] >= 0


def test_a_success_resets_the_failure_count(secured):
    address = {"X-Forwarded-For": "198.51.100.67"}
    for _ in range(3):
        for _ in range(4):
            httpx.get(f"{secured.base_url}/v1/models", headers={**address, "X-Api-Key": "fsk_bad"})
        assert httpx.get(f"{secured.base_url}/v1/models", headers={**address, **secured.auth()}).status_code == 200


def test_only_the_right_most_forwarded_hop_is_believed(secured):
    # Loopback is the trusted proxy; whatever the client wrote to the left of the proxy's entry is not believed.
    spoofed = {"X-Forwarded-For": "198.51.100.69, 198.51.100.70"}
    for _ in range(5):
        httpx.get(f"{secured.base_url}/v1/models", headers={**spoofed, "X-Api-Key": "fsk_bad"})
    claimed = httpx.get(f"{secured.base_url}/v1/models", headers={"X-Forwarded-For": "198.51.100.69", **secured.auth()})
    assert claimed.status_code == 200
    real = httpx.get(f"{secured.base_url}/v1/models", headers={"X-Forwarded-For": "198.51.100.70", **secured.auth()})
    check_refused(secured, real, 403, "client_banned")


# ---- another user's conversation (contract 4) ---------------------------------------------------


def test_another_users_conversation_is_a_404_and_unchanged(secured):
    with login(secured, "alice") as alice, login(secured, "bob") as bob:
        created = alice.post("/api/conversations", json={"title": "alice's secret"})
        assert created.status_code in (200, 201), created.text
        conversation_id = created.json()["id"]
        path = f"/api/conversations/{conversation_id}"
        assert alice.post(f"{path}/messages", json={"role": "user", "content": "mine"}).status_code == 201
        attempts = (("GET", path, None), ("PATCH", path, {"title": "pwned"}), ("DELETE", path, None),
                    ("POST", f"{path}/messages", {"role": "user", "content": "pwned"}))  # fmt: skip
        for method, target, body in attempts:
            check_refused(secured, bob.request(method, target, json=body), 404)
        assert conversation_id in [c["id"] for c in alice.get("/api/conversations").json()]
        assert conversation_id not in [c["id"] for c in bob.get("/api/conversations").json()]
        kept = alice.get(path).json()
        assert kept["title"] == "alice's secret" and [m["content"] for m in kept["messages"]] == ["mine"]


def test_a_script_stored_in_a_conversation_stays_data(secured):
    script = "<script>alert(document.cookie)</script><img src=x onerror=alert(1)>"
    with login(secured, "alice") as alice:
        created = alice.post("/api/conversations", json={"title": script})
        assert created.status_code in (200, 201)
        stored = alice.get(f"/api/conversations/{created.json()['id']}")
        assert stored.headers["content-type"].startswith("application/json") and stored.json()["title"] == script
        assert stored.headers["X-Content-Type-Options"] == "nosniff"
        page = httpx.get(f"{secured.base_url}/")
        assert "script-src 'self'" in page.headers.get("content-security-policy", "")
        assert script not in page.text
    assert_canary(secured)


def test_passwords_are_never_stored_in_clear(secured):
    database = open(f"{secured.data_dir}/flashsight.db", "rb").read()
    assert all(password.encode() not in database for password in PASSWORDS.values())
    assert all(key.encode() not in database for key in secured.keys.values())
