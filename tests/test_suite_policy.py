"""The suite's own policy on PostgreSQL: deselect and say so locally, fail in CI."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path


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
    assert "3 passed" in result.stdout


def test_unreachable_postgres_fails_the_run_when_required(repo_root: Path) -> None:
    """With ``IDSTORE_TEST_REQUIRE_POSTGRES=1`` (CI) the run fails before any test."""
    result = _pytest(repo_root, require=True)
    assert result.returncode != 0
    assert "PostgreSQL is required" in result.stdout + result.stderr
