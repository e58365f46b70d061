"""Which addresses a webhook may reach: the guard against server-side request forgery.

A callback URL is a client's choice of where our network sends a request. By default
only globally routable addresses are allowed: never loopback, private, link-local,
shared (CGNAT), multicast, reserved or unspecified ones, nor a name that resolves to
one. The name is resolved once, here, and the request connects to the vetted address
(:mod:`webhooks.sender`), so a DNS answer that changes between the check and the
connection (rebinding) cannot redirect it. ``WEBHOOK_ALLOW_PRIVATE=1`` lifts the rule
for development and tests.
"""

from __future__ import annotations

import ipaddress
import socket
from dataclasses import dataclass
from urllib.parse import urlsplit

Address = ipaddress.IPv4Address | ipaddress.IPv6Address


class Refused(Exception):
    """The URL leads to an address webhooks may not reach."""


class Unresolvable(Exception):
    """The URL's host has no address now (worth another try later)."""


@dataclass(frozen=True)
class Target:
    """Where one attempt connects: the vetted ``address``, and the URL's own host for ``Host`` and TLS."""

    scheme: str
    host: str
    port: int
    address: str
    host_header: str
    path: str


def is_public(address: Address) -> bool:
    """Whether ``address`` is globally routable unicast (an IPv4-mapped IPv6 address counts as its IPv4 one)."""
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    return address.is_global and not address.is_multicast


def resolve(url: str, allow_private: bool) -> Target:
    """Resolve the URL's host once and vet every address it has; raise :class:`Refused` or :class:`Unresolvable`."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    port = parts.port or (443 if parts.scheme == "https" else 80)
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except socket.gaierror as exc:
        raise Unresolvable(f"cannot resolve {host}: {exc.strerror}") from None
    addresses = [ipaddress.ip_address(str(info[4][0]).partition("%")[0]) for info in infos]
    if not addresses:
        raise Unresolvable(f"{host} has no address")
    if not allow_private:
        for address in addresses:
            if not is_public(address):
                raise Refused(f"{host} resolves to {address}, which is not a public address")
    path = parts.path or "/"
    if parts.query:
        path = f"{path}?{parts.query}"
    host_header = parts.netloc.rpartition("@")[2]
    return Target(parts.scheme, host, port, str(addresses[0]), host_header, path)
