"""The target guard: which addresses a webhook may be aimed at.

By default a webhook may not reach loopback, private, link-local (the cloud metadata
service), IPv6 site-local, CGNAT, multicast or reserved addresses, so it cannot be
turned against the admin port or the internal network.
``delivery.allow_private_targets`` lifts the rule; ``delivery.allowed_networks`` lifts
it for chosen networks. The rule applies to every address a name resolves to, at
creation and again at every connection, so a name that later resolves elsewhere (DNS
rebinding) is caught.

IPv6 addresses that carry an IPv4 address are judged by the address they carry, since
that is where their packets end up: IPv4-mapped (``::ffff:a.b.c.d``), 6to4
(``2002::/16``), NAT64 (the well-known ``64:ff9b::/96`` and the local-use
``64:ff9b:1::/48``, both read as the /96 layout of RFC 6052, the address in the last
32 bits) and the deprecated IPv4-compatible form (``::a.b.c.d``). So
``2002:7f00:1::`` (6to4 of 127.0.0.1) is refused as loopback, and ``64:ff9b::808:808``
(what DNS64 answers for 8.8.8.8 on an IPv6-only host) is allowed. Teredo
(``2001::/32``) is refused whatever it carries: it tunnels through third-party relays
to an obfuscated client address.

An ``allowed_networks`` entry covers the addresses written inside it, and nothing
else: an IPv6 entry covers the IPv6 forms inside it (``"64:ff9b::a14:0/112"`` allows
NAT64 of 10.20.0.0/16, ``"2001::/32"`` allows Teredo), an IPv4 entry covers IPv4
addresses and their IPv4-mapped forms (the same destination on a dual-stack socket),
but not the 6to4, NAT64, Teredo or IPv4-compatible forms of them: those reach the
IPv4 host through a relay or a translator, a path the admin did not name by listing
the IPv4 network.
"""

from __future__ import annotations

import functools
import ipaddress
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


# The IPv6 forms that carry an IPv4 address, named as a refusal puts them.
_MAPPED: Final = "an IPv4-mapped"
_SIXTOFOUR: Final = "a 6to4"
_TEREDO: Final = "a Teredo"
_NAT64_FORM: Final = "a NAT64"
_COMPATIBLE: Final = "an IPv4-compatible"
#: NAT64 prefixes whose last 32 bits are the IPv4 address (RFC 6052, RFC 8215).
_NAT64: Final = (ipaddress.ip_network("64:ff9b::/96"), ipaddress.ip_network("64:ff9b:1::/48"))
#: Deprecated IPv4-compatible addresses (RFC 4291 2.5.5.1), but for ``::`` and ``::1``.
_IPV4_COMPATIBLE: Final = ipaddress.ip_network("::/96")


def _carried_ipv4(address: ipaddress.IPv6Address) -> tuple[str, ipaddress.IPv4Address] | None:
    """``(form, IPv4 address)`` when ``address`` is one of the forms that carry one."""
    if address.ipv4_mapped is not None:
        return _MAPPED, address.ipv4_mapped
    if address.sixtofour is not None:
        return _SIXTOFOUR, address.sixtofour
    if address.teredo is not None:
        _server, client = address.teredo
        return _TEREDO, client
    last_32_bits = ipaddress.IPv4Address(int(address) & 0xFFFF_FFFF)
    if any(address in prefix for prefix in _NAT64):
        return _NAT64_FORM, last_32_bits
    if address in _IPV4_COMPATIBLE and int(address) > 1:  # :: and ::1 are IPv6's own
        return _COMPATIBLE, last_32_bits
    return None


def _kind(address: IPAddress) -> str | None:
    """The kind of address that may not be a target, or ``None`` for a global one."""
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
            return kind
    return None


def _in_allowed_networks(address: IPAddress, policy: TargetPolicy) -> bool:
    return any(address in net for net in policy.allowed_networks if net.version == address.version)


def refusal(address: IPAddress, policy: TargetPolicy) -> str | None:
    """Why ``address`` may not be a target, or ``None`` when it may."""
    if policy.allow_private or _in_allowed_networks(address, policy):
        return None
    carried = _carried_ipv4(address) if isinstance(address, ipaddress.IPv6Address) else None
    if carried is None:
        kind = _kind(address)
        return None if kind is None else f"{address} is a {kind} address"
    form, ipv4 = carried
    if form == _TEREDO:
        return f"{address} is {form} address of {ipv4}, tunnelled through third-party relays"
    if form == _MAPPED and _in_allowed_networks(ipv4, policy):
        return None
    kind = _kind(ipv4)
    if kind is None:
        return None
    # Python before 3.13 writes ::ffff:127.0.0.1 as ::ffff:7f00:1.
    shown = f"::ffff:{ipv4}" if form == _MAPPED else address
    return f"{shown} is {form} address of {ipv4}, a {kind} address"


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
