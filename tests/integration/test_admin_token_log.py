"""The generated admin token: said to be generated only on the start that made it."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

from structlog.testing import capture_logs

from almhookd.auth import ensure_admin_token
from almhookd.config import Config, ListenAddress, parse_config
from almhookd.service.daemon import serve


def config_without_token(directory: Path) -> Config:
    return parse_config(
        f'[server]\nlisten = "127.0.0.1:0"\n[storage]\npath = "{directory / "almhookd.db"}"\n',
        env={},
    )


async def start_and_stop(config: Config) -> list[dict[str, Any]]:
    """One start of the whole daemon up to ready, then a clean stop; its log lines."""
    stop = asyncio.Event()
    ready: asyncio.Future[list[ListenAddress]] = asyncio.get_running_loop().create_future()

    def on_ready(addresses: list[ListenAddress]) -> None:
        ready.set_result(addresses)
        stop.set()

    with capture_logs() as logs:
        await serve(config, shutdown_trigger=stop.wait, on_ready=on_ready)
    assert ready.done()
    return [dict(line) for line in logs]


def test_the_token_is_generated_once_then_read(tmp_path: Path) -> None:
    config = config_without_token(tmp_path)
    first = ensure_admin_token(config)
    again = ensure_admin_token(config)
    assert first.generated and not again.generated
    assert first.file == again.file == tmp_path / "admin.token"
    assert again.secret.reveal() == first.secret.reveal()


async def test_only_the_first_start_says_the_token_was_generated(tmp_path: Path) -> None:
    config = config_without_token(tmp_path)
    token_file = str(tmp_path / "admin.token")
    first = [line for line in await start_and_stop(config) if line["event"].startswith("auth.")]
    second = [line for line in await start_and_stop(config) if line["event"].startswith("auth.")]
    token = (tmp_path / "admin.token").read_text().strip()
    assert [(line["path"], line["generated"]) for line in first] == [(token_file, True)]
    assert "generated" in first[0]["hint"]
    assert [(line["path"], line["generated"]) for line in second] == [(token_file, False)]
    assert "generated" not in second[0]["hint"] and "read from this file" in second[0]["hint"]
    assert all(token not in str(line) for line in first + second)
