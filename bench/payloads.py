"""Request bodies as Microsoft Entra ID sends them (default mode, no
``aadOptscim062020`` flag), in the shapes of ``tests/entra/payloads.py``.

Copied rather than imported so that the benchmark does not depend on the test
package being importable.
"""

from __future__ import annotations

import json
from typing import Any

USER = "urn:ietf:params:scim:schemas:core:2.0:User"
ENTERPRISE = "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User"
PRODUCT = "urn:idstore:params:scim:schemas:extension:idstore:2.0:User"
GROUP = "urn:ietf:params:scim:schemas:core:2.0:Group"
ADSCIM_GROUP = "http://schemas.microsoft.com/2006/11/ResourceManagement/ADSCIM/2.0/Group"
PATCH = "urn:ietf:params:scim:api:messages:2.0:PatchOp"


def dumps(body: dict[str, Any]) -> bytes:
    return json.dumps(body, separators=(",", ":")).encode()


def create_user(
    upn: str,
    object_id: str,
    given: str,
    family: str,
    *,
    employee: str = "",
    dept: str = "",
    product_extension: bool = True,
) -> dict[str, Any]:
    """Entra's POST /Users with the enterprise extension. With
    ``product_extension`` the product's ``idpUsername`` is mapped from
    ``mailNickname`` (docs/entra.md), so that the user is ``ACTIVE``; the peer
    does not know that schema, so the side-by-side load leaves it out."""
    body: dict[str, Any] = {
        "schemas": [USER, ENTERPRISE],
        "externalId": object_id,
        "userName": upn,
        "active": True,
        "displayName": f"{given} {family}",
        "emails": [{"primary": True, "type": "work", "value": upn}],
        "meta": {"resourceType": "User"},
        "name": {"formatted": f"{given} {family}", "familyName": family, "givenName": given},
        "roles": [],
        ENTERPRISE: {"employeeNumber": employee, "department": dept, "manager": None},
    }
    if product_extension:
        body["schemas"].append(PRODUCT)
        body[PRODUCT] = {"idpUsername": upn.split("@")[0]}
    return body


def create_group(name: str, object_id: str, *, adscim: bool = True) -> dict[str, Any]:
    """Entra's POST /Groups: its extra schema URI (``adscim``), no members.

    scim2-server refuses that URI (400 ``invalidSyntax``, "Unknown extension
    schemas"), so the side-by-side load sends the core schema alone."""
    return {
        "schemas": [GROUP, ADSCIM_GROUP] if adscim else [GROUP],
        "externalId": object_id,
        "displayName": name,
        "meta": {"resourceType": "Group"},
        "members": [],
    }


def patch(*operations: dict[str, Any]) -> dict[str, Any]:
    return {"schemas": [PATCH], "Operations": list(operations)}


def op(name: str, path: str | None = None, value: Any = ...) -> dict[str, Any]:
    """One operation, ``op`` capitalised as Entra sends it by default."""
    operation: dict[str, Any] = {"op": name.capitalize()}
    if path is not None:
        operation["path"] = path
    if value is not ...:
        operation["value"] = value
    return operation


def replace_three(display: str, family: str, department: str) -> dict[str, Any]:
    """Entra's update of three attributes: one ``Replace`` per path."""
    return patch(
        op("replace", "displayName", display),
        op("replace", "name.familyName", family),
        op("replace", f"{ENTERPRISE}:department", department),
    )


def set_active(active: bool) -> dict[str, Any]:
    """Disable/enable with the string ``"False"``/``"True"``, as Entra does."""
    return patch(op("replace", "active", str(active)))


def add_members(ids: list[str]) -> dict[str, Any]:
    return patch(op("add", "members", [{"$ref": None, "value": i} for i in ids]))


def add_and_remove_member(add: str, remove: str | None) -> dict[str, Any]:
    """One member added and one removed, in one request."""
    operations = [op("add", "members", [{"$ref": None, "value": add}])]
    if remove is not None:
        operations.append(op("remove", "members", [{"value": remove}]))
    return patch(*operations)
