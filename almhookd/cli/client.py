"""The admin client commands: ``almhookd webhooks …``, ``almhookd status`` and
``almhookd batch flush``.

Human-friendly tables by default, ``--json`` for scripts. API errors are shown as the
API's message (with per-field details) and exit 1.
"""

from __future__ import annotations

import argparse
import contextlib
import errno
import functools
import json
import os
import stat
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Final
from urllib.parse import quote, urlencode

from almhookd.domain.replay import MAX_SINCE_CHARS, SinceRefused, since_ms
from almhookd.errors import AlmhookdError

EXIT_OK = 0
EXIT_FAILURE = 1


class CommandFailed(AlmhookdError):
    """The command failed."""


def add_parsers(commands: Any, with_client: Callable[[argparse.ArgumentParser], None]) -> None:
    """Add ``webhooks``, ``status`` and ``batch`` to the top-level sub-parsers."""
    webhooks = commands.add_parser("webhooks", help="manage webhooks on a running daemon")
    actions = webhooks.add_subparsers(dest="action", required=True, metavar="ACTION")

    def action(name: str, help_text: str, *, webhook_id: bool = True) -> argparse.ArgumentParser:
        sub: argparse.ArgumentParser = actions.add_parser(name, help=help_text)
        with_client(sub)
        sub.add_argument("--json", action="store_true", help="print the API's JSON")
        if webhook_id:
            sub.add_argument("webhook_id", metavar="WEBHOOK", help="the webhook's id or name")
        return sub

    action("list", "list webhooks", webhook_id=False)
    action("show", "show one webhook")
    add = action("add", "create a webhook", webhook_id=False)
    _webhook_flags(add, creating=True)
    edit = action("edit", "change a webhook (only the flags given)")
    _webhook_flags(edit, creating=False)
    delete = action(
        "delete",
        "delete a webhook and its pending deliveries (asks first unless --yes)",
    )
    delete.add_argument(
        "--yes",
        action="store_true",
        help="delete without asking (needed when stdin is not a terminal)",
    )
    delete.set_defaults(usage_check=functools.partial(_check_delete_usage, delete))
    test = action(
        "test",
        "send one test delivery now (not retried): to a saved webhook, or with --draft "
        "to the unsaved webhook the flags of 'add' describe",
        webhook_id=False,
    )
    test.add_argument(
        "webhook_id",
        nargs="?",
        metavar="WEBHOOK",
        help="the webhook's id or name (not with --draft)",
    )
    test.add_argument(
        "--draft",
        action="store_true",
        help="test the webhook that --name, --target-url, --events … describe (the flags of "
        "'add'), as the add screen's Test webhook does; nothing is saved",
    )
    draft_flags = _webhook_flags(test, creating=False)
    test.set_defaults(usage_check=functools.partial(_check_test_usage, test, draft_flags))
    secret = action("secret", "download the signing secret as JSON")
    secret.add_argument(
        "--output",
        type=Path,
        metavar="FILE",
        help="write it to a new FILE (mode 0600); an existing FILE is refused unless --force",
    )
    secret.add_argument(
        "--force",
        action="store_true",
        help="with --output: replace an existing FILE atomically by a new 0600 file; "
        "a symbolic link at FILE is refused even then (its target is never written)",
    )
    action("rotate-secret", "make a new signing secret (the old one signs for a grace period)")
    deliveries = action("deliveries", "per-event delivery state")
    deliveries.add_argument("--state", choices=("pending", "sending", "delivered", "expired"))
    deliveries.add_argument("--limit", type=int, default=50)
    attempts = action("attempts", "the request log, newest first")
    attempts.add_argument("--limit", type=int, default=20)
    replay = action("replay", "queue retained events again (new webhook-id)")
    group = replay.add_mutually_exclusive_group(required=True)
    group.add_argument("--event-id", action="append", dest="event_ids", metavar="ID")
    group.add_argument(
        "--since",
        type=_since_arg,
        metavar="WHEN",
        help="the events ingested since WHEN: a duration back from now (30m, 2h, 1d), an "
        "ISO 8601 date and time (2026-11-30T14:00, taken as UTC unless it has an offset "
        "such as +01:00 or Z) or epoch milliseconds; events ingested before the webhook "
        "was created are included (a note says so)",
    )

    status = commands.add_parser("status", help="one-screen overview of the daemon")
    with_client(status)
    status.add_argument("--json", action="store_true", help="print the API's JSON")

    batch = commands.add_parser("batch", help="the batch schedule of a running daemon")
    batch_actions = batch.add_subparsers(dest="action", required=True, metavar="ACTION")
    flush = batch_actions.add_parser(
        "flush",
        help="deliver the held non-real-time events now, not at the next flush time",
    )
    with_client(flush)
    flush.add_argument("--json", action="store_true", help="print the API's JSON")


#: The flags a new webhook needs: required by ``add``, and by ``test --draft``.
NEW_WEBHOOK_FLAGS: Final = ("--name", "--target-url", "--events")


def _webhook_flags(sub: argparse.ArgumentParser, *, creating: bool) -> tuple[argparse.Action, ...]:
    """Flags named after the JSON fields of a webhook (``webhook_body`` reads them);
    ``creating`` makes those a new webhook needs required. Returns the flags."""

    def flag(name: str, **options: Any) -> argparse.Action:
        return sub.add_argument(name, required=creating and name in NEW_WEBHOOK_FLAGS, **options)

    flags = [
        flag("--name"),
        flag("--target-url", metavar="URL"),
        flag(
            "--events",
            action="append",
            metavar="NAMES",
            help="event names, comma-separated or the flag repeated (see: almhookd events)",
        ),
        flag("--description"),
        flag("--contact-email", metavar="EMAIL"),
        flag("--auth-type", choices=("none", "basic", "signature")),
        flag("--auth-username", metavar="USER", help="for --auth-type basic"),
        flag(
            "--auth-password-file",
            type=Path,
            metavar="FILE",
            help="for --auth-type basic: read the password from FILE",
        ),
        flag(
            "--auth-password",
            metavar="PASSWORD",
            help="for --auth-type basic (visible to other local users; prefer "
            "--auth-password-file or $ALMHOOKD_WEBHOOK_PASSWORD)",
        ),
    ]
    state = sub.add_mutually_exclusive_group()
    flags.append(state.add_argument("--active", dest="active", action="store_const", const=True))
    flags.append(
        state.add_argument(
            "--inactive",
            dest="active",
            action="store_const",
            const=False,
            help="archive: nothing is delivered",
        )
    )
    return tuple(flags)


def _check_test_usage(
    parser: argparse.ArgumentParser,
    flags: Sequence[argparse.Action],
    args: argparse.Namespace,
) -> None:
    """``webhooks test WEBHOOK`` or ``webhooks test --draft`` with the flags of ``add``;
    anything else exits 2 as argparse does."""
    names: dict[str, list[str]] = {}  # --active and --inactive share one field
    for f in flags:
        names.setdefault(f.dest, []).append(f.option_strings[0])
    given = ["/".join(n) for dest, n in names.items() if getattr(args, dest) is not None]
    if args.draft:
        if args.webhook_id is not None:
            parser.error("--draft tests the webhook its flags describe: give no WEBHOOK")
        missing = [name for name in NEW_WEBHOOK_FLAGS if name not in given]
        if missing:
            parser.error(f"with --draft the following arguments are required: {', '.join(missing)}")
    elif args.webhook_id is None:
        parser.error("give a WEBHOOK to test, or --draft with the flags of 'webhooks add'")
    elif given:
        parser.error(f"only with --draft: {', '.join(given)}")


def _check_delete_usage(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """``webhooks delete`` asks on a terminal; elsewhere it needs ``--yes``."""
    if not args.yes and not stdin_is_a_terminal():
        parser.error("stdin is not a terminal, so nobody can be asked: pass --yes to delete")


def stdin_is_a_terminal() -> bool:
    return sys.stdin is not None and sys.stdin.isatty()


def check_usage(args: argparse.Namespace) -> None:
    """The checks argparse cannot make on its own (exit 2 with the usage when one fails)."""
    check = getattr(args, "usage_check", None)
    if check is not None:
        check(args)


def webhook_body(args: argparse.Namespace) -> dict[str, Any]:
    """The create/patch body the flags describe (only the flags given)."""
    body: dict[str, Any] = {}
    if args.events is not None:
        body["events"] = [n.strip() for item in args.events for n in item.split(",") if n.strip()]
    for flag, key in (
        ("name", "name"),
        ("target_url", "targetUrl"),
        ("description", "description"),
        ("contact_email", "contactEmail"),
        ("active", "active"),
    ):
        value = getattr(args, flag)
        if value is not None:
            body[key] = value
    if args.auth_type is not None:
        auth: dict[str, Any] = {"type": args.auth_type}
        if args.auth_type == "basic":
            password = args.auth_password or os.environ.get("ALMHOOKD_WEBHOOK_PASSWORD")
            if args.auth_password_file is not None:
                password = _read_password_file(args.auth_password_file)
            if args.auth_username is not None:
                auth["username"] = args.auth_username
            if password:
                auth["password"] = password
        body["auth"] = auth
    return body


def _read_password_file(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8").strip()
    except OSError as error:
        raise CommandFailed(
            f"cannot read --auth-password-file {path}: {error.strerror or error}"
        ) from None
    except UnicodeDecodeError:
        raise CommandFailed(f"cannot read --auth-password-file {path}: not UTF-8 text") from None


# --- replay --since ---------------------------------------------------------------

#: Longer than any duration, date or epoch milliseconds a person types.


def parse_since(text: str, *, now_ms: int) -> int:
    """Epoch milliseconds of ``replay --since``: epoch milliseconds (digits only), or a
    duration or a date and time as :func:`almhookd.domain.replay.since_ms` reads them.

    Raises :class:`ValueError` with a one-line message."""
    value = text.strip()
    if value.isascii() and value.isdigit() and len(value) <= MAX_SINCE_CHARS:
        return int(value)
    try:
        return since_ms(value, now_ms=now_ms)
    except SinceRefused as refused:
        if refused.reason == "future":
            raise ValueError(
                f"{text!r} is in the future: nothing was ingested since then"
            ) from None
        if refused.reason == "unreadable":
            raise ValueError(
                f"{text!r} is not a duration (30m, 2h, 1d), an ISO 8601 date and time "
                "(2026-11-30T14:00, UTC unless it has an offset), nor epoch milliseconds"
            ) from None
        raise ValueError(
            f"{text!r} is not a duration, a date and time, nor epoch milliseconds"
        ) from None


def _since_arg(text: str) -> int:
    try:
        return parse_since(text, now_ms=int(time.time() * 1000))
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from None


def replay_note(since_ms: int, webhook: dict[str, Any]) -> str | None:
    """What to tell an admin whose replay reaches back past the webhook's creation."""
    created = webhook.get("createdAt")
    if not isinstance(created, int) or since_ms >= created:
        return None
    return (
        f"note: {when(since_ms)} UTC is before {webhook['name']} was created "
        f"({when(created)} UTC): events ingested before then are included too (queued if "
        "the webhook subscribes to them and they are still retained)"
    )


# --- asking before deleting ---------------------------------------------------------


def delete_question(webhook: dict[str, Any]) -> str:
    return f"Delete webhook {webhook['name']} ({webhook['id']}) and its pending deliveries? [y/N] "


def confirmed(question: str, ask: Callable[[str], str]) -> bool:
    """True when the answer ``ask(question)`` gives is y or yes (any case); no answer
    (end of input, Ctrl-C) is a no."""
    try:
        answer = ask(question)
    except (EOFError, KeyboardInterrupt):
        return False
    return answer.strip().lower() in ("y", "yes")


def _ask_on_the_terminal(question: str) -> str:
    """The question on stderr (stdout stays the command's output), the answer from stdin."""
    print(question, end="", file=sys.stderr, flush=True)
    line = sys.stdin.readline()
    if not line:
        raise EOFError
    return line


# --- writing a secret to a file -------------------------------------------------------


def write_private_file(path: Path, text: str, *, force: bool) -> None:
    """Write ``text`` to ``path`` readable by its owner only (0600), or :class:`CommandFailed`.

    A new file is created exclusively and never through a symbolic link. An existing file
    is refused unless ``force``; then a temporary file in the same folder takes its place
    with one rename, so the old file (its mode, its other links, whoever has it open) never
    holds the secret. A symbolic link at ``path`` is refused even with ``force``: the admin
    may have meant its target, and almhookd writes only the path it was given.
    """
    data = text.encode("utf-8")
    try:
        if force:
            _replace_file(path, data)
        else:
            _create_file(path, data)
    except OSError as error:
        raise CommandFailed(f"cannot write {path}: {_file_problem(path, error)}") from None


def _file_problem(path: Path, error: OSError) -> str:
    """One line on why ``path`` cannot be written, for an admin to act on."""
    if error.errno == errno.EEXIST:
        return "it already exists (pass --force to replace it)"
    if error.errno == errno.ENOENT:
        return f"the folder {path.parent} does not exist"
    return error.strerror or str(error)


def _refuse_links_and_folders(path: Path) -> None:
    try:
        mode = path.lstat().st_mode
    except FileNotFoundError:
        return
    if stat.S_ISLNK(mode):
        raise OSError(
            errno.ELOOP, "it is a symbolic link (not followed; remove it or give another path)"
        )
    if stat.S_ISDIR(mode):
        raise OSError(errno.EISDIR, "it is a directory")


def _write_all(descriptor: int, data: bytes) -> None:
    view = memoryview(data)
    while view:  # each write takes at least one byte, so this ends
        view = view[os.write(descriptor, view) :]
    os.fsync(descriptor)


def _create_file(path: Path, data: bytes) -> None:
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW
    try:
        descriptor = os.open(path, flags, 0o600)
    except FileExistsError:
        _refuse_links_and_folders(path)  # a clearer reason than "exists", when there is one
        raise
    try:
        _write_all(descriptor, data)
    except OSError:
        os.close(descriptor)
        with contextlib.suppress(OSError):  # ours: created exclusively above
            os.unlink(path)
        raise
    os.close(descriptor)


def _replace_file(path: Path, data: bytes) -> None:
    _refuse_links_and_folders(path)
    descriptor, temporary = tempfile.mkstemp(
        dir=path.parent, prefix=f".{path.name}.", suffix=".tmp"
    )
    try:
        try:
            _write_all(descriptor, data)
        finally:
            os.close(descriptor)
        # rename(2) replaces a link that appeared since the check, never its target
        os.replace(temporary, path)
    except OSError:
        with contextlib.suppress(OSError):
            os.unlink(temporary)
        raise


# --- formatting (pure) --------------------------------------------------------------


def when(ms: int | None, *, now_ms: int | None = None) -> str:
    if ms is None:
        return "-"
    text = datetime.fromtimestamp(ms / 1000, UTC).strftime("%Y-%m-%d %H:%M:%S")
    if now_ms is not None:
        text += f" ({age(now_ms - ms)} ago)" if ms <= now_ms else f" (in {age(ms - now_ms)})"
    return text


def age(ms: int | None) -> str:
    if ms is None:
        return "-"
    seconds = max(0, ms) // 1000
    for unit, size in (("d", 86_400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{seconds // size}{unit}"
    return f"{seconds}s"


def table(headers: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    cells = [[str(h) for h in headers], *[["-" if c is None else str(c) for c in r] for r in rows]]
    widths = [max(len(row[i]) for row in cells) for i in range(len(headers))]
    return "\n".join(
        "  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip() for row in cells
    )


def backlog_text(webhook: dict[str, Any]) -> str:
    backlog = webhook["backlog"]
    text = f"{backlog['realtime']}+{backlog['batch']}"
    return text + (f" ({backlog['batchHeld']} held)" if backlog["batchHeld"] else "")


#: How to create a webhook, as the empty list says it (the flags of ``webhooks add``).
ADD_HINT: Final = "almhookd webhooks add --name NAME --target-url URL --events NAMES"


def webhooks_table(webhooks: Sequence[dict[str, Any]], now_ms: int) -> str:
    if not webhooks:
        return f"no webhooks (create one with: {ADD_HINT})"
    return table(
        ("ID", "NAME", "STATUS", "EVENTS", "BACKLOG", "LAST SUCCESS", "TARGET"),
        [
            (
                w["id"],
                w["name"],
                w["status"],
                len(w["events"]),
                backlog_text(w),
                when(w["lastSuccessAt"], now_ms=now_ms),
                w["targetUrl"],
            )
            for w in webhooks
        ],
    )


def webhook_details(webhook: dict[str, Any], now_ms: int) -> str:
    auth = webhook["auth"]["type"] + (
        f" ({webhook['auth'].get('username')})" if webhook["auth"]["type"] == "basic" else ""
    )
    lines = [
        ("id", webhook["id"]),
        ("name", webhook["name"]),
        ("description", webhook["description"] or "-"),
        ("target", webhook["targetUrl"]),
        ("auth", auth),
        (
            "status",
            webhook["status"]
            + (f": {webhook['disabledReason']}" if webhook["disabledReason"] else ""),
        ),
        ("events", ", ".join(webhook["events"])),
        ("contact", webhook["contactEmail"] or "-"),
        ("backlog", f"{backlog_text(webhook)} (real-time+batch)"),
        ("oldest pending", age(webhook["oldestPendingAgeMs"])),
        ("last success", when(webhook["lastSuccessAt"], now_ms=now_ms)),
        ("failing since", when(webhook["failingSince"], now_ms=now_ms)),
        ("last error", webhook["lastError"] or "-"),
        ("next retry", when(webhook["nextRetryAt"], now_ms=now_ms)),
    ]
    width = max(len(k) for k, _ in lines)
    return "\n".join(f"{k.ljust(width)}  {v}" for k, v in lines)


def status_screen(status: dict[str, Any], now_ms: int) -> str:
    rows = [
        (
            w["name"],
            w["status"],
            backlog_text(w),
            age(w["oldestPendingAgeMs"]),
            when(w["lastSuccessAt"], now_ms=now_ms),
            when(w["nextRetryAt"], now_ms=now_ms),
            (w["lastError"] or "-")[:40],
        )
        for w in status["webhooks"]
    ]
    lines = [
        f"almhookd: {len(rows)} webhook(s); next batch flush "
        f"{when(status.get('nextFlushAt'), now_ms=now_ms)}"
    ]
    if rows:
        lines.append(
            table(
                (
                    "WEBHOOK",
                    "STATE",
                    "BACKLOG",
                    "OLDEST",
                    "LAST SUCCESS",
                    "NEXT RETRY",
                    "LAST ERROR",
                ),
                rows,
            )
        )
    return "\n".join(lines)


def delivery_test_report(answer: dict[str, Any]) -> str:
    """A test delivery's outcome: ok or FAILED, the status or error, the time, the answer."""
    outcome = answer["error"] or f"HTTP {answer['status']}"
    lines = [f"{'ok' if answer['ok'] else 'FAILED'}: {outcome} in {answer['durationMs']} ms"]
    if answer["responseBody"]:
        lines.append(answer["responseBody"])
    if answer.get("signingSecret"):
        lines.append(
            f"signed with a throw-away secret {answer['signingSecret']} "
            "(the webhook gets its own when it is added)"
        )
    return "\n".join(lines)


def flush_report(answer: dict[str, Any], now_ms: int) -> str:
    """What a batch flush released, per webhook, and when the next one comes."""
    lines = [
        f"released {answer['released']} held deliveries; next batch flush "
        f"{when(answer['nextFlushAt'], now_ms=now_ms)}"
    ]
    if answer["webhooks"]:
        lines.append(table(("WEBHOOK", "RELEASED"), sorted(answer["webhooks"].items())))
    return "\n".join(lines)


# --- running the commands -----------------------------------------------------------


def _resolve(reference: str, call: Callable[[str, str, Any], Any]) -> str:
    """A webhook id, or the id of the webhook with this name."""
    if reference.startswith("wh_"):
        return reference
    for webhook in call("GET", "/v1/webhooks", None)["webhooks"]:
        if webhook["name"] == reference:
            return str(webhook["id"])
    raise CommandFailed(f"no webhook named {reference!r}")


def run(
    args: argparse.Namespace,
    call: Callable[[str, str, Any], Any],
    ask: Callable[[str], str] = _ask_on_the_terminal,
) -> int:
    """Run a client command; ``call(method, path, body)`` returns the API's JSON or raises;
    ``ask(question)`` returns the admin's answer (``webhooks delete`` without ``--yes``)."""
    now_ms = int(time.time() * 1000)
    if args.command == "status":
        body = call("GET", "/v1/status", None)
        print(json.dumps(body, indent=2) if args.json else status_screen(body, now_ms))
        return EXIT_OK
    if args.command == "batch":  # the one action: flush
        body = call("POST", "/v1/batch/flush", None)
        print(json.dumps(body, indent=2) if args.json else flush_report(body, now_ms))
        return EXIT_OK
    path = "/v1/webhooks"
    if getattr(args, "webhook_id", None):
        path += "/" + quote(_resolve(args.webhook_id, call), safe="")
    action = args.action
    if action == "list":
        body = call("GET", path, None)
        print(json.dumps(body, indent=2) if args.json else webhooks_table(body["webhooks"], now_ms))
    elif action in ("show", "add", "edit"):
        method = {"show": "GET", "add": "POST", "edit": "PATCH"}[action]
        payload = None if action == "show" else webhook_body(args)
        body = call(method, path, payload)
        print(json.dumps(body, indent=2) if args.json else webhook_details(body, now_ms))
    elif action == "delete":
        if not args.yes and not confirmed(delete_question(call("GET", path, None)), ask):
            print("almhookd: nothing deleted", file=sys.stderr)
            return EXIT_FAILURE
        call("DELETE", path, None)
        print(f"deleted {args.webhook_id}")
    elif action == "test":
        if args.draft:  # POST /v1/webhooks/test with the body `add` would send
            body = call("POST", path + "/test", webhook_body(args))
        else:
            body = call("POST", path + "/test", None)
        print(json.dumps(body, indent=2) if args.json else delivery_test_report(body))
        return EXIT_OK if body["ok"] else 1
    elif action in ("secret", "rotate-secret"):
        body = call(
            "GET" if action == "secret" else "POST",
            path + ("/secret" if action == "secret" else "/secret/rotate"),
            None,
        )
        text = json.dumps(body, indent=2)
        if getattr(args, "output", None):
            write_private_file(args.output, text + "\n", force=args.force)
            print(f"secret written to {args.output}")
        else:
            print(text)
    elif action == "deliveries":
        query = urlencode({k: v for k, v in (("state", args.state), ("limit", args.limit)) if v})
        body = call("GET", f"{path}/deliveries?{query}", None)
        print(
            json.dumps(body, indent=2)
            if args.json
            else table(
                ("EVENT ID", "EVENT", "STATE", "ATTEMPTS", "DELIVERED", "BATCH"),
                [
                    (
                        d["eventId"],
                        d["eventName"],
                        d["state"],
                        d["attempts"],
                        when(d["deliveredAt"]),
                        d["batchId"],
                    )
                    for d in body["deliveries"]
                ],
            )
        )
    elif action == "attempts":
        body = call("GET", f"{path}/attempts?limit={args.limit}", None)
        print(
            json.dumps(body, indent=2)
            if args.json
            else table(
                ("TIME", "EVENTS", "STATUS", "MS", "ERROR", "BATCH"),
                [
                    (
                        when(a["startedAt"]),
                        a["eventCount"],
                        a["status"],
                        a["durationMs"],
                        a["error"],
                        a["batchId"],
                    )
                    for a in body["attempts"]
                ],
            )
        )
    elif action == "replay":
        payload = {"eventIds": args.event_ids} if args.event_ids else {"since": args.since}
        body = call("POST", path + "/replay", payload)
        print(json.dumps(body) if args.json else f"queued {body['queued']} deliveries again")
        note = None if args.event_ids else replay_note(args.since, call("GET", path, None))
        if note:
            print(note, file=sys.stderr)
    else:  # pragma: no cover - argparse allows no other action
        print(f"unknown action {action}", file=sys.stderr)
        return 2
    return EXIT_OK
