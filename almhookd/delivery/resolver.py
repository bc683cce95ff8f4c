"""The name service: resolving a target's host, and the creation-time check of a target
URL against the guard (:mod:`almhookd.domain.targets`) with every address it resolves to.
"""

from __future__ import annotations

import asyncio
import socket

from almhookd.domain.targets import TargetPolicy, TargetRefused, check_addresses, check_url


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
    if literal is not None:  # named as written, once: "::ffff:127.0.0.1", not its str()
        check_addresses(host, [host], policy)
        return
    try:
        addresses = await resolve(host, port)
    except OSError as error:
        raise TargetRefused(f"target host {host} does not resolve: {error}") from None
    check_addresses(host, [address for _family, address in addresses], policy)
