from __future__ import annotations

import ipaddress
import socket

import pytest

from almhookd import targets
from almhookd.config import parse_config
from almhookd.targets import (
    TargetPolicy,
    TargetRefused,
    check_addresses,
    check_target,
    check_url,
    refusal,
    resolve,
)

STRICT = TargetPolicy()


@pytest.mark.parametrize(
    ("address", "kind"),
    [
        ("169.254.169.254", "link-local"),
        ("10.0.0.1", "private"),
        ("192.168.1.1", "private"),
        ("172.16.0.1", "private"),
        ("127.0.0.1", "loopback"),
        ("::1", "loopback"),
        ("100.64.0.1", "CGNAT"),
        ("224.0.0.1", "multicast"),
        ("0.0.0.0", "unspecified"),
        ("fe80::1", "link-local"),
        ("fec0::1", "site-local"),
        ("fc00::1", "private"),
        ("::ffff:127.0.0.1", "loopback"),
        ("240.0.0.1", "reserved"),
    ],
)
def test_refused_by_default(address: str, kind: str) -> None:
    shown = address.removeprefix("::ffff:")  # an IPv4-mapped address is judged as IPv4
    assert refusal(ipaddress.ip_address(address), STRICT) == f"{shown} is a {kind} address"


@pytest.mark.parametrize("address", ["93.184.215.14", "2606:4700::6810:85e5", "8.8.8.8"])
def test_public_addresses_are_allowed(address: str) -> None:
    assert refusal(ipaddress.ip_address(address), STRICT) is None


def test_allowed_networks_and_the_switch() -> None:
    allowed = TargetPolicy(allowed_networks=(ipaddress.ip_network("10.20.0.0/16"),))
    assert refusal(ipaddress.ip_address("10.20.1.2"), allowed) is None
    assert refusal(ipaddress.ip_address("10.21.1.2"), allowed) is not None
    everything = TargetPolicy(allow_private=True)
    assert refusal(ipaddress.ip_address("127.0.0.1"), everything) is None


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("ftp://example.org/", "http:// or https://"),
        ("http:///x", "no host"),
        ("http://user:pw@example.org/", "must not carry credentials"),
        ("http://example.org:99999/", "not a valid URL"),
    ],
)
def test_bad_urls(url: str, message: str) -> None:
    with pytest.raises(TargetRefused, match=message):
        check_url(url)


@pytest.mark.parametrize(
    "url",
    [
        "http://169.254.169.254/latest/meta-data",
        "http://10.0.0.1/hook",
        "http://[::1]:8787/v1/webhooks",
        "http://localhost:8787/v1/events",
    ],
)
async def test_check_target_refuses_private_targets(url: str) -> None:
    with pytest.raises(TargetRefused, match="not allowed"):
        await check_target(url, STRICT)


async def test_check_target_allows_loopback_when_configured() -> None:
    await check_target("http://localhost:9/", TargetPolicy(allow_private=True))


@pytest.mark.parametrize(
    ("addresses", "bad"),
    [
        (["93.184.215.14", "127.0.0.1"], "127.0.0.1"),
        (["93.184.215.14", "10.1.2.3"], "10.1.2.3"),
        (["2606:4700::6810:85e5", "8.8.8.8", "169.254.169.254"], "169.254.169.254"),
        (["8.8.8.8", "fe80::1%eth0"], "fe80::1%eth0"),
    ],
)
def test_every_resolved_address_is_checked_not_only_the_first(
    addresses: list[str], bad: str
) -> None:
    """A name with one public and one internal address (round-robin DNS, rebinding) is
    refused, and the message names the address that is not allowed."""
    with pytest.raises(TargetRefused) as caught:
        check_addresses("hooks.example.org", addresses, STRICT)
    assert f"target hooks.example.org resolves to {bad}, which is not allowed" in (
        caught.value.message
    )
    assert "delivery.allow_private_targets or delivery.allowed_networks" in caught.value.message


def test_a_name_with_only_public_addresses_is_allowed() -> None:
    check_addresses("hooks.example.org", ["93.184.215.14", "2606:4700::6810:85e5"], STRICT)


def test_a_refused_ip_literal_is_named_once() -> None:
    with pytest.raises(TargetRefused) as caught:
        check_addresses("10.0.0.1", ["10.0.0.1"], STRICT)
    assert caught.value.message == (
        "target 10.0.0.1 is not allowed: 10.0.0.1 is a private address; set "
        "delivery.allow_private_targets or delivery.allowed_networks"
    )


def test_allowed_networks_cover_only_the_addresses_inside_them() -> None:
    policy = TargetPolicy(allowed_networks=(ipaddress.ip_network("10.0.0.0/8"),))
    check_addresses("internal.example.org", ["10.1.2.3", "8.8.8.8"], policy)
    with pytest.raises(TargetRefused, match=r"resolves to 192\.168\.0\.7"):
        check_addresses("internal.example.org", ["10.1.2.3", "192.168.0.7"], policy)


def test_the_policy_comes_from_the_configuration() -> None:
    config = parse_config(
        '[delivery]\nallow_private_targets = true\nallowed_networks = ["10.0.0.0/8"]\n',
        env={},
    )
    assert TargetPolicy.from_config(config.delivery) == TargetPolicy(
        allow_private=True, allowed_networks=(ipaddress.ip_network("10.0.0.0/8"),)
    )
    assert TargetPolicy.from_config(parse_config("", env={}).delivery) == STRICT


async def test_resolve_gives_each_distinct_address_with_its_family() -> None:
    # Numeric hosts: getaddrinfo answers them without asking any name server.
    assert await resolve("127.0.0.2", 443) == [(socket.AF_INET, "127.0.0.2")]
    assert await resolve("::1", 80) == [(socket.AF_INET6, "::1")]


class FakeDns:
    """Plays the name service: ``targets.resolve`` is the seam for it."""

    def __init__(self, answer: list[str] | OSError) -> None:
        self.answer = answer
        self.asked: list[tuple[str, int]] = []

    async def __call__(self, host: str, port: int) -> list[tuple[int, str]]:
        self.asked.append((host, port))
        if isinstance(self.answer, OSError):
            raise self.answer
        return [
            (socket.AF_INET6 if ":" in address else socket.AF_INET, address)
            for address in self.answer
        ]


@pytest.mark.parametrize(
    ("answer", "bad"),
    [
        (["93.184.215.14", "127.0.0.1"], "127.0.0.1"),
        (["93.184.215.14", "10.9.8.7"], "10.9.8.7"),
    ],
)
async def test_check_target_refuses_a_name_with_any_internal_address(
    monkeypatch: pytest.MonkeyPatch, answer: list[str], bad: str
) -> None:
    dns = FakeDns(answer)
    monkeypatch.setattr(targets, "resolve", dns)
    with pytest.raises(TargetRefused) as caught:
        await check_target("https://hooks.example.org:8443/in", STRICT)
    assert dns.asked == [("hooks.example.org", 8443)]
    assert caught.value.message.startswith(
        f"target hooks.example.org resolves to {bad}, which is not allowed: "
    )


async def test_check_target_allows_a_name_with_only_public_addresses(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    dns = FakeDns(["93.184.215.14", "2606:4700::6810:85e5"])
    monkeypatch.setattr(targets, "resolve", dns)
    await check_target("http://hooks.example.org/in", STRICT)
    assert dns.asked == [("hooks.example.org", 80)]


async def test_check_target_refuses_a_name_that_does_not_resolve(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(targets, "resolve", FakeDns(OSError("Name or service not known")))
    with pytest.raises(TargetRefused) as caught:
        await check_target("https://nowhere.example.org/", STRICT)
    assert caught.value.message == (
        "target host nowhere.example.org does not resolve: Name or service not known"
    )


async def test_check_target_names_a_refused_ip_literal(monkeypatch: pytest.MonkeyPatch) -> None:
    dns = FakeDns([])
    monkeypatch.setattr(targets, "resolve", dns)
    with pytest.raises(TargetRefused) as caught:
        await check_target("http://10.0.0.1:8080/hook", STRICT)
    assert caught.value.message.startswith("target 10.0.0.1 is not allowed: 10.0.0.1 is a private")
    assert dns.asked == []  # a literal needs no name service
