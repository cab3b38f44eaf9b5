"""Security settings: one TOML file + FLASHSIGHT_* variables + flags (in that order of strength),
auth's automatic mode, and unsafe settings refused at start-up in one sentence."""

from __future__ import annotations

import pytest

from flashsight.security.config_file import ConfigFileError
from flashsight.security.setup import warn_if_open
from flashsight.server.settings import ServerSettings
from test_cli import check_one_line_error, flashsight


@pytest.fixture
def config_file(tmp_path, monkeypatch):
    monkeypatch.delenv("FLASHSIGHT_CONFIG", raising=False)
    path = tmp_path / "flashsight.toml"
    path.write_text('auth = "on"\nrate_limit_requests_per_minute = 50\nban_seconds = 60.0\n'
                    'allowed_networks = ["10.0.0.0/8", "fd00::/8"]\n')  # fmt: skip
    return path


def test_flags_beat_variables_beat_the_file_beat_defaults(config_file, monkeypatch):
    monkeypatch.setenv("FLASHSIGHT_RATE_LIMIT_REQUESTS_PER_MINUTE", "70")
    monkeypatch.setenv("FLASHSIGHT_BAN_SECONDS", "90")
    settings = ServerSettings(config=config_file, ban_seconds=120.0)
    assert settings.auth == "on"  # from the file
    assert settings.rate_limit_requests_per_minute == 70  # the variable beats the file
    assert settings.ban_seconds == 120.0  # the flag beats the variable
    assert settings.allowed_networks == ("10.0.0.0/8", "fd00::/8")
    assert settings.ban_after_failures == 5  # the default


def test_the_file_can_be_named_by_a_variable(config_file, monkeypatch):
    monkeypatch.setenv("FLASHSIGHT_CONFIG", str(config_file))
    assert ServerSettings().rate_limit_requests_per_minute == 50


@pytest.mark.parametrize("text", ["auth = \n", 'no_such_setting = 1\n', 'auth = "maybe"\n'])
def test_a_bad_file_is_refused(tmp_path, text):
    path = tmp_path / "bad.toml"
    path.write_text(text)
    with pytest.raises((ConfigFileError, ValueError)):
        ServerSettings(config=path)


@pytest.mark.parametrize(("host", "auth", "required"), [
    ("127.0.0.1", "auto", False), ("::1", "auto", False), ("localhost", "auto", False),
    ("0.0.0.0", "auto", True), ("::", "auto", True), ("192.168.1.10", "auto", True),
    ("127.0.0.1", "on", True), ("0.0.0.0", "off", False),
])  # fmt: skip
def test_auth_is_on_beyond_loopback_unless_turned_off(host, auth, required):
    assert ServerSettings(host=host, auth=auth).auth_enabled() is required


def test_auth_off_beyond_loopback_warns_loudly(capsys):
    warn_if_open(ServerSettings(host="0.0.0.0", auth="off"))
    assert "WARNING: auth is OFF" in capsys.readouterr().err
    warn_if_open(ServerSettings(host="127.0.0.1", auth="off"))
    assert capsys.readouterr().err == ""


@pytest.mark.parametrize("unsafe", [
    {"trusted_proxies": ("0.0.0.0/0",)}, {"trusted_proxies": ("::/0",)}, {"cors_origins": ("*",)},
    {"cors_origins": ("https://a.example/path",)}, {"allowed_networks": ("10.0.0.0/33",)},
    {"ssl_certfile": "/no/such/cert.pem"}, {"rate_limit_tokens_per_minute": 100},
])  # fmt: skip
def test_unsafe_settings_are_refused(unsafe):
    with pytest.raises(ValueError):
        ServerSettings(**unsafe)


@pytest.mark.parametrize("args", [
    ("--trusted-proxy", "0.0.0.0/0"), ("--cors-origin", "*"), ("--config", "/no/such/flashsight.toml"),
])  # fmt: skip
def test_serve_refuses_unsafe_settings_in_one_line(args):
    check_one_line_error(flashsight("serve", "--model", "/no/such/model", *args, timeout=60))


def test_keys_and_users_commands_speak_in_one_line(tmp_path):
    data = ("--data-dir", str(tmp_path))
    created = flashsight("keys", "create", "--name", "ci", *data, timeout=60)
    assert created.returncode == 0 and created.stdout.startswith("fsk_") and "only this once" in created.stderr
    check_one_line_error(flashsight("keys", "create", "--name", "ci", *data, timeout=60))
    check_one_line_error(flashsight("keys", "revoke", "nobody", *data, timeout=60))
    check_one_line_error(flashsight("users", "remove", "nobody", *data, timeout=60))
