"""Addresses: who the client is (X-Forwarded-For only from trusted proxies), who may connect at
all (the allow-list), and the start-up checks that refuse settings which would open the server."""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

if TYPE_CHECKING:
    from flashsight.server.settings import ServerSettings

Network = ipaddress.IPv4Network | ipaddress.IPv6Network
Address = ipaddress.IPv4Address | ipaddress.IPv6Address


def parse_networks(entries: Iterable[str]) -> tuple[Network, ...]:
    networks = []
    for entry in entries:
        try:
            networks.append(ipaddress.ip_network(entry.strip(), strict=False))
        except ValueError:
            raise ValueError(f"{entry[:80]!r} is not an IP address or CIDR network") from None
    return tuple(networks)


def parse_address(text: str) -> Address | None:
    try:
        address = ipaddress.ip_address(text.strip().strip("[]"))
    except ValueError:
        return None
    # ::ffff:10.0.0.1 is 10.0.0.1: an IPv4 allow-list entry must match it.
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped:
        return address.ipv4_mapped
    return address


def in_networks(address: Address | None, networks: tuple[Network, ...]) -> bool:
    return address is not None and any(address in network for network in networks)


def is_loopback_host(host: str) -> bool:
    if host.lower() == "localhost":
        return True
    address = parse_address(host)
    return address is not None and address.is_loopback


def check_origin(origin: str) -> str:
    """An origin is `scheme://host[:port]`, exactly; a wildcard would let any site call the API."""
    parts = urlsplit(origin)
    if origin == "*" or "*" in origin:
        raise ValueError("cors_origins must list origins one by one; '*' would let any web site call the API")
    if parts.scheme not in ("http", "https") or not parts.hostname or parts.path or parts.query or parts.fragment:
        raise ValueError(f"{origin[:80]!r} is not an origin such as https://tools.example.com")
    return origin.rstrip("/")


def resolve_client_ip(peer: str, forwarded_for: list[str], trusted_proxies: tuple[Network, ...]) -> str:
    """The client's address: the peer's, unless the peer is a trusted proxy; then the right-most
    X-Forwarded-For entry that is not itself a trusted proxy (the left part is client-written)."""
    if not in_networks(parse_address(peer), trusted_proxies) or not forwarded_for:
        return peer
    hops = [hop.strip() for header in forwarded_for for hop in header.split(",")]
    client = peer
    for hop in reversed(hops):
        address = parse_address(hop)
        if address is None:
            break  # garbage from beyond the trusted proxies: the last trusted hop is the client
        client = str(address)
        if not in_networks(address, trusted_proxies):
            break
    return client


def refuse_unsafe_settings(settings: ServerSettings) -> None:
    """Raise ValueError, in one sentence, for settings that would quietly weaken the server."""
    for network in parse_networks(settings.trusted_proxies):
        if network.prefixlen == 0:
            raise ValueError("trusted_proxies must not include every address: any client could forge X-Forwarded-For")
    if (settings.ssl_certfile is None) != (settings.ssl_keyfile is None):
        raise ValueError("ssl_certfile and ssl_keyfile must be given together")
    for path in (settings.ssl_certfile, settings.ssl_keyfile):
        if path is not None and not Path(path).is_file():
            raise ValueError(f"the TLS file {str(path)!r} does not exist")
    if settings.rate_limit_tokens_per_minute and settings.rate_limit_tokens_per_minute < settings.max_tokens_cap:
        raise ValueError("rate_limit_tokens_per_minute is below max_tokens_cap: large requests could never pass")
