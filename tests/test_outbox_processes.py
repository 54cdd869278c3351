"""The Auth0 dispatcher in real ``idstore`` processes against the Auth0
emulator: ``idstore worker --until-idle --job outbox`` delivers what is due
and exits; a worker SIGKILLed in the middle of its deliveries, then another
one, leave Auth0 with exactly the store's users and no account created
twice; ``idstore outbox status`` and ``retry`` from the command line.

The processes run against the test's database; the test polls (bounded by a
deadline), never sleeps for a fixed time.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import func, select, update
from sqlalchemy.ext.asyncio import AsyncEngine

from identity_store import users
from identity_store.actor import Actor
from identity_store.database import create_session_factory
from identity_store.models import OutboxEntry, OutboxLease, User
from identity_store.store import Store
from identity_store.users import UserInput
from tests.emulators.auth0 import Auth0Emulator

IDSTORE = [sys.executable, "-m", "idstore"]
ACTOR = Actor(name="test", request_id="req-proc")
DEADLINE_S = 60.0


def _env(url: str, auth0: Auth0Emulator, **extra: str) -> dict[str, str]:
    return {
        **os.environ,
        "DATABASE_URL": url,
        **auth0.settings_env(),
        "IDSTORE_AUTH0_REQUESTS_PER_SECOND": "1000",
        "IDSTORE_AUTH0_BURST": "100",
        "IDSTORE_LOG_LEVEL": "INFO",
        **extra,
    }


def _start(args: list[str], env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    with log.open("wb") as out:
        return subprocess.Popen(args, env=env, stdout=out, stderr=subprocess.STDOUT)


async def _seed(store: Store, n: int, prefix: str) -> list[str]:
    ids = []
    for i in range(n):
        name = f"{prefix}{i:03}@example.com"
        data = UserInput(
            user_name=name,
            columns={"idp_username": f"{prefix}{i}", "idp_cloud_username": name},
            multi_values=[{"attribute": "emails", "value": name, "primary": True}],
        )
        ids.append((await users.create_user(store, data, ACTOR)).user.id)
    return ids


async def _count(engine: AsyncEngine, statement: Any) -> int:
    async with engine.connect() as connection:
        return int((await connection.execute(statement)).scalar() or 0)


async def _pending(engine: AsyncEngine) -> int:
    return await _count(
        engine, select(func.count()).select_from(OutboxEntry).where(OutboxEntry.status != "DONE")
    )


async def _assert_in_sync(engine: AsyncEngine, auth0: Auth0Emulator, ids: list[str]) -> None:
    assert auth0.duplicates() == {}
    assert await _pending(engine) == 0
    async with engine.connect() as connection:
        kept = dict((await connection.execute(select(User.id, User.auth_user_id))).all())
    assert {kept[i] for i in ids} == {f"auth0|{i}" for i in ids}
    assert set(auth0.users) == {f"auth0|{i}" for i in ids}


async def test_worker_until_idle_delivers_what_is_due_and_exits(
    store: Store, engine: AsyncEngine, auth0: Auth0Emulator
) -> None:
    ids = await _seed(store, 6, "idle")
    result = await asyncio.to_thread(
        subprocess.run,
        [*IDSTORE, "worker", "--until-idle", "--job", "outbox"],
        env=_env(store.settings.database_url, auth0),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    assert "outbox:auth0: 6 users delivered (6 rows; created 6), 0 to retry, 0 dead letters" in (
        result.stdout
    )
    await _assert_in_sync(engine, auth0, ids)


async def test_a_worker_killed_mid_batch_then_another_one(
    store: Store, engine: AsyncEngine, auth0: Auth0Emulator, tmp_path: Path
) -> None:
    ids = await _seed(store, 40, "killed")
    auth0.delay = 0.05  # deliveries take long enough to be killed among them
    env = _env(
        store.settings.database_url,
        auth0,
        IDSTORE_OUTBOX_LEASE_SECONDS="2",
        IDSTORE_OUTBOX_BATCH_SIZE="8",
        IDSTORE_OUTBOX_CONCURRENCY="4",
    )
    log = tmp_path / "killed.log"
    worker = _start([*IDSTORE, "worker", "--job", "outbox"], env, log)
    try:
        deadline = time.monotonic() + DEADLINE_S
        while len(auth0.users) < 10:
            assert time.monotonic() < deadline, log.read_text()
            assert worker.poll() is None, log.read_text()
            await asyncio.sleep(0.005)
        worker.send_signal(signal.SIGKILL)
        worker.wait(timeout=30)
    finally:
        if worker.poll() is None:
            worker.kill()
    created_before = len(auth0.users)
    assert created_before < len(ids)  # killed in the middle
    async with create_session_factory(engine)() as session:
        held = await session.scalar(select(func.count()).select_from(OutboxLease))
        # The killed worker's leases run out (2 s); make that now rather than wait.
        await session.execute(update(OutboxLease).values(locked_until=func.now()))
        await session.commit()
    assert held
    auth0.delay = 0.0
    result = await asyncio.to_thread(
        subprocess.run,
        [*IDSTORE, "worker", "--until-idle", "--job", "outbox"],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    await _assert_in_sync(engine, auth0, ids)


async def test_outbox_status_and_retry_from_the_command_line(
    store: Store, engine: AsyncEngine, auth0: Auth0Emulator
) -> None:
    ids = await _seed(store, 2, "cli")
    auth0.fail_next(2, 400, only="POST /api/v2/users")
    env = _env(store.settings.database_url, auth0)

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [*IDSTORE, *args], env=env, capture_output=True, text=True, timeout=120, check=False
        )

    first = await asyncio.to_thread(run, "worker", "--until-idle", "--job", "outbox")
    assert "0 users delivered" in first.stdout
    assert "2 dead letters" in first.stdout
    status = await asyncio.to_thread(run, "outbox", "status", "--json")
    assert status.returncode == 0, status.stderr
    shown = json.loads(status.stdout)
    assert [(t["target"], t["dead"], t["pending"]) for t in shown["targets"]] == [("auth0", 2, 0)]
    dead_ids = sorted(d["id"] for d in shown["deadLetters"])
    assert {d["requestId"] for d in shown["deadLetters"]} == {"req-proc"}
    assert all(d["lastError"] for d in shown["deadLetters"])
    text = await asyncio.to_thread(run, "outbox", "status")
    assert "auth0: 0 pending" in text.stdout
    assert "2 dead letters" in text.stdout
    # One back by id, a row that is no dead letter refused, then every one.
    one = await asyncio.to_thread(run, "outbox", "retry", str(dead_ids[0]), "999999")
    assert one.returncode == 1
    assert "1 dead letters put back" in one.stdout
    assert "not dead letters (left alone): 999999" in one.stdout
    rest = await asyncio.to_thread(run, "outbox", "retry", "--dead")
    assert "1 dead letters put back" in rest.stdout
    bad = await asyncio.to_thread(run, "outbox", "retry", "12; DROP TABLE users")
    assert bad.returncode == 2
    assert "not an outbox row id" in bad.stderr
    none = await asyncio.to_thread(run, "outbox", "retry")
    assert none.returncode == 2
    delivered = await asyncio.to_thread(run, "worker", "--until-idle", "--job", "outbox")
    assert "2 users delivered" in delivered.stdout
    shown_rows = await asyncio.to_thread(run, "outbox", "show", ids[0], "--json")
    [row] = json.loads(shown_rows.stdout)
    assert (row["status"], row["outcome"]) == ("DONE", "created")
    await _assert_in_sync(engine, auth0, ids)


@pytest.mark.parametrize(
    "bad",
    ["0", "-1", "1.5", "12; DROP TABLE users", "\u0661\u0662", "9" * 20, str(2**63), " 7"],
)
def test_retry_refuses_what_is_no_row_id(bad: str, capsys: pytest.CaptureFixture[str]) -> None:
    from idstore.cli import main

    with pytest.raises(SystemExit) as exit_:
        main(["outbox", "retry", bad])
    assert exit_.value.code == 2
    assert "not an outbox row id" in capsys.readouterr().err


def test_retry_takes_at_most_max_ids(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    from idstore.cli import main
    from idstore.outbox_commands import MAX_IDS

    monkeypatch.setenv("DATABASE_URL", f"sqlite+aiosqlite:///{tmp_path}/never-opened.db")
    assert main(["outbox", "retry", *map(str, range(1, MAX_IDS + 2))]) == 2
    assert f"at most {MAX_IDS} ids" in capsys.readouterr().err
    assert not (tmp_path / "never-opened.db").exists()  # refused before any database
