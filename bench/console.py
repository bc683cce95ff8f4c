"""How fast the console's pages answer with a full account: 5 webhooks, 100,000 retained
deliveries.

Starts the real daemon (``python -m almhookd run``) on a fresh database, creates 5
webhooks subscribed to every event and pointed at a local receiver (a separate
process answering 202), ingests 20,000 events in 100-event envelopes (100,000
deliveries), waits until every delivery is acknowledged (they stay retained for 7 days:
the pages read them), then signs in through the form like a browser and times each
page: sequential GETs on one keep-alive connection, after a warm-up. The issue's target
is every page under 50 ms.

Usage: ``.venv/bin/python -m bench.console [--requests N] [--output FILE]``; Markdown on
stdout, progress on stderr.
"""

from __future__ import annotations

import argparse
import asyncio
import re
import socket
import statistics
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Final

import aiohttp

from bench.delivery import running_receiver
from bench.ingest import TOKEN, BenchError, machine_lines, running_daemon

WEBHOOKS: Final = 5
EVENTS: Final = 20_000
ENVELOPE: Final = 100
TARGET_MS: Final = 50.0
#: Every event of the catalogue a webhook subscribes to (the real-time ones ingested).
EVENT_NAME: Final = "COURSE_ENROLLMENT"


@dataclass(frozen=True, kw_only=True, slots=True)
class PageTiming:
    path: str
    status: int
    bytes: int
    p50_ms: float
    p99_ms: float
    max_ms: float


def envelope(start: int) -> dict[str, object]:
    return {
        "events": [
            {
                "eventId": f"bench-console-{start + index}",
                "eventName": EVENT_NAME,
                "timestamp": 1_764_000_000_000,
                "data": {
                    "userId": 4279332,
                    "loId": "course:7374992",
                    "loInstanceId": "course:7374992_10250977",
                    "loType": "course",
                    "enrollmentSource": "ADMIN_ENROLL",
                    "dateEnrolled": 1727414643,
                },
            }
            for index in range(ENVELOPE)
        ]
    }


async def prepare(url: str, receiver_port: int, *, delivered: bool) -> list[str]:
    """5 webhooks, 100,000 deliveries, all acknowledged (``delivered``) or all pending
    (the receiver down: the webhooks point at a closed port); the webhooks' ids."""
    headers = {"Authorization": f"Bearer {TOKEN}"}
    async with aiohttp.ClientSession(headers=headers) as session:
        ids = []
        for number in range(WEBHOOKS):
            async with session.post(
                url + "/v1/webhooks",
                json={
                    "name": f"LMS sync {number + 1}",
                    "targetUrl": f"http://127.0.0.1:{receiver_port}/hook/{number}"
                    if delivered
                    else f"http://127.0.0.1:{closed_port()}/hook/{number}",
                    "events": [EVENT_NAME, "COURSE_COMPLETED", "LEARNER_PROGRESS"],
                    "auth": {"type": "signature"},
                },
            ) as response:
                if response.status != 201:
                    raise BenchError(
                        f"creating a webhook: {response.status} {await response.text()}"
                    )
                ids.append((await response.json())["id"])
        semaphore = asyncio.Semaphore(4)

        async def send(start: int) -> None:
            async with semaphore, session.post(url + "/v1/events", json=envelope(start)) as answer:
                if answer.status != 202:
                    raise BenchError(f"ingest: {answer.status} {await answer.text()}")

        await asyncio.gather(*(send(start) for start in range(0, EVENTS, ENVELOPE)))
        if not delivered:
            return ids
        deadline = time.monotonic() + 600
        while True:
            async with session.get(url + "/v1/status") as response:
                status = await response.json()
            backlog = sum(
                w["backlog"]["realtime"] + w["backlog"]["batch"] for w in status["webhooks"]
            )
            if backlog == 0:
                return ids
            if time.monotonic() > deadline:
                raise BenchError(f"{backlog} deliveries still pending after 10 minutes")
            print(f"waiting for {backlog:,} deliveries", file=sys.stderr)
            await asyncio.sleep(1)


async def sign_in(session: aiohttp.ClientSession, url: str) -> None:
    async with session.get(url + "/signin") as response:
        page = await response.text()
    match = re.search(r'name="form_token" value="([^"]+)"', page)
    if match is None:
        raise BenchError("no sign-in form at /signin")
    async with session.post(
        url + "/signin",
        data={"form_token": match.group(1), "token": TOKEN, "next": "/"},
        allow_redirects=False,
    ) as response:
        if response.status != 303:
            raise BenchError(f"sign-in answered {response.status}")


async def time_pages(url: str, paths: Sequence[str], requests: int) -> list[PageTiming]:
    timings = []
    connector = aiohttp.TCPConnector(limit=1)
    async with aiohttp.ClientSession(
        connector=connector, cookie_jar=aiohttp.CookieJar(unsafe=True)
    ) as session:
        await sign_in(session, url)
        for path in paths:
            samples, status, size = [], 0, 0
            for index in range(requests + requests // 10):
                began = time.perf_counter()
                async with session.get(url + path, allow_redirects=False) as response:
                    body = await response.read()
                elapsed = time.perf_counter() - began
                status, size = response.status, len(body)
                if index >= requests // 10:  # the first tenth warms up
                    samples.append(elapsed * 1000)
            samples.sort()
            timings.append(
                PageTiming(
                    path=path,
                    status=status,
                    bytes=size,
                    p50_ms=statistics.median(samples),
                    p99_ms=samples[min(len(samples) - 1, int(len(samples) * 0.99))],
                    max_ms=samples[-1],
                )
            )
            print(f"{path}: p50 {timings[-1].p50_ms:.1f} ms", file=sys.stderr)
    return timings


def closed_port() -> int:
    """A loopback port nothing listens on: connections to it are refused at once."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def render(
    scenarios: Sequence[tuple[str, Sequence[PageTiming]]], requests: int, command: str
) -> str:
    lines = [
        "## almhookd console pages",
        "",
        *machine_lines(()),
        f"- Command: `{command}`",
        f"- Account: {WEBHOOKS} webhooks, {EVENTS:,} events ingested, "
        f"{EVENTS * WEBHOOKS:,} retained deliveries",
        f"- Each page: {requests} sequential GETs after {requests // 10} of warm-up, one "
        "keep-alive connection, signed in through the form",
        "",
        "| deliveries | page | status | bytes | p50 ms | p99 ms | max ms | under 50 ms at p99 |",
        "|---|---|--:|--:|--:|--:|--:|---|",
    ]
    for scenario, timings in scenarios:
        lines.extend(_rows(scenario, timings))
    return "\n".join(lines) + "\n"


def _rows(scenario: str, timings: Sequence[PageTiming]) -> list[str]:
    lines = []
    for timing in timings:
        if timing.status != 200:
            met = f"— (answered {timing.status})"
        else:
            met = "yes" if timing.p99_ms < TARGET_MS else "**no**"
        lines.append(
            f"| {scenario} | `{timing.path}` | {timing.status} | {timing.bytes:,} | "
            f"{timing.p50_ms:.1f} | {timing.p99_ms:.1f} | {timing.max_ms:.1f} | {met} |"
        )
    return lines


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--requests", type=int, default=200, help="GETs timed per page")
    parser.add_argument("--output", type=Path, metavar="FILE", help="also write the report")
    args = parser.parse_args(argv)
    command = "python -m bench.console " + " ".join(sys.argv[1:])
    scenarios = []
    for label, delivered in (("all acknowledged", True), ("all pending", False)):
        with (
            tempfile.TemporaryDirectory(prefix="almhookd-bench-console-") as directory,
            running_receiver() as receiver,
            running_daemon(Path(directory), "[delivery]\nallow_private_targets = true\n") as daemon,
        ):
            ids = asyncio.run(prepare(daemon.url, receiver.port, delivered=delivered))
            paths = ["/", "/status", "/webhooks/new", f"/webhooks/{ids[0]}"]
            paths += [f"/webhooks/{ids[0]}/{sub}" for sub in ("edit", "deliveries", "attempts")]
            paths.append(f"/webhooks/{ids[0]}/deliveries?state=expired")
            scenarios.append((label, asyncio.run(time_pages(daemon.url, paths, args.requests))))
    report = render(scenarios, args.requests, command)
    print(report)
    if args.output:
        args.output.write_text(report)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
