"""The peer: python-scim's reference server ``scim2-server`` (PyPI), in memory.

It lives in a virtualenv of its own, ``bench/.peer-venv`` (git-ignored), since
it may pin other versions of scim2-models than the project. The virtualenv is
created on first use with ``python3 -m venv`` and ``pip install scim2-server``.
The server is started as its documentation says::

    scim2-server --hostname 127.0.0.1 --port P --bearer-token T

It is a ``wsgiref`` server with one thread per request that answers HTTP/1.0
and closes every connection; its SCIM base path is ``/v2``.
"""

from __future__ import annotations

import secrets
import subprocess
import sys
from pathlib import Path

from .procs import Server

PEER_DIR = Path(__file__).resolve().parent / ".peer-venv"
PEER_PACKAGE = "scim2-server"
PEER_PREFIX = "/v2"


def peer_executable() -> Path:
    return PEER_DIR / "bin" / "scim2-server"


def ensure_peer(progress: object = print) -> Path | None:
    """The ``scim2-server`` executable, installing it first if needed; ``None``
    (with a message) when it cannot be installed, e.g. without a registry."""
    exe = peer_executable()
    if exe.exists():
        return exe
    say = progress if callable(progress) else print
    say(f"installing {PEER_PACKAGE} into {PEER_DIR} ...")
    python = "python3" if sys.platform != "win32" else sys.executable
    try:
        subprocess.run([python, "-m", "venv", str(PEER_DIR)], check=True, timeout=300)
        subprocess.run(
            [str(PEER_DIR / "bin" / "pip"), "install", "--quiet", PEER_PACKAGE],
            check=True,
            timeout=600,
        )
    except (OSError, subprocess.SubprocessError) as exc:
        say(f"peer unavailable: {exc}")
        return None
    return exe if exe.exists() else None


def peer_version() -> str:
    try:
        out = subprocess.run(
            [
                str(PEER_DIR / "bin" / "python"),
                "-c",
                "import importlib.metadata as m; print(m.version('scim2-server'), "
                "m.version('scim2-models'))",
            ],
            capture_output=True,
            text=True,
            timeout=30,
            check=True,
        )
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    server, models = out.stdout.split()
    return f"scim2-server {server} (scim2-models {models})"


def peer_server(exe: Path, port: int, log_path: Path) -> tuple[Server, str]:
    """The peer as a :class:`Server`, and the bearer token it accepts."""
    token = secrets.token_urlsafe(24)
    # One argument, "--bearer-token=T": a token starting with "-" (one in 64
    # of token_urlsafe's) would otherwise be read as an option, and the peer
    # would refuse to start.
    argv = [str(exe), "--hostname", "127.0.0.1", "--port", str(port), f"--bearer-token={token}"]
    return Server(
        "scim2-server", argv, port, f"{PEER_PREFIX}/ServiceProviderConfig", log_path
    ), token
