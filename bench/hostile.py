"""A healthy webhook's latency while the same event loop reads a hostile receiver.

The delivery client (``HttpClient``) runs under uvloop, as in the daemon, and posts one
request at a time to a healthy receiver (a raw asyncio server answering 202 at once) for
``--seconds``, and reports the p50/p99/max round trip. Then again while a second task on
the same loop posts, one request after another, to a hostile receiver whose answer never
ends (each case below). The healthy and the hostile receivers run in two child
processes, so the figures are the client's (the machine has 2 cores: the hostile
receiver's process competes with the client for them, as it would on a shared host).
Every request of the hostile task is expected to fail; the report gives how many failed
and how, and the healthy figures as ratios of the baseline.

Cases: endless ``100 Continue`` answers, an endless header block, endless trailers, and
an endless chunked body (that one is cut at the client's body cap, and counts as
answered).

Run from the checkout: ``.venv/bin/python -m bench.hostile [--seconds N]``.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import multiprocessing
import statistics
import sys
import time
from collections.abc import Awaitable, Callable, Sequence
from multiprocessing.connection import Connection

import uvloop

from almhookd.delivery.httpclient import HttpClient
from almhookd.delivery.resolver import resolve

OK = b"HTTP/1.1 202 Accepted\r\nContent-Length: 0\r\n\r\n"
ENDLESS: dict[str, tuple[bytes, bytes]] = {
    "endless 100 Continue": (b"", b"HTTP/1.1 100 Continue\r\n\r\n" * 64),
    "endless headers": (b"HTTP/1.1 200 OK\r\n", b"X-More: " + b"h" * 90 + b"\r\n"),
    "endless trailers": (
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nok\r\n0\r\n",
        b"X-Trailer: " + b"t" * 90 + b"\r\n",
    ),
    "endless body": (
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n",
        b"1000\r\n" + b"x" * 4096 + b"\r\n",
    ),
}

Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


async def read_request(reader: asyncio.StreamReader) -> bool:
    try:
        head = await reader.readuntil(b"\r\n\r\n")
    except (asyncio.IncompleteReadError, ConnectionError):
        return False
    for line in head.split(b"\r\n"):
        if line.lower().startswith(b"content-length:"):
            await reader.readexactly(int(line.split(b":", 1)[1]))
    return True


async def healthy(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while await read_request(reader):
            writer.write(OK)
    finally:
        writer.close()


def hostile(start: bytes, repeated: bytes) -> Handler:
    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            if await read_request(reader):
                writer.write(start)
                while True:  # until the client hangs up
                    writer.write(repeated)
                    await writer.drain()
        except ConnectionError:
            pass
        finally:
            writer.transport.abort()

    return answer


async def serve(handlers: list[Handler], urls: Connection) -> None:
    servers = [await asyncio.start_server(handler, "127.0.0.1", 0) for handler in handlers]
    urls.send([f"http://127.0.0.1:{s.sockets[0].getsockname()[1]}/hook" for s in servers])
    await asyncio.Event().wait()  # until terminated


def receivers(kind: str, urls: Connection) -> None:
    """The healthy receiver, or the hostile ones, in a process of their own: a hostile
    receiver writing as fast as it can would otherwise slow the healthy one down."""
    handlers: list[Handler]
    if kind == "healthy":
        handlers = [healthy]
    else:
        handlers = [hostile(start, repeated) for start, repeated in ENDLESS.values()]
    uvloop.run(serve(handlers, urls))


async def post(client: HttpClient, url: str) -> None:
    await client.post(
        url, headers={}, body=b'{"events":[]}', connect_timeout=5, read_timeout=5, max_body=65536
    )


async def healthy_latencies(url: str, seconds: float) -> list[float]:
    client = HttpClient(guard=lambda _h, _a: None, resolve=resolve, user_agent="bench")
    latencies = []
    end = time.perf_counter() + seconds
    while (started := time.perf_counter()) < end:
        await post(client, url)
        latencies.append(time.perf_counter() - started)
    client.close_idle()
    return latencies


async def keep_hostile_busy(url: str, outcomes: collections.Counter[str]) -> None:
    client = HttpClient(guard=lambda _h, _a: None, resolve=resolve, user_agent="bench")
    while True:
        try:
            await post(client, url)
            outcomes["answered"] += 1
        except Exception as error:
            outcomes[f"{type(error).__name__}: {str(error)[:60]}"] += 1


def summary(latencies: list[float]) -> tuple[float, float, float, int]:
    ordered = sorted(latencies)
    p99 = ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))]
    return statistics.median(ordered) * 1e6, p99 * 1e6, ordered[-1] * 1e6, len(ordered)


async def main(seconds: float, healthy_url: str, hostile_urls: list[str]) -> None:
    base = summary(await healthy_latencies(healthy_url, seconds))
    print(
        "| receiver beside the healthy one | requests | p50 µs | p99 µs | max µs |"
        " p99 / baseline | hostile attempts |"
    )
    print("|---|---|---|---|---|---|---|")
    print(
        f"| none (baseline) | {base[3]:,} | {base[0]:.0f} | {base[1]:.0f} | "
        f"{base[2]:.0f} | 1.00 | - |"
    )
    for name, url in zip(ENDLESS, hostile_urls, strict=True):
        outcomes: collections.Counter[str] = collections.Counter()
        busy = asyncio.create_task(keep_hostile_busy(url, outcomes))
        figures = summary(await healthy_latencies(healthy_url, seconds))
        busy.cancel()
        await asyncio.gather(busy, return_exceptions=True)
        attempts = "; ".join(f"{count:,} x {kind}" for kind, count in outcomes.most_common(2))
        print(
            f"| {name} | {figures[3]:,} | {figures[0]:.0f} | {figures[1]:.0f} | "
            f"{figures[2]:.0f} | {figures[1] / base[1]:.2f} | {attempts} |"
        )


def cli(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--seconds", type=float, default=5.0, help="per case (default 5)")
    args = parser.parse_args(argv)
    context = multiprocessing.get_context("spawn")
    processes, urls = [], []
    for kind in ("healthy", "hostile"):
        parent, child = context.Pipe()
        process = context.Process(target=receivers, args=(kind, child), daemon=True)
        process.start()
        processes.append(process)
        urls.append(parent.recv())
    try:
        uvloop.run(main(args.seconds, urls[0][0], urls[1]))
    finally:
        for process in processes:
            process.terminate()
            process.join()
    return 0


if __name__ == "__main__":
    sys.exit(cli())
