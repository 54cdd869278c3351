"""The whole product in one process on SQLite (``make run``): a real
uvicorn serving ``idstore.asgi:app_factory``, whose in-process worker
delivers a SCIM creation to the Auth0 emulator, with Entra's request id in
the outbox row; a server stopped with SIGTERM stops its dispatcher too."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncEngine

from identity_store.models import OutboxEntry
from identity_store.settings import Settings
from tests.emulators.auth0 import Auth0Emulator

on_sqlite = pytest.mark.parametrize("backend", ["sqlite"], indirect=True)
DEADLINE_S = 30.0


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _serve(env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    with log.open("wb") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "idstore", "serve"],
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )


@on_sqlite
async def test_serve_on_sqlite_delivers_scim_changes_to_auth0(
    settings: Settings,
    engine: AsyncEngine,
    tokens_by_scope: dict[str, str],
    auth0: Auth0Emulator,
    tmp_path: Path,
) -> None:
    port = _free_port()
    env = {
        **os.environ,
        "DATABASE_URL": settings.database_url,
        **auth0.settings_env(),
        "IDSTORE_OUTBOX_POLL_SECONDS": "0.1",
        "IDSTORE_LOG_LEVEL": "info",
        "HOST": "127.0.0.1",
        "PORT": str(port),
    }
    log = tmp_path / "serve.log"
    process = _serve(env, log)
    base = f"http://127.0.0.1:{port}"
    headers = {
        "Authorization": f"Bearer {tokens_by_scope['scim:write']}",
        "Content-Type": "application/scim+json",
        "X-Request-Id": "entra-serve-1",
    }
    try:
        async with httpx.AsyncClient(base_url=base, timeout=10) as client:
            deadline = time.monotonic() + DEADLINE_S
            while True:
                try:
                    if (await client.get("/healthz")).status_code == 200:
                        break
                except httpx.TransportError:
                    pass
                assert process.poll() is None, log.read_text()
                assert time.monotonic() < deadline, log.read_text()
                await asyncio.sleep(0.05)
            created = await client.post(
                "/scim/v2/Users",
                json={
                    "schemas": ["urn:ietf:params:scim:schemas:core:2.0:User"],
                    "userName": "served@example.com",
                    "emails": [{"value": "served@example.com", "primary": True}],
                },
                headers=headers,
            )
            assert created.status_code == 201, created.text
            user_id = created.json()["id"]
            while f"auth0|{user_id}" not in auth0.users:
                assert process.poll() is None, log.read_text()
                assert time.monotonic() < deadline, log.read_text()
                await asyncio.sleep(0.05)
            # The account's id reaches the user (SCIM authUserId) once the row is done.
            while True:
                got = (await client.get(f"/scim/v2/Users/{user_id}", headers=headers)).json()
                if "auth0|" in str(got):
                    break
                assert time.monotonic() < deadline, log.read_text()
                await asyncio.sleep(0.05)
    finally:
        process.send_signal(signal.SIGTERM)
        process.wait(timeout=30)
    assert process.returncode in (0, -signal.SIGTERM), log.read_text()  # uvicorn re-raises it
    async with engine.connect() as connection:
        [row] = (await connection.execute(select(OutboxEntry))).all()
    assert (row.status, row.outcome, row.request_id) == ("DONE", "created", "entra-serve-1")
    text = log.read_text()
    assert "outbox dispatcher" in text
    assert "served@example.com" not in text
