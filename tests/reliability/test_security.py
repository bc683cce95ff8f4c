"""Security: only the admin controls an acknowledged event. Tokens on every route,
constant-time comparison, the target guard against DNS rebinding, no redirects, private
files, no secret in any log line, no open admin API on the network."""

from __future__ import annotations

import ast
import asyncio
import inspect
import json
import socket
import stat
import textwrap
from pathlib import Path
from types import SimpleNamespace
from typing import Any, ClassVar

import aiohttp
import pytest
from aiohttp import web

import almhookd
import almhookd.delivery.resolver
from almhookd.api.app import create_app
from almhookd.auth import TokenChecker
from almhookd.config import Secret, load_config, parse_config
from almhookd.errors import ConfigError
from tests.reliability.conftest import record
from tests.reliability.harness import (
    assert_no_secrets,
    call,
    create_webhook,
    database,
    events,
    fast_config,
    ingest,
    wait_for,
)
from tests.support.daemon_process import DaemonProcess
from tests.support.daemon_process import almhookd as run_cli
from tests.support.http_receiver import Receiver
from tests.support.running import running_daemon
from tests.support.tokens import ADMIN_TOKEN, INGEST_TOKEN

WRONG_TOKEN = ADMIN_TOKEN[:-1] + "X"  # one character off: no prefix match may pass
#: The routes the ingest token may call: producers send events and read the catalogue.
INGEST_TOKEN_ROUTES = frozenset({"ingest", "catalogue"})


def routes() -> list[tuple[str, str, str]]:
    """(route name, method, path) of every route the daemon serves, read from the app
    itself so a new route is covered without editing this list."""
    stand_in: Any = SimpleNamespace(path=Path("/nonexistent/almhookd.db"))
    app = create_app(
        store=stand_in,
        config=parse_config("", env={}),
        clock=lambda: 0.0,
        tokens=TokenChecker(admin=Secret(ADMIN_TOKEN), ingest=Secret(INGEST_TOKEN)),
        dispatcher=stand_in,
        sender=stand_in,
    )
    found = []
    for route in app.router.routes():
        if route.method == "HEAD" or route.name is None:
            continue
        info = route.resource.get_info() if route.resource else {}
        path = info.get("path") or info.get("formatter", "")
        path = path.replace("{webhook_id}", "wh_nope").replace("{event_id}", "ev-nope")
        found.append((route.name, route.method, path))
    return found


async def test_every_route_refuses_a_missing_wrong_or_ingest_token(tmp_path: Path) -> None:
    daemon = DaemonProcess(fast_config(tmp_path))
    table = routes()
    checked = 0
    try:
        await daemon.start_async()
        async with aiohttp.ClientSession() as session:
            for name, method, path in table:
                for token, header in (
                    (None, None),
                    (WRONG_TOKEN, None),
                    (INGEST_TOKEN, None),
                    (ADMIN_TOKEN, f"Basic {ADMIN_TOKEN}"),
                    (ADMIN_TOKEN, f"Bearer{ADMIN_TOKEN}"),
                    (ADMIN_TOKEN, f"Bearer {ADMIN_TOKEN[:-1]}"),
                ):
                    headers = {"Authorization": header} if header else None
                    status, body = await call(
                        session,
                        daemon.url,
                        method,
                        path + f"?token={ADMIN_TOKEN}",  # a token in the URL counts for nothing
                        {},
                        token=None if header else token,
                        headers=headers,
                    )
                    checked += 1
                    # Written out, not read from PUBLIC_ROUTES: a route made public by
                    # mistake must fail here.
                    if name in ("healthz", "openapi"):
                        assert status == 200, (path, body)
                        continue
                    if name in INGEST_TOKEN_ROUTES and token == INGEST_TOKEN and not header:
                        assert status not in (401, 403), (path, body)
                        continue
                    expected = 403 if token == INGEST_TOKEN and not header else 401
                    assert status == expected, (method, path, token, header, body)
                    assert ADMIN_TOKEN not in str(body) and INGEST_TOKEN not in str(body)
        assert await daemon.stop_async() == 0
    finally:
        daemon.stop()
    assert_no_secrets(daemon.log(), [ADMIN_TOKEN, INGEST_TOKEN])
    record("security_routes", routes=len(table), requests_checked=checked)


def test_tokens_are_compared_in_constant_time() -> None:
    """Asserted on the code, not on timings (a timing test would be flaky)."""
    source = textwrap.dedent(inspect.getsource(TokenChecker.role))
    tree = ast.parse(source)
    called = {
        f"{node.func.value.id}.{node.func.attr}"
        for node in ast.walk(tree)
        if isinstance(node, ast.Call)
        and isinstance(node.func, ast.Attribute)
        and isinstance(node.func.value, ast.Name)
    }
    assert called & {"hmac.compare_digest", "secrets.compare_digest"}, called
    # No token reaches ==, !=, in, startswith: only compare_digest sees them.
    for node in ast.walk(tree):
        if isinstance(node, ast.Compare) and not all(
            isinstance(op, ast.Is | ast.IsNot) for op in node.ops
        ):
            names = {n.attr for n in ast.walk(node) if isinstance(n, ast.Attribute)}
            names |= {n.id for n in ast.walk(node) if isinstance(n, ast.Name)}
            assert not names & {"_admin", "_ingest", "offered", "token"}, ast.unparse(node)
    # The same for every == or != of a token, password, secret or signature value
    # anywhere in the package (config.py compares two configured tokens at start-up).
    package = Path(almhookd.__file__).parent
    for module in sorted(package.glob("*.py")):
        if module.name == "config.py":
            continue
        for node in ast.walk(ast.parse(module.read_text())):
            if not isinstance(node, ast.Compare) or not any(
                isinstance(op, ast.Eq | ast.NotEq) for op in node.ops
            ):
                continue
            for operand in (node.left, *node.comparators):
                name = (
                    operand.attr
                    if isinstance(operand, ast.Attribute)
                    else operand.id
                    if isinstance(operand, ast.Name)
                    else ""
                )
                assert not any(w in name for w in ("token", "password", "secret", "signature")), (
                    f"{module.name}: {ast.unparse(node)} compares a secret with =="
                )


class FlippingNameService:
    """A name service that answers a public address, then 127.0.0.1 (DNS rebinding).
    Only the answers are made up: nothing is ever sent to the public address, which
    is only looked at by the creation-time check."""

    answer: ClassVar[str] = "93.184.216.34"
    asked: ClassVar[list[str]] = []

    @staticmethod
    async def resolve(host: str, port: int) -> list[tuple[int, str]]:
        FlippingNameService.asked.append(f"{host}->{FlippingNameService.answer}")
        answer = FlippingNameService.answer
        return [(socket.AF_INET6 if ":" in answer else socket.AF_INET, answer)]


@pytest.mark.parametrize("rebound_to", ["127.0.0.1", "127.8.9.10", "::ffff:127.0.0.1"])
async def test_a_name_rebound_to_loopback_is_refused_at_connect_time(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, receiver: Receiver, rebound_to: str
) -> None:
    monkeypatch.setattr(almhookd.delivery.resolver, "resolve", FlippingNameService.resolve)
    monkeypatch.setattr(FlippingNameService, "answer", "93.184.216.34")
    FlippingNameService.asked.clear()
    config = parse_config(
        f'[server]\nlisten = "127.0.0.1:0"\nadmin_token = "{ADMIN_TOKEN}"\n'
        f'ingest_token = "{INGEST_TOKEN}"\n[storage]\npath = "{tmp_path / "a.db"}"\n'
        '[delivery]\nread_timeout = "1s"\nbackoff_initial = "50ms"\nbackoff_max = "100ms"\n',
        env={},
    )  # the default guard: no private targets
    async with running_daemon(config) as daemon:
        url = f"http://rebind.example:{receiver.port}/hook"
        webhook = await create_webhook(daemon.session, daemon.url, url, ["COURSE_ENROLLMENT"])
        monkeypatch.setattr(FlippingNameService, "answer", rebound_to)
        assert (await ingest(daemon.session, daemon.url, events(3)))[0] == 202
        attempts: list[dict[str, Any]] = []

        async def refused() -> bool:
            _, body = await call(
                daemon.session, daemon.url, "GET", f"/v1/webhooks/{webhook['id']}/attempts"
            )
            attempts[:] = body["attempts"]
            return len(attempts) >= 2

        for _ in range(400):  # polls the request log, up to 20 s
            if await refused():
                break
            await asyncio.sleep(0.05)
        assert len(attempts) >= 2, attempts
        status, test = await call(
            daemon.session, daemon.url, "POST", f"/v1/webhooks/{webhook['id']}/test"
        )
        assert status == 200 and not test["ok"] and "not allowed" in test["error"], test
    assert all("not allowed" in a["error"] for a in attempts), attempts
    assert receiver.received == [], "a request reached the rebound address"
    assert any(a.endswith(rebound_to) for a in FlippingNameService.asked)
    record("security_rebinding", **{f"refused_{rebound_to}": len(attempts)})


async def test_test_deliveries_do_not_follow_redirects(tmp_path: Path, receiver: Receiver) -> None:
    canary = await Receiver().start()

    async def redirect(_request: web.Request) -> web.StreamResponse:
        raise web.HTTPTemporaryRedirect(location=canary.url)

    receiver.respond(redirect)
    daemon = DaemonProcess(fast_config(tmp_path))
    try:
        await daemon.start_async()
        async with aiohttp.ClientSession() as session:
            status, answer = await call(
                session,
                daemon.url,
                "POST",
                "/v1/webhooks/test",
                {"name": "draft", "targetUrl": receiver.url, "events": ["COURSE_ENROLLMENT"]},
            )
        assert status == 200 and answer["status"] == 307 and not answer["ok"], answer
        assert "redirects are not followed" in answer["error"]
        assert await daemon.stop_async() == 0
    finally:
        daemon.stop()
        await canary.stop()
    assert len(receiver.received) == 1 and canary.received == []


async def test_files_are_private_and_no_secret_reaches_the_log(
    tmp_path: Path, receiver: Receiver
) -> None:
    smtp_password, basic_password = "smtp-secret-0123456789", "basic-secret-0123456789"
    daemon = DaemonProcess(
        fast_config(tmp_path, extra=f'[notify]\nsmtp_password = "{smtp_password}"\n')
    )
    receiver.respond(401, 401, 202)  # failures first: error paths log too
    try:
        await daemon.start_async()
        async with aiohttp.ClientSession() as session:
            signed = await create_webhook(
                session, daemon.url, receiver.url, ["COURSE_ENROLLMENT"], auth={"type": "signature"}
            )
            await create_webhook(
                session,
                daemon.url,
                receiver.url,
                ["COURSE_ENROLLMENT"],
                auth={"type": "basic", "username": "u", "password": basic_password},
            )
            _, secret = await call(
                session, daemon.url, "GET", f"/v1/webhooks/{signed['id']}/secret"
            )
            _, rotated = await call(
                session, daemon.url, "POST", f"/v1/webhooks/{signed['id']}/secret/rotate"
            )
            sent = events(10)
            assert (await ingest(session, daemon.url, sent))[0] == 202
            await wait_for(lambda: len(receiver.all_event_ids()) >= 20, what="both delivered")
            await call(session, daemon.url, "GET", "/v1/status", token=WRONG_TOKEN)
            await call(session, daemon.url, "GET", "/metrics")
            data = database(tmp_path).parent
            # While running: the database, its WAL and shared-memory file, all private.
            modes = {path.name: stat.S_IMODE(path.stat().st_mode) for path in data.iterdir()}
        assert await daemon.stop_async() == 0
    finally:
        daemon.stop()
    assert stat.S_IMODE(data.stat().st_mode) & 0o077 == 0, oct(data.stat().st_mode)
    assert {"almhookd.db", "almhookd.db-wal", "almhookd.db-shm"} <= set(modes), modes
    assert all(mode & 0o077 == 0 for mode in modes.values()), modes
    secrets = [
        ADMIN_TOKEN,
        INGEST_TOKEN,
        smtp_password,
        basic_password,
        secret["secret"],
        rotated["secret"],
        secret["secret"].removeprefix("whsec_"),
    ]
    assert_no_secrets(daemon.log(), secrets)
    record("security_files_and_logs", files_checked=len(modes), secrets_checked=len(secrets))


def test_the_api_on_a_network_address_needs_a_configured_token(tmp_path: Path) -> None:
    config = tmp_path / "exposed.toml"

    def listen_on(address: str) -> None:
        config.write_text(
            f'[server]\nlisten = "{address}"\n[storage]\npath = "{tmp_path / "data" / "a.db"}"\n'
        )

    listen_on("0.0.0.0:8787")
    without_token = {"ALMHOOKD_ADMIN_TOKEN": ""}
    with pytest.raises(ConfigError, match=r"server\.admin_token: required when server\.listen"):
        load_config(config, env={})
    checked = run_cli("check-config", "--config", str(config), env=without_token)
    assert checked.returncode == 78 and "server.admin_token" in checked.stderr, checked
    # Only because the check is in loading the configuration, before the database is
    # opened and long before anything binds, may ``run`` be tried here at all.
    ran = run_cli("run", "--config", str(config), env=without_token)
    assert ran.returncode == 78 and ran.stderr.count("\n") == 1, ran.stderr
    assert "server.admin_token" in ran.stderr and "Traceback" not in ran.stderr
    assert not (tmp_path / "data").exists(), "the daemon got as far as the database"
    # A token from the environment, or a loopback address, is accepted.
    with_token = run_cli(
        "check-config", "--config", str(config), env={"ALMHOOKD_ADMIN_TOKEN": ADMIN_TOKEN}
    )
    assert with_token.returncode == 0, with_token.stderr
    for address in ("127.0.0.1:8787", "[::1]:8787", "localhost:8787"):
        listen_on(address)
        assert run_cli("check-config", "--config", str(config), env=without_token).returncode == 0


#: Requests aiohttp's parser refuses, each with a token on the line before, on or after
#: the fault: the parser's error quotes the offending bytes of the head.
MALFORMED_HEADS = [
    b"GET /v1/status HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer %(admin)s\r\n"
    b"X-Trace-Id: a\x01b\r\n\r\n",
    b"GET /v1/status HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer %(admin)s\x00\r\n\r\n",
    b"GET /v1/status HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer\r\n %(admin)s\r\n\r\n",
    b"POST /v1/events HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer %(ingest)s\r\n"
    b"Content-Length: 2\r\nContent-Length: 3\r\n\r\n{}",
    b"POST /v1/events HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer %(ingest)s\r\n"
    b"Transfer-Encoding: chunked\r\n\r\nzz\r\n",
]


def _pieces(secret: str, size: int = 8) -> set[str]:
    return {secret[i : i + size] for i in range(len(secret) - size + 1)}


async def test_malformed_requests_leave_one_line_and_no_token_in_the_log(
    tmp_path: Path,
) -> None:
    """At debug level, what aiohttp's parser refuses is logged as one warning line; no
    8-character piece of either token appears anywhere in the log."""
    config = fast_config(tmp_path)
    config.write_text(config.read_text().replace('level = "info"', 'level = "debug"'))
    daemon = DaemonProcess(config)
    tokens = {b"admin": ADMIN_TOKEN.encode(), b"ingest": INGEST_TOKEN.encode()}
    try:
        await daemon.start_async()
        for head in MALFORMED_HEADS:
            reader, writer = await asyncio.open_connection("127.0.0.1", daemon.port)
            writer.write(head % tokens)
            answer = await reader.read()  # aiohttp closes after a parse error
            writer.close()
            head, _, body = answer.partition(b"\r\n\r\n")
            assert head.startswith(b"HTTP/1.") and b" 400 " in head.split(b"\r\n", 1)[0]
            assert b"content-type: application/json" in head.lower(), head
            error = json.loads(body)["error"]  # the API's error shape, not aiohttp's text
            assert error["code"] == "bad_request", error
            assert error["message"].startswith("malformed request: "), error
        assert await daemon.stop_async() == 0
    finally:
        daemon.stop()
    log = daemon.log()
    refused = [e for e in daemon.log_events() if e["event"].startswith("malformed request")]
    assert len(refused) == len(MALFORMED_HEADS), log[-2000:]
    assert all(e["level"] == "warning" and "exception" not in e for e in refused)
    for token in (ADMIN_TOKEN, INGEST_TOKEN):
        leaked = sorted(piece for piece in _pieces(token) if piece in log)
        assert not leaked, leaked


async def test_a_debug_run_full_of_malformed_requests_logs_none_of_ten_secrets(
    tmp_path: Path, receiver: Receiver
) -> None:
    """Ten secrets the daemon holds (both tokens, the SMTP password, three Basic
    passwords, four signing secrets) are each sent inside a request aiohttp refuses, at
    debug level: no 8-character piece of any of them reaches the log."""
    # Random-looking, so that no 8-character piece of them is a word the log holds anyway.
    smtp_password = "Zr9Wm4Tx7Kq2Pv5Ln8Hd"
    config = fast_config(tmp_path, extra=f'[notify]\nsmtp_password = "{smtp_password}"\n')
    config.write_text(config.read_text().replace('level = "info"', 'level = "debug"'))
    daemon = DaemonProcess(config)
    secrets = [ADMIN_TOKEN, INGEST_TOKEN, smtp_password]
    try:
        await daemon.start_async()
        async with aiohttp.ClientSession() as session:
            for number in range(3):
                password = f"Hv8Jd3Lp{number}Nq1Xc6Bt"
                auth = {"type": "basic", "username": "lms", "password": password}
                await create_webhook(session, daemon.url, receiver.url, ["CI_STATS"], auth=auth)
                secrets.append(password)
            for _ in range(2):
                signed = await create_webhook(
                    session, daemon.url, receiver.url, ["CI_STATS"], auth={"type": "signature"}
                )
                path = f"/v1/webhooks/{signed['id']}/secret"
                _, current = await call(session, daemon.url, "GET", path)
                _, rotated = await call(session, daemon.url, "POST", path + "/rotate")
                secrets += [current["secret"], rotated["secret"]]
        assert len(set(secrets)) == 10
        for secret in secrets:
            for head in (
                b"GET /v1/status HTTP/1.1\r\nHost: x\r\nX-Secret: %s\x01\r\n\r\n",
                b"GET /v1/status HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer %s\x00\r\n\r\n",
            ):
                reader, writer = await asyncio.open_connection("127.0.0.1", daemon.port)
                writer.write(head % secret.encode())
                await reader.read()
                writer.close()
        assert await daemon.stop_async() == 0
    finally:
        daemon.stop()
    log = daemon.log()
    assert sum(e["event"].startswith("malformed request") for e in daemon.log_events()) == 20
    for secret in secrets:
        key = secret.removeprefix("whsec_")
        leaked = sorted(piece for piece in _pieces(key) if piece in log)
        assert not leaked, (secret[:6], leaked)


async def test_a_client_leaving_mid_body_leaves_no_password_in_the_log(
    tmp_path: Path, receiver: Receiver
) -> None:
    """An admin client that disconnects halfway through a create with a Basic password:
    the handler's failed read used to be logged with the frames' locals, the partial
    body among them."""
    config = fast_config(tmp_path)
    config.write_text(config.read_text().replace('level = "info"', 'level = "debug"'))
    daemon = DaemonProcess(config)
    password = "Qm3Vx8Rt5Lw2Np7Kc"
    body = json.dumps(
        {
            "name": "half sent",
            "targetUrl": receiver.url,
            "events": ["CI_STATS"],
            "auth": {"type": "basic", "username": "lms", "password": password},
        }
    ).encode()
    try:
        await daemon.start_async()
        for cut in (len(body) // 2, len(body) - 2):
            _, writer = await asyncio.open_connection("127.0.0.1", daemon.port)
            writer.write(
                b"POST /v1/webhooks HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                b"Authorization: Bearer %s\r\nContent-Length: %d\r\n\r\n%s"
                % (ADMIN_TOKEN.encode(), len(body), body[:cut])
            )
            await writer.drain()
            writer.transport.abort()  # gone mid-body
        status, listed = await asyncio.to_thread(daemon.request, "GET", "/v1/webhooks")
        assert status == 200 and listed["webhooks"] == []  # nothing half-stored
        assert await daemon.stop_async() == 0
    finally:
        daemon.stop()
    log = daemon.log()
    for secret in (password, ADMIN_TOKEN):
        leaked = sorted(piece for piece in _pieces(secret) if piece in log)
        assert not leaked, leaked
