"""``idstore.asgi.app_factory``, the application uvicorn serves: it leaves
what it imported and built out of the garbage collector's sight
(``gc.freeze``), so that full collections stop walking the libraries'
objects while requests wait. Run in a child process: freezing this one
would keep the suite's own garbage forever."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

PROBE = """
import gc, json
from idstore.asgi import app_factory
before = gc.get_freeze_count()
app = app_factory()
after, tracked = gc.get_freeze_count(), len(gc.get_objects())
print(json.dumps({"before": before, "after": after, "tracked": tracked}))
"""


def test_the_factory_freezes_what_it_built(tmp_path: Path, repo_root: Path) -> None:
    env = {**os.environ, "DATABASE_URL": f"sqlite+aiosqlite:///{tmp_path / 'probe.db'}"}
    result = subprocess.run(
        [sys.executable, "-c", PROBE],
        cwd=repo_root,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    counts = json.loads(result.stdout.strip().splitlines()[-1])
    assert counts["before"] == 0
    # Every module of FastAPI, pydantic, SQLAlchemy and scim2-models: far
    # more objects than the collector still tracks afterwards.
    assert counts["after"] > 100_000
    assert counts["tracked"] < counts["after"] // 10
