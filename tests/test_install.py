"""The package as users install it: a wheel in a fresh virtualenv, run from
a directory that holds nothing of the source tree."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import sysconfig
import time
from pathlib import Path

import httpx
import pytest

SOURCE_IGNORED = shutil.ignore_patterns(
    ".venv", ".git", "*.egg-info", "build", "dist", "__pycache__", ".*_cache", "*.db*"
)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _check(args: list[str], **kwargs: object) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(
        args, capture_output=True, text=True, timeout=120, check=False, **kwargs
    )  # type: ignore[call-overload]
    assert result.returncode == 0, f"{args}:\n{result.stdout}\n{result.stderr}"
    return result  # type: ignore[no-any-return]


@pytest.fixture(scope="module")
def installed(repo_root: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The ``bin`` directory of a fresh virtualenv holding the project's wheel.

    The wheel is built from a copy of the source (without build isolation, so
    no network). Its dependencies come from the test run's own environment
    through a ``.pth`` line: a path listed there is put on ``sys.path`` but its
    own ``.pth`` files are not run, so the source checkout's editable install
    stays invisible and ``idstore`` can only be the wheel's.
    """
    base = tmp_path_factory.mktemp("install")
    source, wheels, venv = base / "source", base / "wheels", base / "venv"
    shutil.copytree(repo_root, source, ignore=SOURCE_IGNORED)
    _check(
        [
            sys.executable,
            *("-m", "pip", "wheel", "--quiet", "--no-deps", "--no-build-isolation"),
            *("--wheel-dir", str(wheels), str(source)),
        ]
    )
    _check([sys.executable, "-m", "venv", "--without-pip", str(venv)])
    python = venv / "bin" / "python"
    site = _check(
        [str(python), "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"]
    ).stdout.strip()
    Path(site, "test-run-dependencies.pth").write_text(sysconfig.get_path("purelib") + "\n")
    (wheel,) = wheels.glob("idstore-*.whl")
    _check(
        [
            sys.executable,
            *("-m", "pip", "--python", str(python), "install", "--quiet", "--no-deps"),
            str(wheel),
        ]
    )
    return venv / "bin"


def test_an_installed_wheel_migrates_and_serves_from_any_directory(
    installed: Path, tmp_path: Path
) -> None:
    """``idstore migrate`` and ``idstore serve`` of a wheel installed in a fresh
    virtualenv work from a directory with no ``alembic.ini`` nor ``migrations/``."""
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    database = tmp_path / "data" / "store.db"
    database.parent.mkdir()
    port = _free_port()
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith(("IDSTORE_", "PYTHON"))},
        "DATABASE_URL": f"sqlite+aiosqlite:///{database}",
        "PORT": str(port),
        "IDSTORE_DEV_TOKEN": "false",
    }
    where = _check(
        [str(installed / "python"), "-c", "import identity_store; print(identity_store.__file__)"],
        cwd=elsewhere,
        env=env,
    ).stdout
    assert where.startswith(str(installed.parent)), where

    migrated = _check([str(installed / "idstore"), "migrate"], cwd=elsewhere, env=env)
    assert "database migrated to head" in migrated.stderr
    assert database.is_file()

    process = subprocess.Popen(
        [str(installed / "idstore"), "serve", "--no-migrate"],
        cwd=elsewhere,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 30
        while True:
            if process.poll() is not None:
                assert process.stderr is not None
                pytest.fail(f"serve exited with {process.returncode}: {process.stderr.read()}")
            try:
                ready = httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=2)
                break
            except httpx.TransportError:
                if time.monotonic() > deadline:
                    pytest.fail("server did not start within 30 s")
                time.sleep(0.2)
        assert ready.status_code == 200, ready.text
        assert ready.json()["database"] == "reachable"
    finally:
        process.terminate()
        process.wait(timeout=15)
        if process.stderr is not None:
            process.stderr.close()
    assert sorted(p.name for p in elsewhere.iterdir()) == []
