"""The suite's own policy on PostgreSQL: deselect and say so locally, fail in CI."""

from __future__ import annotations

import os
import re
import socket
import subprocess
import sys
from pathlib import Path

import pytest
from sqlalchemy.engine import make_url

from tests.conftest import postgres_server_url


def _closed_port_url() -> str:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    # The socket is closed again: nothing listens on that port.
    return f"postgresql+asyncpg://postgres@127.0.0.1:{port}/test"


def _pytest(repo_root: Path, require: bool) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "IDSTORE_TEST_POSTGRES_URL": _closed_port_url()}
    env["IDSTORE_TEST_REQUIRE_POSTGRES"] = "1" if require else "0"
    return subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "tests/test_health.py"],
        cwd=repo_root,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_unreachable_postgres_is_reported_not_skipped(repo_root: Path) -> None:
    """Without the requirement, the PostgreSQL half is deselected and the summary says so."""
    result = _pytest(repo_root, require=False)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "PostgreSQL half NOT run" in result.stdout
    assert "skipped" not in result.stdout
    assert "6 passed" in result.stdout
    assert "SQLite half run (6 tests)" in result.stdout
    assert "PostgreSQL half run against" not in result.stdout


def test_unreachable_postgres_fails_the_run_when_required(repo_root: Path) -> None:
    """With ``IDSTORE_TEST_REQUIRE_POSTGRES=1`` (CI) the run fails before any test."""
    result = _pytest(repo_root, require=True)
    assert result.returncode != 0
    assert "PostgreSQL is required" in result.stdout + result.stderr


@pytest.mark.postgresql
def test_a_run_with_postgres_says_what_ran_on_each_database(repo_root: Path) -> None:
    """When PostgreSQL answers, the summary names the server and counts the
    tests of each half, so a reader knows both halves ran."""
    env = {**os.environ}
    env.pop("IDSTORE_TEST_REQUIRE_POSTGRES", None)
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "tests/test_health.py"],
        cwd=repo_root,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "PostgreSQL half NOT run" not in result.stdout
    server = make_url(postgres_server_url()).render_as_string(hide_password=True)
    ran = re.search(r"PostgreSQL half run against (\S+) \((\d+) tests\)", result.stdout)
    assert ran is not None, result.stdout
    assert ran.group(1) == server
    sqlite = re.search(r"SQLite half run \((\d+) tests\)", result.stdout)
    assert sqlite is not None, result.stdout
    passed = re.search(r"(\d+) passed", result.stdout)
    assert passed is not None
    assert int(ran.group(2)) > 0
    assert int(ran.group(2)) + int(sqlite.group(1)) <= int(passed.group(1))
