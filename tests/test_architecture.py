"""Import direction between the layers (../shared/STYLE.md), checked with ``ast``.

``idstore`` is the composition root: it may import every layer, and no layer
imports it. It wires; it runs no SQL of its own.
"""

from __future__ import annotations

import ast
from pathlib import Path

FORBIDDEN = {
    "identity_store": {
        "idstore",
        "scim_server",
        "identity_sync",
        "starlette",
        "httpx",
        "scim2_models",
        "uvicorn",
    },
    "identity_sync": {"idstore", "scim_server", "starlette", "scim2_models"},
    "scim_server": {"idstore", "identity_sync"},
    "idstore": {"sqlalchemy"},
}

COMPOSITION_ROOT_FORBIDDEN = ("sqlalchemy", "identity_store.models")
"""What ``idstore/`` must not import, as dotted prefixes: SQL belongs in the store's
functions, and so do its models."""


def _modules(path: Path) -> set[str]:
    """Every module an absolute import names, dotted: ``from a.b import c`` gives
    ``a.b`` and ``a.b.c`` (``c`` may be a submodule)."""
    tree = ast.parse(path.read_text(), filename=str(path))
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.add(node.module)
            found.update(f"{node.module}.{alias.name}" for alias in node.names)
    return found


def _imports(path: Path) -> set[str]:
    """The top-level packages an absolute import names."""
    return {module.split(".")[0] for module in _modules(path)}


def test_layers_import_only_downwards(repo_root: Path) -> None:
    """The store imports neither the server nor the sync; the sync never imports the server."""
    violations = []
    checked = 0
    for package, forbidden in FORBIDDEN.items():
        for path in sorted((repo_root / package).rglob("*.py")):
            checked += 1
            bad = _imports(path) & forbidden
            if bad:
                violations.append(f"{path.relative_to(repo_root)} imports {sorted(bad)}")
    assert checked >= 10
    assert violations == []


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


def test_the_checker_sees_a_violation(tmp_path: Path) -> None:
    """The import walk finds absolute imports, including nested ``from`` imports."""
    module = tmp_path / "m.py"
    module.write_text(
        "import os\nfrom scim_server.app import create_app\ndef f():\n    import httpx.client\n"
    )
    assert _imports(module) == {"os", "scim_server", "httpx"}


def test_the_checker_names_submodules_imported_with_from(tmp_path: Path) -> None:
    """``from package import module`` is seen as an import of ``package.module``."""
    module = tmp_path / "m.py"
    module.write_text("from identity_store import models\nfrom sqlalchemy.orm import Session\n")
    assert _modules(module) == {
        "identity_store",
        "identity_store.models",
        "sqlalchemy.orm",
        "sqlalchemy.orm.Session",
    }
