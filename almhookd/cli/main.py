"""The ``almhookd`` command line.

Exit codes: 0 ok, 1 failure, 2 usage, 78 (EX_CONFIG) bad configuration.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Final

import uvloop

from almhookd import __version__
from almhookd.auth import read_generated_token
from almhookd.cli import client as commands_module
from almhookd.cli.client import CommandFailed
from almhookd.cli.events import MARKDOWN_COMMAND, run_events
from almhookd.config import (
    Config,
    Secret,
    load_config,
    parse_duration,
    parse_listen,
    render_config,
)
from almhookd.errors import ConfigError

EXIT_OK: Final = 0
EXIT_FAILURE: Final = 1
EXIT_USAGE: Final = 2
EXIT_CONFIG: Final = 78


class _Parser(argparse.ArgumentParser):
    """argparse with one-line usage errors, ``almhookd: <message>`` as every error is;
    its sub-parsers are of this class too."""

    def error(self, message: str) -> Any:  # argparse's signature: NoReturn
        command = self.prog.removeprefix("almhookd").strip()
        where = f"{command}: " if command else ""
        self.exit(EXIT_USAGE, f"almhookd: {where}{message} (see: {self.prog} --help)\n")


def _parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="almhookd", description="Webhook dispatcher for learning-platform events."
    )
    parser.add_argument("--version", action="version", version=f"almhookd {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    run = commands.add_parser("run", help="run the daemon in the foreground")
    with_config(run)
    check = commands.add_parser(
        "check-config",
        help="validate the configuration and print the effective settings (secrets masked)",
    )
    with_config(check)

    emit = commands.add_parser(
        "emit",
        help="send events to a running daemon",
        description="Send one event (EVENT_NAME --data JSON) or a file "
        'holding an event or an envelope {"events": [...]}.',
    )
    with_config(emit)
    emit.add_argument("event_name", nargs="?", metavar="EVENT_NAME")
    emit.add_argument("--data", metavar="JSON", help="the event's data object")
    emit.add_argument("--event-id", metavar="ID", help="eventId (default: a new UUID)")
    emit.add_argument("--timestamp", type=int, metavar="MS", help="epoch milliseconds")
    emit.add_argument("--file", metavar="FILE", help="JSON file to send as is ('-': stdin)")
    with_endpoint(emit)
    commands_module.add_parsers(commands, with_client)

    events = commands.add_parser(
        "events",
        help="list the event catalogue (no running daemon needed)",
        description="List the platform's events: name, kind (realtime or batch) and "
        "description. Reads the catalogue built into this almhookd, not a daemon, so it "
        "works on a fresh install with nothing running; a daemon serves the same "
        "document at GET /v1/catalogue.",
    )
    output = events.add_mutually_exclusive_group()
    output.add_argument(
        "--json",
        action="store_true",
        help="print the document GET /v1/catalogue answers, with each event's data fields",
    )
    output.add_argument(
        "--markdown",
        action="store_true",
        help=f"print docs/EVENTS.md (regenerate it with: {MARKDOWN_COMMAND})",
    )

    migrate = commands.add_parser(
        "migrate-store",
        help="copy a stopped SQLite install into an empty PostgreSQL database",
        description="Copy the SQLite database of the configuration (stop the daemon "
        "first) into an empty PostgreSQL database, in one transaction, and check the "
        "counts: webhooks and their secrets, retained events, deliveries, the batches "
        'being sent, attempts. Then set [storage] backend = "postgresql" and dsn.',
    )
    with_config(migrate)
    migrate.add_argument(
        "--to",
        metavar="DSN",
        help="postgresql://user:password@host:port/database (default: "
        "$ALMHOOKD_DATABASE_DSN, which keeps the password out of the process list)",
    )

    listen = commands.add_parser(
        "listen", help="run a receiver that verifies and prints what almhookd sends"
    )
    listen.add_argument("--host", default="127.0.0.1")
    listen.add_argument("--port", type=int, default=8000)
    listen.add_argument(
        "--secret",
        action="append",
        default=[],
        metavar="whsec_…",
        help="signing secret to verify with (repeat during a rotation)",
    )
    listen.add_argument(
        "--secret-file",
        type=Path,
        metavar="FILE",
        help="the JSON that 'almhookd webhooks secret' downloads",
    )
    listen.add_argument("--basic", metavar="USER:PASS", help="expect these Basic credentials")
    listen.add_argument(
        "--status",
        type=int,
        default=None,
        help="answer every request with this status (default: 202, or 401 when a check fails)",
    )
    listen.add_argument(
        "--delay",
        type=_duration_arg,
        default=0.0,
        metavar="DURATION",
        help='wait this long before answering, e.g. "6s"',
    )
    listen.add_argument(
        "--tolerance",
        type=_duration_arg,
        default=300.0,
        metavar="DURATION",
        help="accepted age of webhook-timestamp (default 5m)",
    )
    listen.add_argument("--json", action="store_true", help="one JSON line per event")
    listen.add_argument(
        "--background",
        action="store_true",
        help="serve from a background process and return once listening (prints its pid)",
    )
    return parser


def _duration_arg(text: str) -> float:
    try:
        return parse_duration(text)
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from None


def with_config(sub: argparse.ArgumentParser) -> None:
    sub.add_argument(
        "--config",
        type=Path,
        metavar="PATH",
        help="configuration file (default: $ALMHOOKD_CONFIG, else /etc/almhookd/config.toml)",
    )
    sub.add_argument(
        "--database",
        type=Path,
        metavar="PATH",
        help="use this database file instead of storage.path",
    )


def with_endpoint(sub: argparse.ArgumentParser) -> None:
    sub.add_argument("--url", help="daemon URL (default: $ALMHOOKD_URL, else from the config)")
    sub.add_argument(
        "--token", help="bearer token (default: $ALMHOOKD_ADMIN_TOKEN, else from the config)"
    )


def with_client(sub: argparse.ArgumentParser) -> None:
    """Flags of every client command: where the daemon is and which token to use."""
    with_config(sub)
    with_endpoint(sub)


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    commands_module.check_usage(args)
    try:
        if args.command == "run":
            from almhookd.service.daemon import run

            return run(_config(args))
        if args.command == "check-config":
            config = _config(args)
            print(render_config(config), end="")
            print("configuration OK", file=sys.stderr)
            return EXIT_OK
        if args.command == "emit":
            return _emit(args, os.environ)
        if args.command == "listen":
            from almhookd.cli.listen import options_from, run_listener

            secrets = list(args.secret)
            if args.secret_file is not None:
                try:
                    secrets.append(json.loads(args.secret_file.read_text())["secret"])
                except (OSError, ValueError, KeyError) as error:
                    raise CommandFailed(
                        f"cannot read a secret from {args.secret_file}: {error}"
                    ) from None
            try:
                return run_listener(options_from(args, secrets))
            except ValueError as error:
                print(f"almhookd: listen: {error}", file=sys.stderr)
                return EXIT_USAGE
        if args.command == "events":
            return run_events(args)
        if args.command == "migrate-store":
            return _migrate_store(args, os.environ)
        if args.command in ("webhooks", "status", "batch"):
            endpoint = resolve_endpoint(args, os.environ, prefer_ingest=False)
            return commands_module.run(
                args, lambda method, path, body: _call(endpoint, method, path, body)
            )
    except ConfigError as error:
        print(f"almhookd: {one_line(error.message)}", file=sys.stderr)
        return EXIT_CONFIG
    except CommandFailed as error:
        print(f"almhookd: {one_line(error.message)}", file=sys.stderr)
        return EXIT_FAILURE
    raise AssertionError(f"unhandled command {args.command}")  # argparse rejects others


def _migrate_store(args: argparse.Namespace, env: Mapping[str, str]) -> int:
    from almhookd.dsn import redacted
    from almhookd.errors import StorageError

    # Imported here: the other commands need no database driver.
    from almhookd.storage.migrate import migrate_store

    target = args.to or env.get("ALMHOOKD_DATABASE_DSN", "")
    if not target.startswith(("postgresql://", "postgres://")):
        raise CommandFailed(
            "migrate-store: --to (or ALMHOOKD_DATABASE_DSN): expected "
            "postgresql://user:password@host:port/database"
        )
    # The source is the configuration's SQLite file; the DSN given for the target is not
    # the configuration's own (with backend = "sqlite" it would be refused as a mistake).
    without_target = {k: v for k, v in env.items() if k != "ALMHOOKD_DATABASE_DSN"}
    config = load_config(args.config, env=without_target)
    if args.database is not None:
        config = replace(config, storage=replace(config.storage, path=args.database.resolve()))
    try:
        copied = uvloop.run(migrate_store(config.storage.path, Secret(target), clock=time.time))
    except StorageError as error:
        raise CommandFailed(f"migrate-store: {error.message}") from None
    counts = ", ".join(f"{table} {count:,}" for table, count in copied.items())
    print(f"copied {config.storage.path} to {redacted(target)}: {counts}")
    return 0


def one_line(message: str) -> str:
    """An error message as one line of stderr: its lines joined by "; "."""
    return "; ".join(line.strip() for line in message.splitlines() if line.strip())


def _config(args: argparse.Namespace) -> Config:
    config = load_config(args.config)
    if args.database is not None:
        config = replace(config, storage=replace(config.storage, path=args.database.resolve()))
    return config


@dataclass(frozen=True, kw_only=True, slots=True)
class Endpoint:
    url: str
    token: str


def resolve_endpoint(
    args: argparse.Namespace, env: Mapping[str, str], *, prefer_ingest: bool
) -> Endpoint:
    """Where the daemon is and which token to use: flags, then env, then the config."""
    url = args.url or env.get("ALMHOOKD_URL", "")
    token = args.token or env.get("ALMHOOKD_ADMIN_TOKEN", "")
    if url and token:
        return Endpoint(url=url.rstrip("/"), token=token)
    config: Config | None = None
    explicit = args.config is not None or bool(env.get("ALMHOOKD_CONFIG"))
    try:
        config = _config(args)
    except ConfigError:
        if explicit:
            raise
    if not url:
        listen = config.server.listen if config else parse_listen("127.0.0.1:8787")
        host = {"0.0.0.0": "127.0.0.1", "::": "::1"}.get(listen.host, listen.host)  # noqa: S104
        host = f"[{host}]" if ":" in host else host
        url = f"http://{host}:{listen.port}"
    if not token and config is not None:
        choices = (
            [config.server.ingest_token, config.server.admin_token]
            if prefer_ingest
            else [config.server.admin_token]
        )
        secret = next((s for s in choices if s is not None), None) or read_generated_token(config)
        token = secret.reveal() if secret else ""
    if not token:
        raise CommandFailed(
            "no token: pass --token, set ALMHOOKD_ADMIN_TOKEN, or point "
            "--config at the daemon's configuration"
        )
    return Endpoint(url=url.rstrip("/"), token=token)


def request_json(
    endpoint: Endpoint, method: str, path: str, body: Any = None, *, raw: bytes | None = None
) -> tuple[int, Any]:
    """One API call; returns (status, decoded JSON). Connection failures raise."""
    data = raw if raw is not None else (None if body is None else json.dumps(body).encode())
    request = urllib.request.Request(  # noqa: S310 - the URL is the operator's own daemon
        endpoint.url + path,
        data=data,
        method=method,
        headers={
            "Authorization": f"Bearer {endpoint.token}",
            "Content-Type": "application/json",
            "User-Agent": f"almhookd-cli/{__version__}",
        },
    )
    try:
        with urllib.request.urlopen(request, timeout=30) as response:  # noqa: S310
            return response.status, json.loads(response.read() or b"null")
    except urllib.error.HTTPError as error:
        payload = error.read()
        try:
            return error.code, json.loads(payload)
        except ValueError:
            return error.code, {"error": {"message": payload.decode(errors="replace")[:200]}}
    except (urllib.error.URLError, OSError) as error:
        reason = getattr(error, "reason", error)
        raise CommandFailed(f"cannot reach almhookd at {endpoint.url}: {reason}") from None


def _call(endpoint: Endpoint, method: str, path: str, body: Any) -> Any:
    status, answer = request_json(endpoint, method, path, body)
    if not 200 <= status < 300:
        raise CommandFailed(_api_error_message(status, answer))
    return answer


def _api_error_message(status: int, body: Any) -> str:
    """The API's error as one line: its message, which already sums up the first
    problems, and the per-field details it left out (after the fifth)."""
    error = body.get("error", {}) if isinstance(body, dict) else {}
    error = error if isinstance(error, dict) else {}
    message = str(error.get("message", "request failed"))
    details = error.get("details", [])
    problems = [
        f"{d.get('path')}: {d.get('message')}" if d.get("path") else str(d.get("message"))
        for d in (details if isinstance(details, list) else [])
        if isinstance(d, dict)
    ]
    missing = [p for p in problems if p not in message]
    if missing:
        message = _MORE.sub("", message) + "; " + "; ".join(missing)
    return f"HTTP {status}: {' '.join(message.split())}"


#: How the API ends a message that sums up only the first problems.
_MORE: Final = re.compile(r"; and \d+ more$")


def _emit(args: argparse.Namespace, env: Mapping[str, str]) -> int:
    if args.file and (args.event_name or args.data):
        print(
            "almhookd: emit: give EVENT_NAME --data JSON, or --file FILE, not both",
            file=sys.stderr,
        )
        return EXIT_USAGE
    if args.file:
        try:
            raw = sys.stdin.buffer.read() if args.file == "-" else Path(args.file).read_bytes()
        except OSError as error:
            raise CommandFailed(f"cannot read {args.file}: {error.strerror}") from None
    elif args.event_name and args.data is not None:
        try:
            data = json.loads(args.data)
        except ValueError as error:
            print(f"almhookd: emit: --data is not valid JSON: {error}", file=sys.stderr)
            return EXIT_USAGE
        event: dict[str, Any] = {"eventName": args.event_name, "data": data}
        if args.event_id:
            event["eventId"] = args.event_id
        if args.timestamp is not None:
            event["timestamp"] = args.timestamp
        raw = json.dumps(event).encode()
    else:
        print("almhookd: emit: give EVENT_NAME --data JSON, or --file FILE", file=sys.stderr)
        return EXIT_USAGE
    endpoint = resolve_endpoint(args, env, prefer_ingest=True)
    status, body = request_json(endpoint, "POST", "/v1/events", raw=raw)
    if status != 202:
        raise CommandFailed(_api_error_message(status, body))
    print(json.dumps(body))
    return EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
