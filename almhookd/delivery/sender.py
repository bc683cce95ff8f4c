"""The HTTP side of a delivery: one signed ``POST`` and what came of it.

One :class:`~almhookd.delivery.httpclient.HttpClient` for all webhooks: keep-alive connections
reused, redirects never followed, the target guard applied at connect time on every
resolved address.
"""

from __future__ import annotations

import base64
import ssl
import time
from collections.abc import Mapping, Sequence
from typing import Final

from almhookd import __version__
from almhookd.config import DeliveryConfig
from almhookd.delivery import resolver
from almhookd.delivery.httpclient import (
    BadResponse,
    ConnectFailed,
    Disconnected,
    HttpClient,
    HttpError,
)
from almhookd.domain.backoff import parse_retry_after
from almhookd.domain.policy import Outcome
from almhookd.domain.signing import InvalidSecret, signature_header
from almhookd.domain.targets import TargetPolicy, TargetRefused, check_addresses, check_url
from almhookd.domain.webhooks import Webhook
from almhookd.errors import AlmhookdError
from almhookd.protocols import Clock

#: Bytes of a receiver's answer read at most; the rest is dropped with the connection,
#: so a never-ending body cannot hold a worker.
MAX_RESPONSE_READ: Final = 64 * 1024
RESPONSE_EXCERPT: Final = 4096
USER_AGENT: Final = f"almhookd/{__version__}"


class Sender:
    """Sends request bodies to webhooks. ``start()`` before use, ``close()`` after."""

    def __init__(
        self, config: DeliveryConfig, *, clock: Clock, ssl_context: ssl.SSLContext | None = None
    ) -> None:
        self._config = config
        self._clock = clock
        self._policy = TargetPolicy.from_config(config)
        self._ssl_context = ssl_context
        self._client: HttpClient | None = None

    async def start(self) -> None:
        self._client = HttpClient(
            guard=self._guard,
            resolve=self._resolve,
            ssl_context=self._ssl_context,
            user_agent=USER_AGENT,
        )

    def _guard(self, host: str, addresses: Sequence[str]) -> None:
        check_addresses(host, addresses, self._policy)

    @staticmethod
    async def _resolve(host: str, port: int) -> list[tuple[int, str]]:
        # Looked up at each call, so a test playing DNS replaces resolver.resolve once.
        return await resolver.resolve(host, port)

    def reconfigure(self, config: DeliveryConfig) -> None:
        """New timeouts and target rules apply to the next request (a reload)."""
        self._config = config
        self._policy = TargetPolicy.from_config(config)
        if self._client is not None:
            self._client.close_idle()  # reconnect, so the new rules see every address

    async def close(self) -> None:
        if self._client is not None:
            self._client.close_idle()
            self._client = None

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
        client = self._client
        if client is None:
            raise AlmhookdError("the sender is not started")
        timestamp = int(self._clock())
        started = time.monotonic()
        config = self._config
        try:
            check_url(webhook.target_url)
            headers = self.headers(webhook, message_id=message_id, body=body, timestamp=timestamp)
            headers.update(extra_headers or {})
            response = await client.post(
                webhook.target_url,
                headers=headers,
                body=body,
                connect_timeout=config.connect_timeout,
                read_timeout=config.read_timeout,
                max_body=MAX_RESPONSE_READ,
            )
        except TargetRefused as error:
            return self._failed(error.message, started)
        except InvalidSecret:
            return self._failed("the stored signing secret is unusable: rotate it", started)
        except TimeoutError:
            # The whole request must finish within connect + read: a receiver that drips
            # its answer byte by byte cannot hold a worker for longer.
            return self._failed(
                f"timed out (connect {config.connect_timeout:g}s, read {config.read_timeout:g}s)",
                started,
            )
        except Disconnected:
            return self._failed("the receiver closed the connection without an answer", started)
        except (ConnectFailed, BadResponse) as error:
            return self._failed(error.message, started)
        except HttpError as error:
            return self._failed(f"cannot send: {error.message}", started)
        except OSError as error:
            return self._failed(f"network error: {error.strerror or error}", started)
        status = response.status
        excerpt = response.decoded_body(RESPONSE_EXCERPT).decode("utf-8", errors="replace")
        retry_after = (
            parse_retry_after(response.headers.get("retry-after"), now=self._clock())
            if status in (429, 503)
            else None
        )
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
            retry_after=retry_after,
        )

    @staticmethod
    def _failed(error: str, started: float) -> Outcome:
        return Outcome(ok=False, error=error, duration_ms=_elapsed_ms(started))


def _elapsed_ms(started: float) -> int:
    return round((time.monotonic() - started) * 1000)
