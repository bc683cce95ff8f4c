"""The operator's routes: status, metrics, the batch flush, health."""

from __future__ import annotations

import contextlib
from typing import Any

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from almhookd import __version__
from almhookd.api.common import (
    CLOCK,
    DISPATCHER,
    METRICS,
    SCHEDULER,
    STATE,
    STORE,
    ApiError,
    epoch_ms,
    storage_works,
    webhook_health,
)
from almhookd.errors import StorageError


async def status_document(app: web.Application) -> dict[str, Any]:
    """Per webhook: state, backlog, oldest pending age, failing since, next retry; and
    the next batch flush. What ``/v1/status`` answers and the console's status page shows."""
    store, now = app[STORE], app[CLOCK]()
    scheduler = app.get(SCHEDULER)
    webhooks = []
    for webhook in await store.list_webhooks():
        webhooks.append(
            {
                "id": webhook.id,
                "name": webhook.name,
                "status": webhook.status,
                "disabledReason": webhook.disabled_reason,
                **await webhook_health(store, webhook, now),
            }
        )
    return {
        "webhooks": webhooks,
        "nextFlushAt": epoch_ms(scheduler.next_flush_at) if scheduler else None,
    }


async def status(request: web.Request) -> web.Response:
    return web.json_response(await status_document(request.app))


async def metrics_endpoint(request: web.Request) -> web.Response:
    """Prometheus text format; state gauges are read from the store now."""
    store, metrics, now = request.app[STORE], request.app[METRICS], request.app[CLOCK]()
    by_status = dict.fromkeys(("active", "inactive", "disabled"), 0)
    metrics.backlog.clear()
    metrics.oldest_pending_age.clear()
    for webhook in await store.list_webhooks():
        by_status[webhook.status] += 1
        health = await webhook_health(store, webhook, now)
        metrics.backlog.labels(webhook.id, "realtime").set(health["backlog"]["realtime"])
        metrics.backlog.labels(webhook.id, "batch").set(health["backlog"]["batch"])
        metrics.oldest_pending_age.labels(webhook.id).set(
            (health["oldestPendingAgeMs"] or 0) / 1000
        )
    for name, count in by_status.items():
        metrics.webhooks.labels(name).set(count)
    return web.Response(
        body=generate_latest(metrics.registry), headers={"Content-Type": CONTENT_TYPE_LATEST}
    )


async def batch_flush(request: web.Request) -> web.Response:
    scheduler = request.app.get(SCHEDULER)
    if scheduler is None:
        raise ApiError(503, "unavailable", "the batch scheduler is not running")
    released = await scheduler.flush()
    return web.json_response(
        {
            "released": sum(released.values()),
            "webhooks": released,
            "nextFlushAt": epoch_ms(scheduler.next_flush_at),
        },
        status=202,
    )


async def healthz(request: web.Request) -> web.Response:
    """200 when the database reads and takes writes; else 503 saying what is wrong,
    including a storage failure ingest met since (a full disk) until ingest works again,
    and a delivery worker that died and is not running again yet."""
    store, state = request.app[STORE], request.app[STATE]
    try:
        await store.check()
    except StorageError as error:
        return web.json_response(
            {"status": "unavailable", "error": error.message, "version": __version__}, status=503
        )
    fault = state.storage_fault
    if fault is not None and fault.code == "storage_full":
        # The empty write probe needs no room: only a write that does tells that space
        # came back, and a producer waiting for a healthy /healthz waits for this.
        with contextlib.suppress(StorageError):
            await store.probe_space()
            storage_works(request.app)
            fault = None
    if fault is not None and fault.code == "storage_unavailable":
        storage_works(request.app)  # the probe wrote: whatever blocked storage is gone
    elif fault is not None:
        return web.json_response(
            {
                "status": "unavailable",
                "code": fault.code,
                "error": fault.message,
                "since": fault.since_ms,
                "version": __version__,
            },
            status=503,
        )
    dispatcher = request.app.get(DISPATCHER)
    dead = dispatcher.dead_workers() if dispatcher is not None else []
    if dead:
        # Between a worker's death and its restart by the dispatcher: those webhooks
        # get nothing delivered meanwhile.
        return web.json_response(
            {
                "status": "unavailable",
                "code": "worker_stopped",
                "error": "a delivery worker stopped; the dispatcher restarts it",
                "webhooks": dead,
                "version": __version__,
            },
            status=503,
        )
    status = "draining" if state.draining else "ok"
    return web.json_response(
        {"status": status, "version": __version__, "schemaVersion": store.schema_version},
        status=503 if request.app[STATE].draining else 200,
    )
