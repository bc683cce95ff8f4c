"""The HTTP side of a delivery: one signed ``POST`` and what came of it.

One aiohttp session for all webhooks, keep-alive connections reused, redirects never
followed, the target guard applied at connect time on every resolved address.
"""

from __future__ import annotations

import base64
import time
from collections.abc import Mapping
from typing import Final

import aiohttp

from almhookd import __version__
from almhookd.backoff import parse_retry_after
from almhookd.config import DeliveryConfig
from almhookd.errors import AlmhookdError
from almhookd.policy import Outcome
from almhookd.protocols import Clock
from almhookd.signing import signature_header
from almhookd.targets import (
    GuardedResolver,
    TargetPolicy,
    TargetRefused,
    check_literal,
    check_url,
)
from almhookd.webhooks import Webhook

#: Bytes of a receiver's answer read at most; the rest is dropped with the connection,
#: so a never-ending body cannot hold a worker.
MAX_RESPONSE_READ: Final = 64 * 1024
RESPONSE_EXCERPT: Final = 4096
USER_AGENT: Final = f"almhookd/{__version__}"


class Sender:
    """Sends request bodies to webhooks. ``start()`` before use, ``close()`` after."""

    def __init__(self, config: DeliveryConfig, *, clock: Clock) -> None:
        self._config = config
        self._clock = clock
        self._policy = TargetPolicy.from_config(config)
        self._session: aiohttp.ClientSession | None = None
        self._resolver: GuardedResolver | None = None
        self._timeout = _timeout(config)

    async def start(self) -> None:
        resolver = GuardedResolver(self._policy)
        connector = aiohttp.TCPConnector(
            resolver=resolver, limit=0, keepalive_timeout=30, ttl_dns_cache=10
        )
        self._resolver = resolver
        self._session = aiohttp.ClientSession(
            connector=connector,
            headers={"User-Agent": USER_AGENT},
            auto_decompress=True,
            raise_for_status=False,
        )

    def reconfigure(self, config: DeliveryConfig) -> None:
        """New timeouts and target rules apply to the next request (a reload)."""
        self._config = config
        self._policy = TargetPolicy.from_config(config)
        self._timeout = _timeout(config)
        if self._resolver is not None:
            self._resolver.policy = self._policy

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    def headers(
        self, webhook: Webhook, *, message_id: str, body: bytes, timestamp: int
    ) -> dict[str, str]:
        headers = {
            "Content-Type": "application/json",
            "webhook-id": message_id,
            "webhook-timestamp": str(timestamp),
        }
        if webhook.auth_type == "signature":
            in_force = webhook.secrets_in_force(timestamp * 1000)
            if in_force:
                headers["webhook-signature"] = signature_header(
                    in_force, message_id=message_id, timestamp=timestamp, body=body
                )
        elif webhook.auth_type == "basic" and webhook.auth_password is not None:
            # RFC 7617 with charset UTF-8, so non-ASCII passwords survive.
            credentials = f"{webhook.auth_username or ''}:{webhook.auth_password.reveal()}"
            headers["Authorization"] = "Basic " + base64.b64encode(credentials.encode()).decode()
        return headers

    async def send(
        self,
        webhook: Webhook,
        *,
        message_id: str,
        body: bytes,
        extra_headers: Mapping[str, str] | None = None,
    ) -> Outcome:
        """POST ``body``; any failure becomes an unsuccessful :class:`Outcome`."""
        if self._session is None:
            raise AlmhookdError("the sender is not started")
        timestamp = int(self._clock())
        started = time.monotonic()
        try:
            host, _port, literal = check_url(webhook.target_url)
            if literal is not None:  # aiohttp skips the resolver for IP literals
                check_literal(host, literal, self._policy)
            headers = self.headers(webhook, message_id=message_id, body=body, timestamp=timestamp)
            headers.update(extra_headers or {})
            async with self._session.post(
                webhook.target_url,
                data=body,
                headers=headers,
                allow_redirects=False,
                timeout=self._timeout,
            ) as response:
                raw = await response.content.read(MAX_RESPONSE_READ)
                excerpt = raw[:RESPONSE_EXCERPT].decode("utf-8", errors="replace")
                status = response.status
                retry_after = parse_retry_after(
                    response.headers.get("Retry-After"), now=self._clock()
                )
        except TargetRefused as error:
            return self._failed(error.message, started)
        except TimeoutError:
            return self._failed(
                f"timed out (connect {self._config.connect_timeout:g}s, "
                f"read {self._config.read_timeout:g}s)",
                started,
            )
        except aiohttp.ClientConnectorError as error:
            return self._failed(f"cannot connect: {error.os_error.strerror or error}", started)
        except aiohttp.ServerDisconnectedError:
            return self._failed("the receiver closed the connection without an answer", started)
        except aiohttp.ClientError as error:
            return self._failed(f"{type(error).__name__}: {error}", started)
        except OSError as error:
            return self._failed(f"network error: {error.strerror or error}", started)
        duration_ms = _elapsed_ms(started)
        ok = 200 <= status < 300
        error_text = None
        if 300 <= status < 400:
            error_text = f"HTTP {status}: redirects are not followed"
        elif not ok:
            error_text = f"HTTP {status}"
        return Outcome(
            ok=ok,
            status=status,
            error=error_text,
            duration_ms=duration_ms,
            response_body=excerpt,
            retry_after=retry_after if status in (429, 503) else None,
        )

    @staticmethod
    def _failed(error: str, started: float) -> Outcome:
        return Outcome(ok=False, error=error, duration_ms=_elapsed_ms(started))


def _timeout(config: DeliveryConfig) -> aiohttp.ClientTimeout:
    # The whole request must finish within connect + read: a receiver that drips its
    # answer byte by byte cannot hold a worker for longer.
    return aiohttp.ClientTimeout(
        total=config.connect_timeout + config.read_timeout,
        sock_connect=config.connect_timeout,
        sock_read=config.read_timeout,
    )


def _elapsed_ms(started: float) -> int:
    return round((time.monotonic() - started) * 1000)
