"""The target guard: which addresses a webhook may be aimed at.

By default a webhook may not reach loopback, private, link-local (the cloud metadata
service), IPv6 site-local, CGNAT, multicast or reserved addresses, so it cannot be
turned against the admin port or the internal network.
``delivery.allow_private_targets`` lifts the rule; ``delivery.allowed_networks`` lifts
it for chosen networks. The rule applies to every address a name resolves to, at
creation and again at every connection, so a name that later resolves elsewhere (DNS
rebinding) is caught.
"""

from __future__ import annotations

import asyncio
import functools
import ipaddress
import socket
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final
from urllib.parse import urlsplit

from almhookd.config import DeliveryConfig, IPNetwork
from almhookd.errors import AlmhookdError

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

_CGNAT: Final = ipaddress.ip_network("100.64.0.0/10")


class TargetRefused(AlmhookdError):
    """The target address is not allowed."""


@dataclass(frozen=True, kw_only=True, slots=True)
class TargetPolicy:
    allow_private: bool = False
    allowed_networks: tuple[IPNetwork, ...] = ()

    @classmethod
    def from_config(cls, delivery: DeliveryConfig) -> TargetPolicy:
        return cls(
            allow_private=delivery.allow_private_targets, allowed_networks=delivery.allowed_networks
        )


def refusal(address: IPAddress, policy: TargetPolicy) -> str | None:
    """Why ``address`` may not be a target, or ``None`` when it may."""
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    if policy.allow_private or any(
        address in net for net in policy.allowed_networks if net.version == address.version
    ):
        return None
    for kind, hit in (
        ("loopback", address.is_loopback),
        ("link-local", address.is_link_local),
        # fec0::/10, deprecated (RFC 3879) yet routed inside some networks; Python
        # counts it as global.
        ("site-local", isinstance(address, ipaddress.IPv6Address) and address.is_site_local),
        ("multicast", address.is_multicast),
        ("unspecified", address.is_unspecified),
        ("CGNAT", isinstance(address, ipaddress.IPv4Address) and address in _CGNAT),
        ("reserved", address.is_reserved),
        ("private", address.is_private),
        ("non-global", not address.is_global),
    ):
        if hit:
            return f"{address} is a {kind} address"
    return None


@functools.lru_cache(maxsize=256)
def check_url(url: str) -> tuple[str, int, IPAddress | None]:
    """``(host, port, ip literal or None)`` of an http(s) URL, or :class:`TargetRefused`.

    Cached: a worker checks its webhook's URL before every request."""
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as error:
        raise TargetRefused(f"targetUrl is not a valid URL: {error}") from None
    if parts.scheme not in ("http", "https"):
        raise TargetRefused("targetUrl must start with http:// or https://")
    if not parts.hostname:
        raise TargetRefused("targetUrl has no host")
    if parts.username or parts.password:
        raise TargetRefused("targetUrl must not carry credentials; use auth type basic")
    host = parts.hostname
    try:
        literal: IPAddress | None = ipaddress.ip_address(host)
    except ValueError:
        literal = None
    return host, port or (443 if parts.scheme == "https" else 80), literal


def check_addresses(host: str, addresses: Sequence[str], policy: TargetPolicy) -> None:
    """Refuse when any address ``host`` resolves to is not allowed."""
    for text in addresses:
        reason = refusal(ipaddress.ip_address(text.split("%", 1)[0]), policy)
        if reason is not None:
            shown = host if host == text else f"{host} resolves to {text}, which"
            raise TargetRefused(
                f"target {shown} is not allowed: {reason}; set "
                "delivery.allow_private_targets or delivery.allowed_networks"
            )


async def resolve(host: str, port: int) -> list[tuple[int, str]]:
    """``(family, address)`` for each distinct address ``host`` resolves to.

    The one name-service seam: creation-time checks and the delivery client both come
    here, so a test that plays DNS (rebinding) replaces this function."""
    infos = await asyncio.get_running_loop().getaddrinfo(
        host, port, type=socket.SOCK_STREAM, proto=socket.IPPROTO_TCP
    )
    return list(dict.fromkeys((int(info[0]), str(info[4][0])) for info in infos))


async def check_target(url: str, policy: TargetPolicy) -> None:
    """Creation-time check: the URL's form and every address its host resolves to."""
    host, port, literal = check_url(url)
    if literal is not None:
        check_addresses(host, [str(literal)], policy)
        return
    try:
        addresses = await resolve(host, port)
    except OSError as error:
        raise TargetRefused(f"target host {host} does not resolve: {error}") from None
    check_addresses(host, [address for _family, address in addresses], policy)
