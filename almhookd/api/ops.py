"""The operator's routes: status, metrics, the batch flush, health."""

from __future__ import annotations

import contextlib
from typing import Any

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from almhookd import __version__
from almhookd.api.common import (
    CLOCK,
    CLUSTER,
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
from almhookd.delivery.cluster import Cluster
from almhookd.domain.ownership import leader_of
from almhookd.errors import StorageError


async def status_document(app: web.Application) -> dict[str, Any]:
    """Per webhook: state, backlog, oldest pending age, failing since, next retry; and
    the next batch flush. What ``/v1/status`` answers and the console's status page shows."""
    store, now = app[STORE], app[CLOCK]()
    scheduler = app.get(SCHEDULER)
    cluster = app.get(CLUSTER)
    view = await cluster_document(cluster) if cluster is not None else None
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
        if view is not None:
            webhooks[-1]["owner"] = view["owners"].get(webhook.id)
    document: dict[str, Any] = {
        "webhooks": webhooks,
        "nextFlushAt": epoch_ms(scheduler.next_flush_at) if scheduler else None,
    }
    if view is not None:
        document["cluster"] = view
    return document


async def cluster_document(cluster: Cluster) -> dict[str, Any]:
    """The processes sharing the database and who delivers to which webhook, as the
    database says (the server's clock), for ``/v1/status``."""
    view = await cluster.view()
    owners = {webhook_id: owner for webhook_id, (owner, _) in view.owners.items()}
    return {
        "process": cluster.process_id,
        "leader": leader_of([process.id for process in view.processes]),
        "processes": [
            {
                "id": process.id,
                "host": process.host,
                "pid": process.pid,
                "startedAt": process.started_at_ms,
                "heartbeatAgeMs": max(0, view.now_ms - process.heartbeat_at_ms),
                "webhooks": sorted(
                    w for w, (owner, _) in view.owners.items() if owner == process.id
                ),
            }
            for process in view.processes
        ],
        "owners": owners,
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
    document: dict[str, Any] = {
        "status": status,
        "version": __version__,
        "schemaVersion": store.schema_version,
    }
    cluster = request.app.get(CLUSTER)
    if cluster is not None:
        document["cluster"] = {
            "process": cluster.process_id,
            "processesAlive": len(cluster.live),
            "webhooksHeld": sorted(cluster.holds),
            "leader": cluster.leads(),
        }
    return web.json_response(document, status=503 if request.app[STATE].draining else 200)
