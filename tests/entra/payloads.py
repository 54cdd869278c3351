"""Request bodies as Microsoft Entra ID sends them (Microsoft Learn, "Tutorial:
Develop and plan provisioning for a SCIM endpoint in Microsoft Entra ID" and
"Known issues and resolutions with SCIM 2.0 protocol compliance")."""

from __future__ import annotations

from typing import Any

USER = "urn:ietf:params:scim:schemas:core:2.0:User"
ENTERPRISE = "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User"
PRODUCT = "urn:idstore:params:scim:schemas:extension:idstore:2.0:User"
GROUP = "urn:ietf:params:scim:schemas:core:2.0:Group"
ADSCIM_GROUP = "http://schemas.microsoft.com/2006/11/ResourceManagement/ADSCIM/2.0/Group"
PATCH = "urn:ietf:params:scim:api:messages:2.0:PatchOp"
FLAG = "aadOptscim062020"


def create_user(
    upn: str,
    object_id: str,
    given: str,
    family: str,
    *,
    employee: str = "",
    dept: str = "",
    nickname: str | None = None,
    active: Any = True,
) -> dict[str, Any]:
    """Entra's POST /Users with the enterprise extension and the product's
    ``idpUsername`` mapped from ``mailNickname`` (docs/entra.md)."""
    return {
        "schemas": [USER, ENTERPRISE, PRODUCT],
        "externalId": object_id,
        "userName": upn,
        "active": active,
        "displayName": f"{given} {family}",
        "emails": [{"primary": True, "type": "work", "value": upn}],
        "meta": {"resourceType": "User"},
        "name": {"formatted": f"{given} {family}", "familyName": family, "givenName": given},
        "roles": [],
        ENTERPRISE: {"employeeNumber": employee, "department": dept, "manager": None},
        PRODUCT: {"idpUsername": nickname or upn.split("@")[0]},
    }


def create_group(name: str, object_id: str) -> dict[str, Any]:
    """Entra's POST /Groups: its extra schema URI, no members."""
    return {
        "schemas": [GROUP, ADSCIM_GROUP],
        "externalId": object_id,
        "displayName": name,
        "meta": {"resourceType": "Group"},
        "members": [],
    }


def patch(*operations: dict[str, Any]) -> dict[str, Any]:
    return {"schemas": [PATCH], "Operations": list(operations)}


def op(mode: str, name: str, path: str | None = None, value: Any = ...) -> dict[str, Any]:
    """One operation: ``Add``/``Replace``/``Remove`` capitalised by default,
    lower case with the flag."""
    operation: dict[str, Any] = {"op": name.lower() if mode == FLAG else name.capitalize()}
    if path is not None:
        operation["path"] = path
    if value is not ...:
        operation["value"] = value
    return operation


def set_active(mode: str, active: bool) -> dict[str, Any]:
    """Disable/enable: the string ``"False"`` by default, a boolean with the flag."""
    value: Any = active if mode == FLAG else str(active)
    return patch(op(mode, "replace", "active", value))


def replace_attributes(mode: str, changes: dict[str, Any]) -> dict[str, Any]:
    """Several attribute changes: one operation per path by default; with the
    flag, one path-less ``replace`` whose keys are the paths."""
    if mode == FLAG:
        return patch(op(mode, "replace", None, changes))
    return patch(*(op(mode, "replace", path, value) for path, value in changes.items()))


def add_members(mode: str, ids: list[str]) -> dict[str, Any]:
    value = (
        [{"value": i} for i in ids] if mode == FLAG else [{"$ref": None, "value": i} for i in ids]
    )
    return patch(op(mode, "add", "members", value))


def remove_members(mode: str, ids: list[str]) -> dict[str, Any]:
    """By default a value list and no filter; with the flag one filtered path each."""
    if mode == FLAG:
        return patch(*(op(mode, "remove", f'members[value eq "{i}"]') for i in ids))
    return patch(op(mode, "remove", "members", [{"value": i} for i in ids]))


def set_manager(mode: str, manager_id: str) -> dict[str, Any]:
    """The manager as a plain string by default, as ``{"value": id}`` with the flag."""
    value: Any = {"value": manager_id} if mode == FLAG else manager_id
    return patch(op(mode, "replace", f"{ENTERPRISE}:manager", value))
