"""The SSRF guard: only globally routable addresses, checked after one resolution whose address is then used."""

from __future__ import annotations

import ipaddress

import pytest

from webhooks.guard import Refused, is_public, resolve


@pytest.mark.parametrize(
    "address",
    [
        "127.0.0.1",
        "10.1.2.3",
        "172.16.0.1",
        "192.168.1.1",
        "169.254.169.254",  # cloud metadata
        "100.64.0.1",  # shared (CGNAT)
        "0.0.0.0",
        "224.0.0.1",
        "255.255.255.255",
        "::1",
        "fe80::1",
        "fc00::1",
        "::ffff:127.0.0.1",
        "::ffff:10.0.0.1",
        "::",
    ],
)
def test_non_global_addresses_are_not_public(address: str) -> None:
    assert not is_public(ipaddress.ip_address(address))


@pytest.mark.parametrize("address", ["93.184.215.14", "8.8.8.8", "2606:4700:4700::1111", "::ffff:8.8.8.8"])
def test_global_addresses_are_public(address: str) -> None:
    assert is_public(ipaddress.ip_address(address))


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1:8080/hook",
        "http://localhost/hook",  # a name that resolves to loopback
        "http://[::1]/hook",
        "https://169.254.169.254/latest/meta-data",
        "http://10.0.0.7/",
        "http://0x7f000001/",  # 127.0.0.1 spelled in hex, as getaddrinfo reads it
    ],
)
def test_private_destinations_are_refused_by_default(url: str) -> None:
    with pytest.raises(Refused, match="not a public address"):
        resolve(url, allow_private=False)


def test_the_flag_allows_them_and_the_target_keeps_the_vetted_address() -> None:
    target = resolve("http://localhost:8080/hook?x=1", allow_private=True)
    assert ipaddress.ip_address(target.address).is_loopback
    assert (target.scheme, target.host, target.port) == ("http", "localhost", 8080)
    assert (target.host_header, target.path) == ("localhost:8080", "/hook?x=1")


def test_a_public_address_passes() -> None:
    target = resolve("https://93.184.215.14/in", allow_private=False)
    assert (target.address, target.port, target.path) == ("93.184.215.14", 443, "/in")
