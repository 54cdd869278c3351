"""The README's examples do what it says: its shell blocks parse in the shell
they are fenced for, and its example users end in the lifecycle it names."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import httpx
import pytest

from identity_store.settings import Settings

FENCE = re.compile(r"^```(\w*)\n(.*?)^```$", re.DOTALL | re.MULTILINE)
SHELLS = {"sh": "dash", "bash": "bash"}


def _blocks(repo_root: Path) -> list[tuple[str, str]]:
    return FENCE.findall((repo_root / "README.md").read_text())


def test_every_shell_block_parses_in_the_shell_it_is_fenced_for(repo_root: Path) -> None:
    """A block fenced ``sh`` is POSIX (it parses in dash, Debian's ``sh``), one
    fenced ``bash`` parses in bash: bash arrays in an ``sh`` block fail in dash."""
    checked = 0
    for language, code in _blocks(repo_root):
        if language not in SHELLS:
            continue
        shell = shutil.which(SHELLS[language])
        if shell is None:
            pytest.fail(f"{SHELLS[language]} is needed to check the README's {language} blocks")
        result = subprocess.run(
            [shell, "-n"], input=code, capture_output=True, text=True, timeout=30, check=False
        )
        assert result.returncode == 0, f"```{language}\n{code}```\n{result.stderr}"
        checked += 1
    assert checked >= 4


def _created_payload(repo_root: Path, comment: str) -> dict[str, object]:
    """The JSON body of the ``curl -d`` that follows ``# <comment>`` in the README."""
    text = (repo_root / "README.md").read_text()
    match = re.search(rf"^# {re.escape(comment)}\n[^\n]*-d '(\{{.*?\}})'$", text, re.M | re.S)
    assert match is not None, f"no '# {comment}' example in the README"
    body: dict[str, object] = json.loads(match.group(1))
    return body


@pytest.mark.parametrize(
    ("comment", "lifecycle"),
    [
        ("create a user (it starts CREATED: see below)", "CREATED"),
        ("create a user that is ACTIVE at once", "ACTIVE"),
    ],
)
async def test_the_readme_example_users_end_in_the_lifecycle_it_names(
    scim: httpx.AsyncClient, repo_root: Path, comment: str, lifecycle: str
) -> None:
    """With the default ``IDSTORE_REQUIRED_IDP_ATTRIBUTES``, the README's first
    user lacks ``idpUsername`` and stays ``CREATED``; its second one is ``ACTIVE``."""
    response = await scim.post("/Users", json=_created_payload(repo_root, comment))
    assert response.status_code == 201, response.text
    extension = "urn:idstore:params:scim:schemas:extension:idstore:2.0:User"
    assert response.json()[extension]["lifecycle"] == lifecycle


async def test_the_readme_patch_that_sets_idp_username_makes_the_first_user_active(
    scim: httpx.AsyncClient, repo_root: Path
) -> None:
    """The operation the README gives for Barbara moves her from ``CREATED`` to ``ACTIVE``."""
    text = (repo_root / "README.md").read_text()
    match = re.search(r'`(\{"op": "replace", "path": "[^`]*:idpUsername"[^`]*\})`', text)
    assert match is not None
    created = await scim.post(
        "/Users", json=_created_payload(repo_root, "create a user (it starts CREATED: see below)")
    )
    assert created.status_code == 201, created.text
    patched = await scim.patch(
        f"/Users/{created.json()['id']}",
        json={
            "schemas": ["urn:ietf:params:scim:api:messages:2.0:PatchOp"],
            "Operations": [json.loads(match.group(1))],
        },
    )
    assert patched.status_code == 200, patched.text
    extension = "urn:idstore:params:scim:schemas:extension:idstore:2.0:User"
    assert patched.json()[extension]["lifecycle"] == "ACTIVE"


def test_every_setting_is_in_the_readme_s_table(repo_root: Path) -> None:
    """Each environment variable the product reads is documented in the README."""
    readme = (repo_root / "README.md").read_text()
    missing = []
    for name, field in Settings.model_fields.items():
        alias = field.validation_alias
        variable = alias if isinstance(alias, str) else f"IDSTORE_{name.upper()}"
        if f"`{variable}`" not in readme:
            missing.append(variable)
    assert missing == []
