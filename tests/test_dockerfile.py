"""The Dockerfile, checked without a Docker engine: its base image, that it
installs from the lock, and its HEALTHCHECK run as Docker runs it
(``/bin/sh -c``) against a real server."""

from __future__ import annotations

import os
import re
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest


def _instructions(repo_root: Path) -> list[tuple[str, str]]:
    """(instruction, arguments) of each Dockerfile line, continuations joined."""
    text = (repo_root / "Dockerfile").read_text()
    joined = re.sub(r"\\\n", " ", text)
    found = []
    for line in joined.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            instruction, _, arguments = line.partition(" ")
            found.append((instruction.upper(), arguments.strip()))
    return found


def test_every_stage_is_python_3_11_like_the_tests(repo_root: Path) -> None:
    """The image runs the Python the suite, mypy and the lock files target."""
    images = [args.split()[0] for name, args in _instructions(repo_root) if name == "FROM"]
    assert images == ["python:3.11-slim", "python:3.11-slim"]


def test_the_image_installs_the_locked_versions(repo_root: Path) -> None:
    """The build resolves every dependency under the runtime lock, and the
    final stage installs only what the build stage fetched."""
    runs = [args for name, args in _instructions(repo_root) if name == "RUN"]
    copies = [args for name, args in _instructions(repo_root) if name == "COPY"]
    assert any("requirements.txt" in args.split() for args in copies)
    assert any("pip wheel" in run and "-c requirements.txt" in run for run in runs)
    assert any("pip install" in run and "--no-index" in run for run in runs)


def _healthcheck(repo_root: Path) -> str:
    (arguments,) = [args for name, args in _instructions(repo_root) if name == "HEALTHCHECK"]
    _, _, command = arguments.partition(" CMD ")
    assert command
    assert not command.startswith("["), "expected the shell form"
    return command


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextmanager
def _serving(database: Path) -> Iterator[dict[str, str]]:
    """``idstore serve --no-migrate`` on ``database``; yields its environment."""
    env = {
        **os.environ,
        "DATABASE_URL": f"sqlite+aiosqlite:///{database}",
        "PORT": str(_free_port()),
        "IDSTORE_DEV_TOKEN": "false",
    }
    process = subprocess.Popen(
        [sys.executable, "-m", "idstore", "serve", "--no-migrate"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                httpx.get(f"http://127.0.0.1:{env['PORT']}/healthz", timeout=2)
                break
            except httpx.TransportError:
                if time.monotonic() > deadline or process.poll() is not None:
                    pytest.fail("server did not start within 30 s")
                time.sleep(0.2)
        yield env
    finally:
        process.terminate()
        process.wait(timeout=15)


def _run_healthcheck(command: str, env: dict[str, str]) -> int:
    # The image's python is the interpreter of the test run.
    env = {**env, "PATH": f"{Path(sys.executable).parent}:{env.get('PATH', '')}"}
    return subprocess.run(
        ["/bin/sh", "-c", command], env=env, capture_output=True, timeout=30, check=False
    ).returncode


def test_the_healthcheck_passes_when_ready_and_fails_on_a_database_behind(
    repo_root: Path, tmp_path: Path
) -> None:
    """The HEALTHCHECK asks ``/readyz``: healthy on a migrated database,
    unhealthy (exit 1, as Docker expects) on one never migrated, which
    ``/healthz`` would call healthy."""
    command = _healthcheck(repo_root)
    migrated, empty = tmp_path / "migrated.db", tmp_path / "empty.db"
    subprocess.run(
        [sys.executable, "-m", "idstore", "migrate"],
        env={**os.environ, "DATABASE_URL": f"sqlite+aiosqlite:///{migrated}"},
        capture_output=True,
        timeout=60,
        check=True,
    )
    with _serving(migrated) as env:
        assert _run_healthcheck(command, env) == 0
    with _serving(empty) as env:
        assert httpx.get(f"http://127.0.0.1:{env['PORT']}/healthz", timeout=2).status_code == 200
        assert _run_healthcheck(command, env) == 1
