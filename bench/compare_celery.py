"""The Celery app of ``bench/compare.py``: one task per delivery, as Django webhook
packages do it.

The pattern follows django-webhook (``django_webhook/tasks.py``): the producer calls
``deliver.delay(url, payload)`` once per webhook and event; the task signs the JSON body
with HMAC-SHA256 over ``timestamp:body``, posts it with ``requests`` and raises on a
non-2xx answer; Celery retries with exponential backoff. Retry settings are
django-webhook's: ``max_retries=5``, ``retry_backoff=True`` (1 s, 2 s, 4 s, 8 s, 16 s),
``retry_backoff_max=3600``, ``retry_jitter=False``; the retry is ``autoretry_for`` on
``requests``' exceptions (django-webhook calls ``self.retry`` itself, whose delay is its
``default_retry_delay`` of 60 s, and reads ``ex.response.status_code``, which fails on a
refused connection: we take the variant that retries connection errors too).

One difference in Celery's favour: each worker process keeps one ``requests.Session``
(keep-alive), where django-webhook opens a new ``Session`` per task, that is a new TCP
connection per event.

The broker is ``$ALMHOOKD_BENCH_BROKER`` (a Redis URL); no result backend, as
django-webhook. Run by ``bench/compare.py`` as
``celery -A bench.compare_celery worker --pool prefork --concurrency N``.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import time
from typing import Any, Final

import requests
from celery import Celery
from requests.exceptions import RequestException

BROKER_ENV: Final = "ALMHOOKD_BENCH_BROKER"
SECRET: Final = b"bench-signing-secret-0123456789"
#: requests' (connect, read) timeouts: the platform's 10 s and 5 s, as almhookd's.
TIMEOUT: Final = (10.0, 5.0)

app = Celery("almhookd_bench", broker=os.environ.get(BROKER_ENV, "redis://127.0.0.1:6379/0"))
app.conf.update(
    broker_connection_retry_on_startup=True,
    task_serializer="json",
    accept_content=["json"],
)

#: One per worker process: created at import, first used after the fork.
_session = requests.Session()


@app.task(  # type: ignore[untyped-decorator]
    autoretry_for=(RequestException,),
    max_retries=5,
    retry_backoff=True,
    retry_backoff_max=60 * 60,
    retry_jitter=False,
)
def deliver(url: str, payload: dict[str, Any]) -> None:
    """POST one ALM payload to one webhook; any non-2xx answer raises (and retries)."""
    body = json.dumps(payload).encode()
    timestamp = int(time.time())
    signature = hmac.new(SECRET, f"{timestamp}:".encode() + body, hashlib.sha256).hexdigest()
    response = _session.post(
        url,
        data=body,
        headers={
            "Content-Type": "application/json",
            "Webhook-Timestamp": str(timestamp),
            "Webhook-Signature": signature,
        },
        timeout=TIMEOUT,
    )
    response.raise_for_status()
