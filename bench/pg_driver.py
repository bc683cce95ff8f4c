"""asyncpg against psycopg 3 (binary, async) on the same throwaway PostgreSQL cluster:
the round trips almhookd's PostgreSQL backend makes most (issue 23's driver choice).

Run: ``.venv/bin/python -m bench.pg_driver`` (starts and stops its own cluster with the
machine's PostgreSQL server programs; about a minute). Each figure is the median of 3.
"""

from __future__ import annotations

import statistics
import sys
import time
from collections.abc import Awaitable, Callable
from typing import Any

import asyncpg
import psycopg
import uvloop

from tests.support.postgres import running_cluster

SCHEMA = """
CREATE TABLE IF NOT EXISTS events (
    seq BIGSERIAL PRIMARY KEY, event_id TEXT NOT NULL, name TEXT NOT NULL, body TEXT NOT NULL
);
TRUNCATE events;
"""
BODY = '{"eventName":"COURSE_ENROLLMENT","data":{"userId":4279332,"loId":"course:7374992"}}'
ROUNDS = 3


async def _asyncpg(dsn: str) -> dict[str, float]:
    connection = await asyncpg.connect(dsn)
    await connection.execute(SCHEMA)
    results = {}

    async def single(n: int) -> None:
        for i in range(n):
            async with connection.transaction():
                await connection.execute(
                    "INSERT INTO events (event_id, name, body) VALUES ($1, $2, $3)",
                    f"a-{i}",
                    "COURSE_ENROLLMENT",
                    BODY,
                )

    async def batch(n: int) -> None:
        rows = [(f"b-{i}", "COURSE_ENROLLMENT", BODY) for i in range(500)]
        for _ in range(n):
            async with connection.transaction():
                await connection.execute(
                    "INSERT INTO events (event_id, name, body)"
                    " SELECT * FROM unnest($1::text[], $2::text[], $3::text[])",
                    [r[0] for r in rows],
                    [r[1] for r in rows],
                    [r[2] for r in rows],
                )

    async def select(n: int) -> None:
        for _ in range(n):
            await connection.fetch("SELECT seq, event_id, body FROM events ORDER BY seq LIMIT 50")

    results["single-row insert transactions/s"] = await _rate(single, 2000)
    results["500-row inserts (unnest), rows/s"] = 500 * await _rate(batch, 40)
    results["50-row selects/s"] = await _rate(select, 2000)
    await connection.close()
    return results


async def _psycopg(dsn: str) -> dict[str, float]:
    connection = await psycopg.AsyncConnection.connect(dsn, autocommit=True)
    await connection.execute(SCHEMA)
    results = {}

    async def single(n: int) -> None:
        for i in range(n):
            async with connection.transaction():
                await connection.execute(
                    "INSERT INTO events (event_id, name, body) VALUES (%s, %s, %s)",
                    (f"a-{i}", "COURSE_ENROLLMENT", BODY),
                    prepare=True,
                )

    async def batch(n: int) -> None:
        rows = [(f"b-{i}", "COURSE_ENROLLMENT", BODY) for i in range(500)]
        for _ in range(n):
            async with connection.transaction():
                await connection.execute(
                    "INSERT INTO events (event_id, name, body)"
                    " SELECT * FROM unnest(%s::text[], %s::text[], %s::text[])",
                    ([r[0] for r in rows], [r[1] for r in rows], [r[2] for r in rows]),
                    prepare=True,
                )

    async def select(n: int) -> None:
        for _ in range(n):
            cursor = await connection.execute(
                "SELECT seq, event_id, body FROM events ORDER BY seq LIMIT 50", prepare=True
            )
            await cursor.fetchall()

    results["single-row insert transactions/s"] = await _rate(single, 2000)
    results["500-row inserts (unnest), rows/s"] = 500 * await _rate(batch, 40)
    results["50-row selects/s"] = await _rate(select, 2000)
    await connection.close()
    return results


async def _rate(work: Callable[[int], Awaitable[None]], n: int) -> float:
    await work(max(1, n // 10))  # warm-up: prepared statements, caches
    started = time.perf_counter()
    await work(n)
    return n / (time.perf_counter() - started)


def main() -> int:
    figures: dict[str, dict[str, list[float]]] = {}
    with running_cluster() as cluster:
        dsn = cluster.new_database("bench")
        for _ in range(ROUNDS):
            for name, run in (("asyncpg", _asyncpg), ("psycopg", _psycopg)):
                measured: dict[str, Any] = uvloop.run(run(dsn))
                for key, value in measured.items():
                    figures.setdefault(key, {}).setdefault(name, []).append(value)
    print(f"asyncpg {asyncpg.__version__}, psycopg {psycopg.__version__} ({psycopg.pq.__impl__})")
    print("| Round trip | asyncpg | psycopg | asyncpg / psycopg |")
    print("|---|--:|--:|--:|")
    for key, by_driver in figures.items():
        a, p = statistics.median(by_driver["asyncpg"]), statistics.median(by_driver["psycopg"])
        print(f"| {key} | {a:,.0f} | {p:,.0f} | {a / p:.2f}x |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
