"""What the run measured on: the machine, the packages, the commit."""

from __future__ import annotations

import asyncio
import os
import platform
import subprocess
import sys
import sysconfig
from pathlib import Path
from typing import Any

from sqlalchemy.engine import make_url

ROOT = Path(__file__).resolve().parent.parent


def git_state() -> dict[str, Any]:
    """The commit measured and the server files changed since (read-only git)."""
    try:
        head = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
        ).stdout.strip()
        status = subprocess.run(
            [
                "git",
                "status",
                "--porcelain",
                "--",
                "idstore",
                "scim_server",
                "identity_store",
                "identity_sync",
            ],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
        ).stdout.splitlines()
    except (OSError, subprocess.SubprocessError):
        return {"head": None, "changed": []}
    return {"head": head, "changed": [line[3:] for line in status]}


def interpreter_build() -> str:
    """How the interpreter running the bench (and the server, from the same
    virtualenv) was built, as far as it tells: a plain build running from a
    shared ``libpython`` (pyenv's default) spends some 20-30 % more CPU on
    the same Python code than a PGO+LTO build linked statically or built
    with ``--enable-optimizations`` (the official Docker images',
    Debian's), docs/benchmarks.md."""
    config = str(sysconfig.get_config_var("CONFIG_ARGS") or "")
    flags = [flag for flag in ("--enable-optimizations", "--with-lto") if flag in config]
    try:
        with open("/proc/self/maps") as maps:
            shared = "libpython" in maps.read()
    except OSError:
        shared = None
    parts = [sys.executable]
    if shared is not None:
        parts.append("libpython shared" if shared else "libpython linked in")
    parts += flags  # Debian's PGO+LTO build does not show it here: its rules pass it
    return ", ".join(parts)


def machine_info(database_url: str) -> dict[str, Any]:
    info: dict[str, Any] = {
        "nproc": os.cpu_count(),
        "python": platform.python_version(),
        "python_build": interpreter_build(),
        "platform": platform.platform(),
    }
    try:
        with open("/proc/meminfo") as fh:
            info["memory_gib"] = round(int(fh.readline().split()[1]) / 2**20, 1)
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith("model name"):
                    info["cpu"] = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    info["git"] = git_state()
    if make_url(database_url).get_backend_name() == "postgresql":
        import asyncpg  # type: ignore[import-untyped]

        async def version() -> str:
            # The maintenance database: the bench database may not exist yet.
            dsn = make_url(database_url).set(drivername="postgresql", database="postgres")
            conn = await asyncpg.connect(dsn.render_as_string(hide_password=False))
            try:
                return str(await conn.fetchval("SHOW server_version"))
            finally:
                await conn.close()

        info["postgresql"] = asyncio.run(version())
    from importlib.metadata import version as pkg_version

    for package in ("uvicorn", "starlette", "sqlalchemy", "asyncpg", "scim2-models", "uvloop"):
        try:
            info[package] = pkg_version(package)
        except Exception:
            info[package] = None
    return info
