"""Import direction between the layers (../shared/STYLE.md, issue 9), checked with ``ast``.

- ``identity_store`` imports neither the server, the sync, the composition
  root, nor any HTTP or SCIM wire library.
- ``identity_sync`` never imports the server.
- ``scim_server`` never imports the sync, never SQLAlchemy or asyncpg, and
  of the store only its public API: the use cases, the open store, the
  errors and the plain types they take and return.
- SQLAlchemy is the store's business alone.
- ``idstore`` is the composition root: it may import every layer, and no
  layer imports it. It wires; it runs no SQL and touches no model.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

FORBIDDEN = {
    "identity_store": {
        "scim_server",
        "identity_sync",
        "idstore",
        "starlette",
        "httpx",
        "scim2_models",
        "uvicorn",
    },
    "identity_sync": {"scim_server", "idstore", "starlette", "scim2_models"},
    "scim_server": {"identity_sync", "idstore", "sqlalchemy", "asyncpg"},
    "idstore": {"sqlalchemy", "asyncpg"},
}
"""Top-level packages each layer may not import."""

STORE_PUBLIC = frozenset(
    {
        "identity_store",
        "identity_store.accounts",
        "identity_store.actor",
        "identity_store.attributes",
        "identity_store.csv_files",
        "identity_store.deprovisioning",
        "identity_store.errors",
        "identity_store.filtering",
        "identity_store.filtering.terms",
        "identity_store.groups",
        "identity_store.import_rows",
        "identity_store.imports",
        "identity_store.job_runs",
        "identity_store.jobs",
        "identity_store.lifecycle_admin",
        "identity_store.outbox",
        "identity_store.password_tickets",
        "identity_store.paging",
        "identity_store.profiles",
        "identity_store.rbac",
        "identity_store.resolver",
        "identity_store.settings",
        "identity_store.store",
        "identity_store.tokens",
        "identity_store.user_groups",
        "identity_store.user_profiles",
        "identity_store.users",
    }
)
"""The store's public API: what the server and the sync may import."""

PUBLIC_API_USERS = ("scim_server", "identity_sync")

COMPOSITION_ROOT_FORBIDDEN = ("sqlalchemy", "identity_store.models")
"""What ``idstore/`` must not import, as dotted prefixes: SQL belongs in the
store's functions, and so do its models."""


def _modules(path: Path) -> set[str]:
    """Every absolute module a file imports, dotted (``from a.b import c``: ``a.b``)."""
    tree = ast.parse(path.read_text(), filename=str(path))
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.add(node.module)
            if node.module == "identity_store":  # from identity_store import users
                found.update(f"identity_store.{alias.name}" for alias in node.names)
    return found


def _imports(path: Path) -> set[str]:
    return {name.split(".")[0] for name in _modules(path)}


def _violations(repo_root: Path) -> tuple[int, list[str]]:
    violations = []
    checked = 0
    for package, forbidden in FORBIDDEN.items():
        for path in sorted((repo_root / package).rglob("*.py")):
            checked += 1
            where = path.relative_to(repo_root)
            bad = _imports(path) & forbidden
            if bad:
                violations.append(f"{where} imports {sorted(bad)}")
            if package in PUBLIC_API_USERS:
                private = {
                    m
                    for m in _modules(path)
                    if m.startswith("identity_store") and m not in STORE_PUBLIC
                }
                if private:
                    violations.append(f"{where} imports store internals {sorted(private)}")
    return checked, violations


def test_layers_import_only_downwards(repo_root: Path) -> None:
    """No layer imports upwards or sideways, and the server sees only the store's public API."""
    checked, violations = _violations(repo_root)
    assert checked >= 30
    assert violations == []


def test_sqlalchemy_is_imported_only_by_the_store(repo_root: Path) -> None:
    """Outside ``identity_store`` (and its migrations), no package imports SQLAlchemy."""
    offenders = [
        str(path.relative_to(repo_root))
        for package in ("scim_server", "identity_sync", "idstore")
        if (repo_root / package).is_dir()
        for path in sorted((repo_root / package).rglob("*.py"))
        if _imports(path) & {"sqlalchemy", "asyncpg"}
    ]
    assert offenders == []


def test_the_composition_root_runs_no_sql_and_touches_no_model(repo_root: Path) -> None:
    """``idstore/`` imports neither SQLAlchemy nor ``identity_store.models``: the
    commands call the store's functions."""
    paths = sorted((repo_root / "idstore").rglob("*.py"))
    assert {path.name for path in paths} >= {"__init__.py", "__main__.py", "asgi.py", "cli.py"}
    violations = [
        f"{path.relative_to(repo_root)} imports {module}"
        for path in paths
        for module in sorted(_modules(path))
        if any(module == bad or module.startswith(f"{bad}.") for bad in COMPOSITION_ROOT_FORBIDDEN)
    ]
    assert violations == []


def test_filters_cross_the_layer_line_as_a_store_neutral_tree(repo_root: Path) -> None:
    """scim_server/filters.py reads SCIM filters without SQL or the store's models;
    the store's filter tree imports nothing but the standard library."""
    scim_side = _modules(repo_root / "scim_server" / "filters.py")
    assert not {m for m in scim_side if m.split(".")[0] == "sqlalchemy"}
    assert not {m for m in scim_side if m.startswith("identity_store.models")}
    tree = _modules(repo_root / "identity_store" / "filtering" / "terms.py")
    assert tree <= {"__future__", "dataclasses", "typing"}


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        (
            "import os\nfrom scim_server.app import create_app\n"
            "def f():\n    import httpx.client\n",
            {"os", "scim_server.app", "httpx.client"},
        ),
        (
            "from identity_store import users, models\n",
            {"identity_store", "identity_store.users", "identity_store.models"},
        ),
        ("from . import sibling\nfrom .errors import X\n", set()),
    ],
)
def test_the_checker_sees_every_import(tmp_path: Path, source: str, expected: set[str]) -> None:
    """The import walk finds absolute imports, nested ones and ``from package import module``."""
    module = tmp_path / "m.py"
    module.write_text(source)
    assert _modules(module) == expected


def test_the_checker_reports_a_store_internal(tmp_path: Path) -> None:
    """A server module importing ``identity_store.models`` is reported as a violation."""
    package = tmp_path / "scim_server"
    package.mkdir()
    (package / "handler.py").write_text("from identity_store.models import User\n")
    _, violations = _violations(tmp_path)
    assert violations == [
        "scim_server/handler.py imports store internals ['identity_store.models']"
    ]
