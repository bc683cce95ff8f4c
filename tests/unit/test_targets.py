from __future__ import annotations

import ipaddress
import socket

import pytest

from almhookd.config import parse_config
from almhookd.delivery import resolver
from almhookd.delivery.resolver import check_target, resolve
from almhookd.domain.targets import (
    TargetPolicy,
    TargetRefused,
    check_addresses,
    check_url,
    refusal,
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
        ("240.0.0.1", "reserved"),
        # Inside ::/96, yet IPv6's own loopback and unspecified, not IPv4-compatible.
        ("::", "unspecified"),
    ],
)
def test_refused_by_default(address: str, kind: str) -> None:
    assert refusal(ipaddress.ip_address(address), STRICT) == f"{address} is a {kind} address"


@pytest.mark.parametrize("address", ["93.184.215.14", "2606:4700::6810:85e5", "8.8.8.8"])
def test_public_addresses_are_allowed(address: str) -> None:
    assert refusal(ipaddress.ip_address(address), STRICT) is None


# --- IPv6 forms that carry an IPv4 address (issue #17) -------------------------------

#: ``(IPv6 address, its form, the IPv4 address it carries, that address's kind)`` for
#: each form with a loopback, private, link-local and public IPv4 address; a public one
#: (kind ``None``) is allowed.
CARRIERS = [
    ("::ffff:127.0.0.1", "an IPv4-mapped", "127.0.0.1", "loopback"),
    ("::ffff:10.1.2.3", "an IPv4-mapped", "10.1.2.3", "private"),
    ("::ffff:169.254.169.254", "an IPv4-mapped", "169.254.169.254", "link-local"),
    ("::ffff:8.8.8.8", "an IPv4-mapped", "8.8.8.8", None),
    ("2002:7f00:1::", "a 6to4", "127.0.0.1", "loopback"),
    ("2002:a01:203:1::5", "a 6to4", "10.1.2.3", "private"),
    ("2002:a9fe:a9fe::", "a 6to4", "169.254.169.254", "link-local"),
    ("2002:808:808::1", "a 6to4", "8.8.8.8", None),
    ("64:ff9b::7f00:1", "a NAT64", "127.0.0.1", "loopback"),
    ("64:ff9b::c0a8:101", "a NAT64", "192.168.1.1", "private"),
    ("64:ff9b::a9fe:a9fe", "a NAT64", "169.254.169.254", "link-local"),
    ("64:ff9b::808:808", "a NAT64", "8.8.8.8", None),
    ("64:ff9b:1::7f00:1", "a NAT64", "127.0.0.1", "loopback"),
    ("64:ff9b:1:ab::a01:203", "a NAT64", "10.1.2.3", "private"),
    ("64:ff9b:1::a9fe:a9fe", "a NAT64", "169.254.169.254", "link-local"),
    ("64:ff9b:1::5db8:d70e", "a NAT64", "93.184.215.14", None),
    ("::7f00:1", "an IPv4-compatible", "127.0.0.1", "loopback"),
    ("::a01:203", "an IPv4-compatible", "10.1.2.3", "private"),
    ("::a9fe:a9fe", "an IPv4-compatible", "169.254.169.254", "link-local"),
    ("::808:808", "an IPv4-compatible", "8.8.8.8", None),
    ("::6440:1", "an IPv4-compatible", "100.64.0.1", "CGNAT"),
]
REFUSED_CARRIERS = [
    (address, form, ipv4, kind) for address, form, ipv4, kind in CARRIERS if kind is not None
]
ALLOWED_CARRIERS = [address for address, _form, _ipv4, kind in CARRIERS if kind is None]

#: Teredo (``2001::/32``) with each kind of client address (stored inverted), all
#: through the server 65.54.227.120: refused whatever the client.
TEREDO = [
    ("2001:0:4136:e378:8000:63bf:80ff:fffe", "127.0.0.1"),
    ("2001:0:4136:e378:8000:63bf:f5fe:fdfc", "10.1.2.3"),
    ("2001:0:4136:e378:8000:63bf:5601:5601", "169.254.169.254"),
    ("2001:0:4136:e378:8000:63bf:f7f7:f7f7", "8.8.8.8"),
]


def carrier_refusal(address: str, form: str, ipv4: str, kind: str) -> str:
    return f"{address} is {form} address of {ipv4}, a {kind} address"


def teredo_refusal(address: str, client: str) -> str:
    return f"{address} is a Teredo address of {client}, tunnelled through third-party relays"


def test_the_issues_examples_are_refused_naming_both_forms() -> None:
    assert refusal(ipaddress.ip_address("2002:7f00:1::"), STRICT) == (
        "2002:7f00:1:: is a 6to4 address of 127.0.0.1, a loopback address"
    )
    assert refusal(ipaddress.ip_address("2002:a9fe:a9fe::"), STRICT) == (
        "2002:a9fe:a9fe:: is a 6to4 address of 169.254.169.254, a link-local address"
    )


@pytest.mark.parametrize(("address", "form", "ipv4", "kind"), REFUSED_CARRIERS)
def test_an_ipv6_form_is_judged_by_the_ipv4_address_it_carries(
    address: str, form: str, ipv4: str, kind: str
) -> None:
    assert refusal(ipaddress.ip_address(address), STRICT) == carrier_refusal(
        address, form, ipv4, kind
    )


@pytest.mark.parametrize("address", ALLOWED_CARRIERS)
def test_an_ipv6_form_of_a_public_ipv4_address_is_allowed(address: str) -> None:
    """NAT64 of a public address is what DNS64 answers on an IPv6-only host."""
    assert refusal(ipaddress.ip_address(address), STRICT) is None


@pytest.mark.parametrize(("address", "client"), TEREDO)
def test_teredo_is_refused_whatever_it_carries(address: str, client: str) -> None:
    assert refusal(ipaddress.ip_address(address), STRICT) == teredo_refusal(address, client)


@pytest.mark.parametrize(
    ("address", "policy", "allowed"),
    [
        # An IPv6 entry covers the IPv6 forms written inside it.
        (TEREDO[3][0], TargetPolicy(allowed_networks=(ipaddress.ip_network("2001::/32"),)), True),
        (
            "2002:7f00:1::",
            TargetPolicy(allowed_networks=(ipaddress.ip_network("2002:7f00::/24"),)),
            True,
        ),
        (
            "64:ff9b::a01:203",
            TargetPolicy(allowed_networks=(ipaddress.ip_network("64:ff9b::a00:0/104"),)),
            True,
        ),
        (
            "64:ff9b::7f00:1",
            TargetPolicy(allowed_networks=(ipaddress.ip_network("64:ff9b::a00:0/104"),)),
            False,
        ),
        # An IPv4 entry covers IPv4-mapped forms (the same destination on a dual-stack
        # socket) but not the forms that go through a relay or a translator.
        (
            "::ffff:10.1.2.3",
            TargetPolicy(allowed_networks=(ipaddress.ip_network("10.0.0.0/8"),)),
            True,
        ),
        (
            "2002:a01:203::",
            TargetPolicy(allowed_networks=(ipaddress.ip_network("10.0.0.0/8"),)),
            False,
        ),
        (
            "64:ff9b::a01:203",
            TargetPolicy(allowed_networks=(ipaddress.ip_network("10.0.0.0/8"),)),
            False,
        ),
        ("::a01:203", TargetPolicy(allowed_networks=(ipaddress.ip_network("10.0.0.0/8"),)), False),
        (TEREDO[1][0], TargetPolicy(allowed_networks=(ipaddress.ip_network("10.0.0.0/8"),)), False),
        # The switch lifts the rule for every form.
        (TEREDO[0][0], TargetPolicy(allow_private=True), True),
        ("2002:7f00:1::", TargetPolicy(allow_private=True), True),
        ("64:ff9b:1::a9fe:a9fe", TargetPolicy(allow_private=True), True),
    ],
)
def test_allowed_networks_cover_the_forms_written_inside_them(
    address: str, policy: TargetPolicy, allowed: bool
) -> None:
    assert (refusal(ipaddress.ip_address(address), policy) is None) is allowed


@pytest.mark.parametrize(
    ("address", "reason"),
    [(row[0], carrier_refusal(*row)) for row in REFUSED_CARRIERS]
    + [(address, teredo_refusal(address, client)) for address, client in TEREDO],
)
def test_a_name_resolving_to_an_ipv6_form_of_an_internal_address_is_refused(
    address: str, reason: str
) -> None:
    with pytest.raises(TargetRefused) as caught:
        check_addresses("hooks.example.org", ["93.184.215.14", address], STRICT)
    assert caught.value.message == (
        f"target hooks.example.org resolves to {address}, which is not allowed: {reason}; "
        "set delivery.allow_private_targets or delivery.allowed_networks"
    )


def test_a_name_resolving_to_ipv6_forms_of_public_addresses_is_allowed() -> None:
    check_addresses("hooks.example.org", ["93.184.215.14", *ALLOWED_CARRIERS], STRICT)


@pytest.mark.parametrize(
    ("address", "reason"),
    [(row[0], carrier_refusal(*row)) for row in REFUSED_CARRIERS]
    + [(address, teredo_refusal(address, client)) for address, client in TEREDO],
)
async def test_an_ip_literal_url_of_an_ipv6_form_is_refused(
    monkeypatch: pytest.MonkeyPatch, address: str, reason: str
) -> None:
    dns = FakeDns([])
    monkeypatch.setattr(resolver, "resolve", dns)
    url = f"http://[{address}]:8080/hook"
    assert check_url(url) == (address, 8080, ipaddress.ip_address(address))
    with pytest.raises(TargetRefused) as caught:
        await check_target(url, STRICT)
    assert caught.value.message == (  # the literal is named as written, once
        f"target {address} is not allowed: {reason}; "
        "set delivery.allow_private_targets or delivery.allowed_networks"
    )
    assert dns.asked == []


@pytest.mark.parametrize("address", ALLOWED_CARRIERS)
async def test_an_ip_literal_url_of_an_ipv6_form_of_a_public_address_is_allowed(
    monkeypatch: pytest.MonkeyPatch, address: str
) -> None:
    monkeypatch.setattr(resolver, "resolve", FakeDns([]))
    await check_target(f"https://[{address}]/hook", STRICT)


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
    """Plays the name service: ``resolver.resolve`` is the seam for it."""

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
    monkeypatch.setattr(resolver, "resolve", dns)
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
    monkeypatch.setattr(resolver, "resolve", dns)
    await check_target("http://hooks.example.org/in", STRICT)
    assert dns.asked == [("hooks.example.org", 80)]


async def test_check_target_refuses_a_name_that_does_not_resolve(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(resolver, "resolve", FakeDns(OSError("Name or service not known")))
    with pytest.raises(TargetRefused) as caught:
        await check_target("https://nowhere.example.org/", STRICT)
    assert caught.value.message == (
        "target host nowhere.example.org does not resolve: Name or service not known"
    )


async def test_check_target_names_a_refused_ip_literal(monkeypatch: pytest.MonkeyPatch) -> None:
    dns = FakeDns([])
    monkeypatch.setattr(resolver, "resolve", dns)
    with pytest.raises(TargetRefused) as caught:
        await check_target("http://10.0.0.1:8080/hook", STRICT)
    assert caught.value.message.startswith("target 10.0.0.1 is not allowed: 10.0.0.1 is a private")
    assert dns.asked == []  # a literal needs no name service
