from __future__ import annotations

import ipaddress

import pytest

from almhookd.targets import TargetPolicy, TargetRefused, check_target, check_url, refusal

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
        ("fc00::1", "private"),
        ("::ffff:127.0.0.1", "loopback"),
        ("240.0.0.1", "reserved"),
    ],
)
def test_refused_by_default(address: str, kind: str) -> None:
    reason = refusal(ipaddress.ip_address(address), STRICT)
    assert reason is not None and kind in reason


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
