"""The security layer's part of the `flashsight` command: `keys` and `users`, and the serve flags."""

from __future__ import annotations

import argparse
import getpass
import sys
import time
from typing import Any

from flashsight.security.store import SecurityStore, StoreError

# serve flag -> setting; a repeated flag makes a list.
_SERVE_OPTIONS = {"config": "config", "auth": "auth", "allow_network": "allowed_networks",
                  "trusted_proxy": "trusted_proxies", "cors_origin": "cors_origins",
                  "ssl_certfile": "ssl_certfile", "ssl_keyfile": "ssl_keyfile"}  # fmt: skip


def add_serve_options(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("security")
    group.add_argument("--config", metavar="FILE", help="a TOML file of settings (also FLASHSIGHT_CONFIG); flags and variables win over it")  # noqa: E501
    group.add_argument("--auth", choices=["auto", "on", "off"], help="require API keys or a login (default auto: on unless bound to loopback)")  # noqa: E501
    group.add_argument("--allow-network", action="append", metavar="CIDR", help="let only these client networks in (repeatable)")  # noqa: E501
    group.add_argument("--trusted-proxy", action="append", metavar="CIDR", help="believe X-Forwarded-For from these proxies (repeatable)")  # noqa: E501
    group.add_argument("--cors-origin", action="append", metavar="ORIGIN", help="let web pages from this origin call the API (repeatable)")  # noqa: E501
    group.add_argument("--ssl-certfile", metavar="FILE", help="serve HTTPS with this certificate (with --ssl-keyfile)")
    group.add_argument("--ssl-keyfile", metavar="FILE", help="the certificate's private key")


def serve_settings_given(args: argparse.Namespace) -> dict[str, Any]:
    return {setting: getattr(args, flag) for flag, setting in _SERVE_OPTIONS.items() if getattr(args, flag) is not None}


def add_security_commands(commands: Any) -> None:
    keys = commands.add_parser("keys", help="create, list and revoke API keys").add_subparsers(dest="action", required=True)
    create = _with_store_options(keys.add_parser("create", help="make a key; it is printed once, never again"))
    create.add_argument("--name", help="what the key is for (default: key-<id>)")
    create.add_argument("--rpm", type=int, help="this key's requests per minute (default: the server's)")
    create.add_argument("--tpm", type=int, help="this key's tokens per minute (default: the server's)")
    create.set_defaults(handler=keys_create)
    _with_store_options(keys.add_parser("list", help="list keys (never the keys themselves)")).set_defaults(handler=keys_list)
    revoke = _with_store_options(keys.add_parser("revoke", help="revoke a key at once"))
    revoke.add_argument("key", metavar="NAME_OR_ID")
    revoke.set_defaults(handler=keys_revoke)

    users = commands.add_parser("users", help="add and remove page users, change passwords").add_subparsers(dest="action", required=True)
    for action, handler, text in (("add", users_add, "add a user"), ("remove", users_remove, "remove a user and end their sessions"),
                                  ("passwd", users_passwd, "change a user's password")):  # fmt: skip
        parser = _with_store_options(users.add_parser(action, help=text))
        parser.add_argument("username")
        if action != "remove":
            parser.add_argument("--password-stdin", action="store_true", help="read the password from standard input")
        parser.set_defaults(handler=handler)


def _with_store_options(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    parser.add_argument("--data-dir", help="the server's data directory (default: the server's)")
    parser.add_argument("--config", metavar="FILE", help="the server's TOML file, for its data_dir")
    return parser


def _store(args: argparse.Namespace) -> SecurityStore:
    from flashsight.server.settings import ServerSettings

    given = {"data_dir": args.data_dir, "config": args.config}
    settings = ServerSettings(**{name: value for name, value in given.items() if value is not None})
    return SecurityStore(settings.database_path)


def _run(action) -> int:
    """Run a store action; a refused one (name taken, no such user) is one line and exit 2."""
    from flashsight.cli import _describe, fail

    try:
        action()
    except StoreError as exc:
        return fail(str(exc))
    except Exception as exc:  # a bad setting or an unreadable data dir: one line, no traceback
        return fail(_describe(exc))
    return 0


def keys_create(args: argparse.Namespace) -> int:
    from flashsight.security.keys import KeyStore

    def create() -> None:
        store = KeyStore(_store(args))
        key = store.create(args.name, args.rpm, args.tpm)
        print(key)
        print(f"flashsight: created the key {args.name or 'key-' + key.split('_')[1]!r}; it is shown only this once, so keep it now.", file=sys.stderr)

    return _run(create)


def keys_list(args: argparse.Namespace) -> int:
    from flashsight.security.keys import KeyStore

    def show() -> None:
        print(f"{'NAME':24} {'ID':12} {'CREATED':19} {'STATE':8} {'RPM':>8} {'TPM':>10}")
        for key in KeyStore(_store(args)).list():
            created = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(key.created_at))
            state = "revoked" if key.revoked_at else "active"
            rpm, tpm = key.requests_per_minute or "default", key.tokens_per_minute or "default"
            print(f"{key.name:24} {key.key_id:12} {created:19} {state:8} {rpm!s:>8} {tpm!s:>10}")

    return _run(show)


def keys_revoke(args: argparse.Namespace) -> int:
    from flashsight.security.keys import KeyStore

    return _run(lambda: print(f"flashsight: revoked the key {KeyStore(_store(args)).revoke(args.key)!r}."))


def _password(args: argparse.Namespace) -> str:
    if args.password_stdin:
        return sys.stdin.readline().rstrip("\r\n")
    first = getpass.getpass("Password: ")
    if getpass.getpass("Again: ") != first:
        raise StoreError("the two passwords differ")
    return first


def users_add(args: argparse.Namespace) -> int:
    from flashsight.security.users import UserStore

    def add() -> None:
        UserStore(_store(args)).add(args.username, _password(args))
        print(f"flashsight: added the user {args.username!r}.")

    return _run(add)


def users_remove(args: argparse.Namespace) -> int:
    from flashsight.security.users import UserStore

    def remove() -> None:
        UserStore(_store(args)).remove(args.username)
        print(f"flashsight: removed the user {args.username!r}.")

    return _run(remove)


def users_passwd(args: argparse.Namespace) -> int:
    from flashsight.security.users import UserStore

    def change() -> None:
        UserStore(_store(args)).set_password(args.username, _password(args))
        print(f"flashsight: changed the password of {args.username!r}; their sessions have ended.")

    return _run(change)
