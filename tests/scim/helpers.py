"""Payload builders and assertions shared by the SCIM protocol tests."""

from __future__ import annotations

from typing import Any

import httpx

USER_SCHEMA = "urn:ietf:params:scim:schemas:core:2.0:User"
ENTERPRISE = "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User"
PRODUCT = "urn:idstore:params:scim:schemas:extension:idstore:2.0:User"
GROUP_SCHEMA = "urn:ietf:params:scim:schemas:core:2.0:Group"
PATCH_SCHEMA = "urn:ietf:params:scim:api:messages:2.0:PatchOp"
ERROR_SCHEMA = "urn:ietf:params:scim:api:messages:2.0:Error"
LIST_SCHEMA = "urn:ietf:params:scim:api:messages:2.0:ListResponse"
SEARCH_SCHEMA = "urn:ietf:params:scim:api:messages:2.0:SearchRequest"
BULK_REQUEST = "urn:ietf:params:scim:api:messages:2.0:BulkRequest"


def user_body(user_name: str, **extra: Any) -> dict[str, Any]:
    body: dict[str, Any] = {"schemas": [USER_SCHEMA], "userName": user_name}
    body.update(extra)
    return body


def patch_body(*operations: dict[str, Any]) -> dict[str, Any]:
    return {"schemas": [PATCH_SCHEMA], "Operations": list(operations)}


def patch_operation(op: str, path: str | None = None, value: Any = ...) -> dict[str, Any]:
    """One PATCH operation; ``path`` and ``value`` left out unless given
    (``value=None`` sends a JSON null)."""
    operation: dict[str, Any] = {"op": op}
    if path is not None:
        operation["path"] = path
    if value is not ...:
        operation["value"] = value
    return operation


async def create_user(scim: httpx.AsyncClient, user_name: str, **extra: Any) -> dict[str, Any]:
    response = await scim.post("/Users", json=user_body(user_name, **extra))
    assert response.status_code == 201, response.text
    body: dict[str, Any] = response.json()
    return body


async def create_group(
    scim: httpx.AsyncClient,
    name: str,
    members: list[str] = (),
    **extra: Any,  # type: ignore[assignment]
) -> dict[str, Any]:
    payload = {
        "schemas": [GROUP_SCHEMA],
        "displayName": name,
        "members": [{"value": m} for m in members],
        **extra,
    }
    response = await scim.post("/Groups", json=payload)
    assert response.status_code == 201, response.text
    body: dict[str, Any] = response.json()
    return body


def assert_error(response: httpx.Response, status: int, scim_type: str | None = None) -> None:
    """The response is an RFC 7644 §3.12 Error with this status and scimType."""
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/scim+json")
    body = response.json()
    assert body["schemas"] == [ERROR_SCHEMA]
    assert body["status"] == str(status)
    assert body.get("scimType") == scim_type, body
    assert "Traceback" not in response.text
