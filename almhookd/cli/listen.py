"""``almhookd listen``: a receiver for trying things out and for support cases.

It verifies each request, prints it and its events readably (or as JSON lines), marks
bad signatures, duplicates, stale and superseded events and records it thinks are
missing an enrolment, and can answer with a chosen status or delay to rehearse
failures.

It answers as a real receiver must: 202 to a verified request, 401 to one whose
signature or Basic credentials fail (the verdict printed either way), unless ``--status``
forces an answer. Started with neither a secret nor Basic credentials it verifies
nothing, says so at start, and marks each request ``none unverified``.

``--background`` binds the port, then leaves a child process serving it and returns: a
script (the README's walkthrough) can send to the receiver on its next line, with no
wait and no race against the receiver's start.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, TextIO

import uvloop
from aiohttp import web

from almhookd.receiver import (
    COMPLETIONS,
    ENROLMENTS,
    PROGRESS,
    OrderingGuard,
    VerificationFailed,
    parse_payload,
    verify_basic,
    verify_signature,
)


@dataclass(frozen=True, kw_only=True, slots=True)
class ListenOptions:
    host: str = "127.0.0.1"
    port: int = 8000
    secrets: tuple[str, ...] = ()
    basic: tuple[str, str] | None = None
    #: The forced answer; None answers 202, or 401 when verification fails.
    status: int | None = None
    delay: float = 0.0
    json_lines: bool = False
    tolerance: float = 300.0
    #: Serve from a child process and return once the port is bound.
    background: bool = False


UNVERIFIED = "unverified"
#: Said at start when neither a secret nor Basic credentials were given.
NOTHING_VERIFIED = (
    "warning: no --secret and no --basic: nothing is verified; "
    "each request is shown as 'none unverified'"
)


def verifies(options: ListenOptions) -> bool:
    """Whether requests are checked at all (a secret or Basic credentials given)."""
    return bool(options.secrets) or options.basic is not None


class Listener:
    def __init__(self, options: ListenOptions, out: TextIO = sys.stdout) -> None:
        self.options = options
        self.out = out
        self.guard = OrderingGuard()
        self.enrolled: set[tuple[Any, Any]] = set()
        self.bodies_by_id: dict[str, bytes] = {}

    def _print(self, text: str) -> None:
        print(text, file=self.out, flush=True)

    async def handle(self, request: web.Request) -> web.Response:
        body = await request.read()
        headers = dict(request.headers)
        message_id = headers.get("webhook-id", "-")
        check = "none"
        failed = False
        try:
            if self.options.secrets:
                check = "signature"
                verify_signature(
                    self.options.secrets, request.headers, body, tolerance=self.options.tolerance
                )
            if self.options.basic is not None:
                check = "basic"
                verify_basic(
                    request.headers, username=self.options.basic[0], password=self.options.basic[1]
                )
            verdict = "ok" if self.verifies else UNVERIFIED
        except VerificationFailed as error:
            verdict = f"BAD ({error.message})"
            failed = True
        resent = message_id in self.bodies_by_id
        if resent and self.bodies_by_id[message_id] != body:
            verdict += "; this webhook-id came before with another body"
        self.bodies_by_id[message_id] = body
        refused = failed and self.options.status is None
        try:
            payload = parse_payload(body)
        except VerificationFailed as error:
            self._report_request(request, message_id, check, verdict, resent, error.message)
            status = self.options.status or (401 if refused else 400)
            return web.Response(status=status, text=error.message)
        self._report_request(
            request,
            message_id,
            check,
            verdict,
            resent,
            None,
            count=len(payload.events),
            test="almhookd-test" in headers,
        )
        for event in payload.events:
            decision = self.guard.decide(event)
            notes = []
            record = event.record
            if record is not None:
                if event.event_name in ENROLMENTS:
                    self.enrolled.add(record)
                elif (
                    event.event_name in COMPLETIONS or event.event_name == PROGRESS
                ) and record not in self.enrolled:
                    notes.append("no enrolment seen for this learner: missing?")
            self._report_event(
                event, decision.action.value, decision.reason, notes, message_id, verdict
            )
        if self.options.delay:
            await asyncio.sleep(self.options.delay)
        if self.options.status is not None:
            return web.Response(status=self.options.status, text="")
        return web.Response(status=401 if refused else 202, text="")

    @property
    def verifies(self) -> bool:
        return verifies(self.options)

    def _report_request(
        self,
        request: web.Request,
        message_id: str,
        check: str,
        verdict: str,
        resent: bool,
        error: str | None,
        count: int = 0,
        test: bool = False,
    ) -> None:
        if self.options.json_lines:
            if error:
                self._print(json.dumps({"request": message_id, "error": error}))
            return
        now = datetime.now().strftime("%H:%M:%S")
        line = (
            f"{now} {request.method} {request.path}  webhook-id {message_id}  "
            f"{check} {verdict}  {count} event(s)"
        )
        if resent:
            line += "  (sent again: same webhook-id)"
        if test:
            line += "  [test delivery]"
        self._print(line + (f"  error: {error}" if error else ""))

    def _report_event(
        self, event: Any, action: str, reason: str, notes: list[str], message_id: str, verdict: str
    ) -> None:
        if self.options.json_lines:
            self._print(
                json.dumps(
                    {
                        "webhookId": message_id,
                        "verification": verdict,
                        "eventId": event.event_id,
                        "eventName": event.event_name,
                        "timestamp": event.timestamp,
                        "action": action,
                        "reason": reason,
                        "notes": notes,
                        "data": event.data,
                    }
                )
            )
            return
        mark = action if action == "process" else action.upper()
        record = " ".join(
            f"{k}={event.data[k]}" for k in ("userId", "loId", "loInstanceId") if k in event.data
        )
        self._print(f"  {mark:<10} {event.event_name:<40} {event.event_id}  {record}")
        for note in [reason] * (action != "process") + notes:
            self._print(f"             ! {note}")


def bind(options: ListenOptions) -> socket.socket:
    """The listening socket, bound before anything is announced or forked."""
    family, kind, proto, _, address = socket.getaddrinfo(
        options.host, options.port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
    )[0]
    sock = socket.socket(family, kind, proto)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(address)
        sock.listen(128)
    except OSError:
        sock.close()
        raise
    sock.setblocking(False)
    return sock


def announce(options: ListenOptions, out: TextIO, *, pid: int | None = None) -> None:
    """The start banner: where it listens, how it answers, what it verifies."""
    url = f"http://{options.host}:{options.port}/"
    if options.json_lines:
        started: dict[str, object] = {"listening": url}
        if pid is not None:
            started["pid"] = pid
        if not verifies(options):
            started["warning"] = NOTHING_VERIFIED.removeprefix("warning: ")
        print(json.dumps(started), file=out, flush=True)
        return
    answer = (
        f"answering {options.status}"
        if options.status is not None
        else "answering 202, or 401 when verification fails"
        if verifies(options)
        else "answering 202"
    )
    delay = f" after {options.delay:g}s" if options.delay else ""
    where = f"; in the background, pid {pid}: stop it with kill {pid}" if pid is not None else ""
    print(f"listening on {url} ({answer}{delay}{where})", file=out, flush=True)
    if not verifies(options):
        print(NOTHING_VERIFIED, file=out, flush=True)


async def serve_listener(
    options: ListenOptions, stop: asyncio.Event, sock: socket.socket | None = None
) -> None:
    """Serve until ``stop`` is set; on ``sock`` when given (already announced), else on a
    socket of its own, announced here."""
    listener = Listener(options)
    app = web.Application(client_max_size=16 * 1024 * 1024)
    app.router.add_route("*", "/{tail:.*}", listener.handle)
    runner = web.AppRunner(app, access_log=None, handle_signals=False)
    await runner.setup()
    if sock is None:
        site: web.BaseSite = web.TCPSite(runner, options.host, options.port)
        await site.start()
        announce(options, listener.out)
    else:
        site = web.SockSite(runner, sock)
        await site.start()
    try:
        await stop.wait()
    finally:
        await runner.cleanup()


def run_listener(options: ListenOptions) -> int:
    sock: socket.socket | None = None
    try:
        if options.background:
            sock = bind(options)
    except OSError as error:
        return _cannot_listen(options, error)
    if sock is not None:
        # Forked before any event loop or thread exists; the parent returns only once
        # the port accepts connections, which it does from the moment of bind().
        pid = os.fork()
        if pid:
            sock.close()
            announce(options, sys.stdout, pid=pid)
            return 0
        _detach_stdin()

    async def main() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        # SIGHUP too, a terminal's hang-up: a clean stop rather than the default death.
        for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
            loop.add_signal_handler(signum, stop.set)
        await serve_listener(options, stop, sock)

    try:
        uvloop.run(main())
    except OSError as error:
        return _cannot_listen(options, error)
    return 0


def _cannot_listen(options: ListenOptions, error: OSError) -> int:
    print(
        f"almhookd listen: cannot listen on {options.host}:{options.port}: "
        f"{error.strerror or error}",
        file=sys.stderr,
    )
    return 1


def _detach_stdin() -> None:
    """The background receiver reads nothing: leave the terminal's input to the shell."""
    null = os.open(os.devnull, os.O_RDONLY)
    os.dup2(null, 0)
    os.close(null)


def parse_basic(text: str) -> tuple[str, str]:
    username, sep, password = text.partition(":")
    if not sep or not username:
        raise ValueError("expected USER:PASS")
    return username, password


def options_from(args: Any, secrets: Sequence[str]) -> ListenOptions:
    return ListenOptions(
        host=args.host,
        port=args.port,
        secrets=tuple(secrets),
        basic=parse_basic(args.basic) if args.basic else None,
        # ``--status`` forces the answer (``--status 202`` too); without it, a request
        # that passes its checks is answered 202 and one that fails them 401.
        status=args.status,
        delay=args.delay,
        json_lines=args.json,
        tolerance=args.tolerance,
        background=args.background,
    )
