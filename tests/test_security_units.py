"""The security layer's parts on their own: keys, limiter, breaker, addresses, token estimates."""

from __future__ import annotations

import hmac
from pathlib import Path

import pytest
from starlette.datastructures import Headers

from flashsight.security import keys as keys_module
from flashsight.security.breaker import CircuitBreaker, is_failure
from flashsight.security.credentials import AmbiguousCredentials, credentials_of
from flashsight.security.keys import KeyStore
from flashsight.security.network import parse_networks, resolve_client_ip
from flashsight.security.ratelimit import PerMinuteLimiter
from flashsight.security.store import SecurityStore, StoreError
from flashsight.security.tokens import image_tokens, text_tokens
from flashsight.security.users import UserStore


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def store(tmp_path: Path) -> SecurityStore:
    return SecurityStore(tmp_path / "data" / "flashsight.db")


def test_the_database_is_private_to_its_owner(store):
    assert store.database_path.stat().st_mode & 0o077 == 0


def test_a_key_check_is_one_digest_compare_whatever_is_wrong(store, monkeypatch):
    """Constant time by construction: every check, hit or miss, compares two SHA-256 hex digests
    with hmac.compare_digest, and nothing else depends on the secret."""
    keys = KeyStore(store)
    key = keys.create("ci")
    compares: list[tuple[str, str]] = []
    real_compare = hmac.compare_digest

    def spy(a: str, b: str) -> bool:
        compares.append((a, b))
        return real_compare(a, b)

    monkeypatch.setattr(keys_module.hmac, "compare_digest", spy)
    presented = [key, key[:-1] + "x", "fsk_000000000000_" + key[-43:], "junk", "", key.upper()]
    results = [keys.verify(candidate) for candidate in presented]
    assert results[0] is not None and results[0].name == "ci" and results[1:] == [None] * 5
    assert len(compares) == len(presented)
    assert all(len(a) == len(b) == 64 for a, b in compares)


def test_revoked_keys_fail_and_names_are_unique(store):
    keys = KeyStore(store)
    key = keys.create("ci", requests_per_minute=5)
    with pytest.raises(StoreError):
        keys.create("ci")
    assert keys.list()[0].requests_per_minute == 5
    assert keys.revoke("ci") == "ci" and keys.verify(key) is None
    with pytest.raises(StoreError):
        keys.revoke("ci")
    with pytest.raises(StoreError):
        keys.create("bad name; drop table")


def test_passwords_are_argon2_hashes_and_a_change_ends_sessions(store):
    from flashsight.security.sessions import SessionStore

    users, sessions = UserStore(store), SessionStore(store, 3600)
    users.add("alice", "first-password")
    with store.connect() as db:
        assert db.execute("SELECT password_hash FROM users").fetchone()[0].startswith("$argon2id$")
    token, _ = sessions.start("alice")
    assert sessions.find(token).username == "alice"
    users.set_password("alice", "second-password")
    assert sessions.find(token) is None
    assert users.verify("alice", "second-password") and not users.verify("alice", "first-password")
    with pytest.raises(StoreError):
        users.add("bob", "short")


def test_the_limiter_refills_at_its_rate():
    clock = Clock()
    limiter = PerMinuteLimiter(clock)
    assert [limiter.take("a", 3).allowed for _ in range(4)] == [True, True, True, False]
    refused = limiter.take("a", 3)
    assert refused.retry_after_s == pytest.approx(20.0) and refused.headers("Requests")["Retry-After"] == "20"
    assert limiter.take("b", 3).allowed  # subjects are separate
    clock.now += 20
    assert limiter.take("a", 3).allowed and not limiter.take("a", 3).allowed
    assert limiter.take("x", 0, 10**9).allowed  # 0: no limit


def test_a_request_larger_than_a_minute_passes_only_on_a_full_bucket():
    clock = Clock()
    limiter = PerMinuteLimiter(clock)
    assert limiter.take("k", 1000, 5000).allowed
    assert not limiter.take("k", 1000, 1).allowed  # it left a debt
    clock.now += 5 * 60
    assert limiter.take("k", 1000, 1).allowed


def test_the_breaker_bans_after_consecutive_failures_and_lets_go():
    clock = Clock()
    breaker = CircuitBreaker(3, 600, clock)
    assert [breaker.record("ip", True) for _ in range(2)] == [False, False]
    breaker.record("ip", False)  # a success resets
    assert [breaker.record("ip", True) for _ in range(3)] == [False, False, True]
    assert breaker.banned_for("ip") == pytest.approx(600) and breaker.banned_now() == ["ip"]
    clock.now += 601
    assert breaker.banned_for("ip") == 0 and breaker.stats.bans_total == 1
    assert is_failure(401) and is_failure(500) and not is_failure(429) and not is_failure(200)


@pytest.mark.parametrize(("peer", "forwarded", "client"), [
    ("10.0.0.5", ["1.2.3.4"], "1.2.3.4"),
    ("10.0.0.5", ["6.6.6.6, 1.2.3.4"], "1.2.3.4"),
    ("10.0.0.5", ["1.2.3.4, 10.0.0.9"], "1.2.3.4"),
    ("10.0.0.5", ["1.2.3.4", "5.6.7.8"], "5.6.7.8"),
    ("10.0.0.5", ["garbage"], "10.0.0.5"),
    ("10.0.0.5", ["::ffff:1.2.3.4"], "1.2.3.4"),
    ("203.0.113.1", ["1.2.3.4"], "203.0.113.1"),
    ("10.0.0.5", [], "10.0.0.5"),
])  # fmt: skip
def test_forwarded_for_is_read_only_from_trusted_proxies(peer, forwarded, client):
    assert resolve_client_ip(peer, forwarded, parse_networks(["10.0.0.0/8"])) == client


def test_credentials_refuse_ambiguity():
    assert credentials_of(Headers({"x-api-key": "k"})).api_key == "k"
    assert credentials_of(Headers({"authorization": "BEARER k", "x-api-key": "k"})).api_key == "k"
    assert credentials_of(Headers({"cookie": "a=1; flashsight_session=tok"})).session_token == "tok"
    for raw in ([(b"authorization", b"Bearer a"), (b"authorization", b"Bearer a")],
                [(b"authorization", b"Bearer a"), (b"x-api-key", b"b")], [(b"authorization", b"Token a")]):  # fmt: skip
        with pytest.raises(AmbiguousCredentials):
            credentials_of(Headers(raw=raw))


def test_image_tokens_follow_glms_resize():
    assert image_tokens(1024, 1024) == 1369 and image_tokens(1920, 1080) == 2691
    assert image_tokens(20000, 20000) <= 6144 and image_tokens(1, 1) >= 1
    assert text_tokens("") == 0 and text_tokens("abcd") == 1 and text_tokens("abcde") == 2
