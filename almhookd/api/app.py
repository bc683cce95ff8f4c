"""The HTTP API as one aiohttp application: ``create_app()`` wires the routes."""

from __future__ import annotations

from aiohttp import web

from almhookd.api import admin
from almhookd.api.catalogue import catalogue
from almhookd.api.common import (
    CLOCK,
    CLUSTER,
    DISPATCHER,
    METRICS,
    SCHEDULER,
    SENDER,
    STATE,
    STORE,
    ServerState,
    middleware,
)
from almhookd.api.ingest import get_event, ingest
from almhookd.api.openapi.route import openapi
from almhookd.api.ops import batch_flush, healthz, metrics_endpoint, status
from almhookd.auth import TokenChecker
from almhookd.config import Config
from almhookd.delivery.cluster import Cluster
from almhookd.delivery.dispatcher import Dispatcher
from almhookd.delivery.flusher import BatchScheduler
from almhookd.delivery.sender import Sender
from almhookd.metrics import Metrics
from almhookd.protocols import Clock
from almhookd.storage.interface import Storage


def create_app(
    *,
    store: Storage,
    config: Config,
    clock: Clock,
    tokens: TokenChecker,
    state: ServerState | None = None,
    scheduler: BatchScheduler | None = None,
    dispatcher: Dispatcher | None = None,
    sender: Sender | None = None,
    metrics: Metrics | None = None,
    cluster: Cluster | None = None,
) -> web.Application:
    app = web.Application(
        middlewares=[middleware],
        client_max_size=config.server.max_body_bytes,
    )
    app[STORE] = store
    app[CLOCK] = clock
    app[STATE] = state or ServerState(config=config, tokens=tokens)
    app[METRICS] = metrics or Metrics()
    if scheduler is not None:
        app[SCHEDULER] = scheduler
    if cluster is not None:
        app[CLUSTER] = cluster
    if dispatcher is not None and sender is not None:
        app[DISPATCHER] = dispatcher
        app[SENDER] = sender
        admin.add_routes(app)
    app.router.add_post("/v1/events", ingest, name="ingest")
    app.router.add_get("/v1/events/{event_id}", get_event, name="get_event")
    app.router.add_get("/v1/catalogue", catalogue, name="catalogue")
    app.router.add_get("/v1/status", status, name="status")
    app.router.add_get("/metrics", metrics_endpoint, name="metrics")
    app.router.add_post("/v1/batch/flush", batch_flush, name="batch_flush")
    app.router.add_get("/healthz", healthz, name="healthz")
    app.router.add_get("/v1/openapi.json", openapi, name="openapi")
    return app
