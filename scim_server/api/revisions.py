"""The ``RBAC-Revision`` response header: the revision a change made.

Every change of roles, bindings or role assignments adds one to the RBAC
revision in its transaction (:mod:`identity_store.rbac`); a write's answer
carries the new value in this header, and checks answer with the revision
they read (``revision`` in their body), so a client can tell whether a
check saw its change: it did when the check's revision is at least the
write's.
"""

from __future__ import annotations

from typing import Any

from starlette.responses import Response

HEADER = "RBAC-Revision"

DOCUMENTED = {
    HEADER: {
        "description": "The RBAC revision this change made; a check answering with this "
        "revision or a later one saw it.",
        "schema": {"type": "integer", "minimum": 0},
    }
}
"""The header's OpenAPI description, for a write's success response."""


def set_revision(response: Response, revision: int) -> None:
    response.headers[HEADER] = str(revision)


def documented(status: int, description: str, **extra: Any) -> dict[int | str, dict[str, Any]]:
    """An OpenAPI ``responses`` entry of a write's success, with the header."""
    entry: dict[str, Any] = {"description": description, "headers": dict(DOCUMENTED)}
    entry["headers"].update(extra.pop("headers", {}))
    entry.update(extra)
    return {status: entry}
