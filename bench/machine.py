"""What the run measured on: the machine, the packages, the commit."""

from __future__ import annotations

import asyncio
import os
import platform
import subprocess
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


def machine_info(database_url: str) -> dict[str, Any]:
    info: dict[str, Any] = {
        "nproc": os.cpu_count(),
        "python": platform.python_version(),
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
