"""Import direction between the layers (../shared/STYLE.md), checked with ``ast``."""

from __future__ import annotations

import ast
from pathlib import Path

FORBIDDEN = {
    "identity_store": {
        "scim_server",
        "identity_sync",
        "starlette",
        "httpx",
        "scim2_models",
        "uvicorn",
    },
    "identity_sync": {"scim_server", "starlette", "scim2_models"},
    "scim_server": {"identity_sync"},
}


def _imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(), filename=str(path))
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.add(node.module.split(".")[0])
    return found


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


def _modules(path: Path) -> set[str]:
    """Every module ``path`` imports absolutely, by its full name."""
    tree = ast.parse(path.read_text(), filename=str(path))
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.add(node.module)
    return found


def test_filters_cross_the_layer_line_as_a_store_neutral_tree(repo_root: Path) -> None:
    """scim_server/filters.py reads SCIM filters without SQL or the store's models;
    the store's filter tree imports nothing but the standard library."""
    scim_side = _modules(repo_root / "scim_server" / "filters.py")
    assert not {m for m in scim_side if m.split(".")[0] == "sqlalchemy"}
    assert not {m for m in scim_side if m.startswith("identity_store.models")}
    tree = _modules(repo_root / "identity_store" / "filtering" / "terms.py")
    assert tree <= {"__future__", "dataclasses", "typing"}


def test_the_checker_sees_a_violation(tmp_path: Path) -> None:
    """The import walk finds absolute imports, including nested ``from`` imports."""
    module = tmp_path / "m.py"
    module.write_text(
        "import os\nfrom scim_server.app import create_app\ndef f():\n    import httpx.client\n"
    )
    assert _imports(module) == {"os", "scim_server", "httpx"}
