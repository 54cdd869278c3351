"""The ``idstore`` command, run as a real process against real databases."""

from __future__ import annotations

import os
import socket
import stat
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from identity_store import tokens
from identity_store.database import create_session_factory
from identity_store.settings import Settings

IDSTORE = [sys.executable, "-m", "idstore"]


def _run(args: list[str], url: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "DATABASE_URL": url}
    return subprocess.run(
        [*IDSTORE, *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        cwd=cwd,
        check=False,
    )


@pytest.mark.parametrize("module", ["idstore", "idstore.cli"])
def test_the_command_runs_as_python_dash_m_of_the_package_and_of_its_cli_module(
    module: str,
) -> None:
    """``python -m idstore`` and ``python -m idstore.cli`` are both the ``idstore`` command."""
    result = subprocess.run(
        [sys.executable, "-m", module, "--help"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("usage: idstore ")
    assert "{serve,migrate,token,worker,jobs,user,outbox,auth0,import}" in result.stdout


async def test_token_commands_issue_list_and_revoke(settings: Settings, engine: Any) -> None:
    """``token create`` prints only the secret; it authenticates until ``token revoke``."""
    created = _run(
        ["token", "create", "--name", "entra", "--scope", "scim:write"], settings.database_url
    )
    assert created.returncode == 0, created.stderr
    secret = created.stdout.strip()
    assert "\n" not in secret
    assert secret.startswith("idst_")

    listed = _run(["token", "list"], settings.database_url)
    assert "entra" in listed.stdout
    assert secret not in listed.stdout

    async with create_session_factory(engine)() as session:
        assert await tokens.authenticate(session, secret) is not None

    revoked = _run(["token", "revoke", "entra"], settings.database_url)
    assert revoked.returncode == 0, revoked.stderr
    async with create_session_factory(engine)() as session:
        assert await tokens.authenticate(session, secret) is None


async def test_token_create_refuses_an_unknown_scope(settings: Settings, engine: Any) -> None:
    result = _run(["token", "create", "--name", "x", "--scope", "root"], settings.database_url)
    assert result.returncode == 2
    assert "unknown scope" in result.stderr
    assert result.stdout == ""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_serve_on_an_empty_sqlite_default_migrates_and_prints_a_dev_token(
    tmp_path: Path, repo_root: Path
) -> None:
    """``idstore serve`` with no DATABASE_URL creates the SQLite file in the working
    directory, prints a working token, and answers ``/healthz`` and ``/readyz``."""
    port = _free_port()
    env = {k: v for k, v in os.environ.items() if k != "DATABASE_URL"}
    env["PORT"] = str(port)
    process = subprocess.Popen(
        [*IDSTORE, "serve"],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    try:
        assert process.stdout is not None
        banner = process.stdout.readline()
        assert banner.startswith("Development token"), banner
        secret = banner.rsplit(" ", 1)[1].strip()
        deadline = time.monotonic() + 30
        while True:
            try:
                health = httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=2)
                break
            except httpx.TransportError:
                if time.monotonic() > deadline:
                    pytest.fail("server did not start within 30 s")
                time.sleep(0.2)
        assert health.status_code == 200
        assert httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=2).status_code == 200
        assert (tmp_path / "idstore.db").is_file()
        assert secret.startswith("idst_")
    finally:
        process.terminate()
        process.wait(timeout=15)
        if process.stdout is not None:
            process.stdout.close()


def _closed_port() -> int:
    # The socket is closed again on return: nothing listens on that port.
    return _free_port()


def _postgres_url(**parts: Any) -> str:
    from sqlalchemy.engine import make_url

    from tests.conftest import postgres_server_url

    url = make_url(postgres_server_url()).set(**parts)
    return url.render_as_string(hide_password=False)


@pytest.mark.parametrize(
    ("case", "reason"),
    [
        pytest.param(
            "database",
            "does not exist",
            marks=pytest.mark.postgresql,
            id="a-database-that-does-not-exist",
        ),
        pytest.param("server", "Connect call failed", id="an-unreachable-server"),
        pytest.param(
            "credentials",
            'role "idstore_no_such_role" does not exist',
            marks=pytest.mark.postgresql,
            id="bad-credentials",
        ),
        pytest.param("sqlite", "unable to open database file", id="a-sqlite-file-it-cannot-open"),
    ],
)
def test_migrate_says_in_one_line_why_it_cannot_connect(
    case: str, reason: str, tmp_path: Path
) -> None:
    """``idstore migrate`` that cannot connect prints one line on stderr (the
    URL without its password, and why) and exits 1, not a traceback."""
    url = {
        "database": lambda: _postgres_url(database="idstore_no_such_database"),
        "server": lambda: _postgres_url(host="127.0.0.1", port=_closed_port()),
        "credentials": lambda: _postgres_url(username="idstore_no_such_role", password="s3cret-pw"),
        "sqlite": lambda: f"sqlite+aiosqlite:///{tmp_path}/no/such/directory/idstore.db",
    }[case]()
    result = _run(["migrate"], url)
    assert result.returncode == 1, result.stderr
    assert result.stdout == ""
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("idstore: cannot connect to the database "), lines[0]
    assert reason in lines[0]
    assert "s3cret-pw" not in result.stderr


@pytest.mark.parametrize(
    "args",
    [
        ["token", "list"],
        ["token", "create", "--name", "x", "--scope", "admin"],
        ["token", "revoke", "x"],
        ["jobs", "list"],
        ["jobs", "history", "expiry"],
        ["jobs", "run", "expiry"],
        ["user", "show", "01JAAAAAAAAAAAAAAAAAAAAAAA"],
        ["user", "reset", "01JAAAAAAAAAAAAAAAAAAAAAAA"],
    ],
    ids=lambda args: " ".join(args[:2]),
)
def test_a_command_whose_database_is_unreachable_says_so_in_one_line(args: list[str]) -> None:
    """Every command that reads or writes the store answers an unreachable
    server with one line and exit 1 (as ``migrate`` does), never a traceback."""
    result = _run(args, _postgres_url(host="127.0.0.1", port=_closed_port()))
    assert result.returncode == 1, result.stderr
    lines = result.stderr.splitlines()
    assert lines[-1] == "idstore: the store is temporarily unavailable; retry later", lines
    assert "Traceback" not in result.stderr


def _serve_once(cwd: Path) -> str:
    """Start ``idstore serve`` on the SQLite default in ``cwd``, check that its
    dev token lists users, stop it, and return the token it printed."""
    port = _free_port()
    env = {k: v for k, v in os.environ.items() if k != "DATABASE_URL"}
    env["PORT"] = str(port)
    process = subprocess.Popen(
        [*IDSTORE, "serve"],
        cwd=cwd,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    try:
        assert process.stdout is not None
        banner = process.stdout.readline()
        assert banner.startswith("Development token"), banner
        secret = banner.rsplit(" ", 1)[1].strip()
        deadline = time.monotonic() + 30
        while True:
            try:
                users = httpx.get(
                    f"http://127.0.0.1:{port}/scim/v2/Users",
                    headers={"Authorization": f"Bearer {secret}"},
                    timeout=2,
                )
                break
            except httpx.TransportError:
                if time.monotonic() > deadline:
                    pytest.fail("server did not start within 30 s")
                time.sleep(0.2)
        assert users.status_code == 200, users.text
    finally:
        process.terminate()
        process.wait(timeout=15)
        if process.stdout is not None:
            process.stdout.close()
    return secret


def test_the_dev_token_printed_by_serve_survives_a_restart(tmp_path: Path) -> None:
    """The token a user copied from ``make run`` still works after a restart:
    the second start prints the same one, kept beside the database (0600)."""
    first = _serve_once(tmp_path)
    second = _serve_once(tmp_path)
    assert second == first
    kept = tmp_path / "idstore.db.dev-token"
    assert kept.read_text().strip() == first
    assert stat.S_IMODE(kept.stat().st_mode) == 0o600
