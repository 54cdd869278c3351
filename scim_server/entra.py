"""Microsoft Entra ID's deviations from RFC 7644, normalised in one place.

scim2-models' policy (:func:`scim_server.schemas.entra_tolerant_policy`)
already accepts capitalised ``op`` values, string booleans (``"False"``),
path-less values with dotted or URN-prefixed keys, unknown schema URIs,
``remove`` with a value list and ``add`` to an unmatched value filter. What
it does not accept is rewritten here, before validation:

- a path-less ``replace`` whose value object has keys with a value filter
  (``{"emails[type eq \\"work\\"].value": "x"}``, sent with the
  ``aadOptscim062020`` flag): each such key becomes an operation of its own;
- the enterprise ``manager`` given as a plain string (``"value": "271"``),
  or as an empty string to clear it;
- app roles sent as stringified JSON (``{"value": "{\\"id\\": ..., \\"value\\":
  \\"Admin\\", \\"displayName\\": \\"Admin\\"}"}``): unpacked into ``value``,
  ``display`` and ``type``.

Everything else goes to scim2-models as Entra sent it.
"""

from __future__ import annotations

import json
from typing import Any

from .schemas import ENTERPRISE_USER_SCHEMA

_MANAGER_PATHS = {"manager", f"{ENTERPRISE_USER_SCHEMA}:manager".lower()}


def _is_manager_path(path: Any) -> bool:
    return isinstance(path, str) and path.strip().lower() in _MANAGER_PATHS


def _unpack_role(entry: Any) -> Any:
    """A role whose ``value`` is a JSON object in a string, unpacked."""
    if not isinstance(entry, dict) or not isinstance(entry.get("value"), str):
        return entry
    raw = entry["value"].strip()
    if not raw.startswith("{"):
        return entry
    try:
        inner = json.loads(raw)
    except json.JSONDecodeError:
        return entry
    if not isinstance(inner, dict) or "value" not in inner:
        return entry
    unpacked = {k: v for k, v in entry.items() if k != "value"}
    unpacked["value"] = str(inner["value"])
    if inner.get("displayName") and "display" not in unpacked:
        unpacked["display"] = str(inner["displayName"])
    if inner.get("type") and "type" not in unpacked:
        unpacked["type"] = str(inner["type"])
    return unpacked


def _roles(value: Any) -> Any:
    if isinstance(value, list):
        return [_unpack_role(entry) for entry in value]
    return _unpack_role(value)


def _manager(value: Any) -> Any:
    if isinstance(value, str):
        return {"value": value} if value else None
    return value


def _normalise_operation(operation: dict[str, Any]) -> list[dict[str, Any]]:
    op = operation.get("op")
    path = operation.get("path")
    value = operation.get("value")
    if path is None and isinstance(value, dict):
        kept: dict[str, Any] = {}
        split: list[dict[str, Any]] = []
        for key, item in value.items():
            if isinstance(key, str) and "[" in key:
                split.extend(_normalise_operation({"op": op, "path": key, "value": item}))
            elif isinstance(key, str) and _is_manager_path(key):
                kept[key] = _manager(item)
            elif isinstance(key, str) and key.lower() == "roles":
                kept[key] = _roles(item)
            elif (
                isinstance(key, str)
                and key.lower() == ENTERPRISE_USER_SCHEMA.lower()
                and isinstance(item, dict)
            ):
                kept[key] = {
                    k: _manager(v) if k.lower() == "manager" else v for k, v in item.items()
                }
            else:
                kept[key] = item
        head = [{**operation, "value": kept}] if kept else []
        return head + split
    if _is_manager_path(path):
        if isinstance(value, str) and not value and str(op).lower() != "remove":
            return [{"op": "remove", "path": path}]
        return [{**operation, "value": _manager(value)}] if "value" in operation else [operation]
    if isinstance(path, str) and path.strip().lower() == "roles" and "value" in operation:
        return [{**operation, "value": _roles(value)}]
    return [operation]


def normalise_patch(body: dict[str, Any]) -> dict[str, Any]:
    """A PatchOp body with Entra's deviations rewritten (see the module docstring)."""
    operations = body.get("Operations")
    if not isinstance(operations, list):
        return body
    rewritten: list[Any] = []
    for operation in operations:
        if isinstance(operation, dict):
            rewritten.extend(_normalise_operation(operation))
        else:
            rewritten.append(operation)
    return {**body, "Operations": rewritten}


def normalise_resource(body: dict[str, Any]) -> dict[str, Any]:
    """A User body (POST, PUT) with Entra's deviations rewritten."""
    result = dict(body)
    if "roles" in result:
        result["roles"] = _roles(result["roles"])
    for key, item in body.items():
        if key.lower() == ENTERPRISE_USER_SCHEMA.lower() and isinstance(item, dict):
            result[key] = {k: _manager(v) if k.lower() == "manager" else v for k, v in item.items()}
    return result
