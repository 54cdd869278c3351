"""``/Bulk`` (RFC 7644 §3.7)."""

from __future__ import annotations

from typing import Any

import httpx
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from identity_store.models import AuditEntry

from .helpers import BULK_REQUEST, GROUP_SCHEMA, USER_SCHEMA, assert_error


def bulk(*operations: dict[str, Any], fail_on_errors: int | None = None) -> dict[str, Any]:
    body: dict[str, Any] = {"schemas": [BULK_REQUEST], "Operations": list(operations)}
    if fail_on_errors is not None:
        body["failOnErrors"] = fail_on_errors
    return body


async def test_bulk_ids_resolve_across_operations(scim: httpx.AsyncClient) -> None:
    """A group created in the request references a user created earlier in it
    (and one created later: the server reorders)."""
    response = await scim.post(
        "/Bulk",
        json=bulk(
            {
                "method": "POST",
                "path": "/Users",
                "bulkId": "u1",
                "data": {"schemas": [USER_SCHEMA], "userName": "bulk1"},
            },
            {
                "method": "POST",
                "path": "/Groups",
                "bulkId": "g1",
                "data": {
                    "schemas": [GROUP_SCHEMA],
                    "displayName": "BulkGroup",
                    "members": [{"value": "bulkId:u1"}, {"value": "bulkId:u2"}],
                },
            },
            {
                "method": "POST",
                "path": "/Users",
                "bulkId": "u2",
                "data": {"schemas": [USER_SCHEMA], "userName": "bulk2"},
            },
            {
                "method": "PATCH",
                "path": "/Users/bulkId:u1",
                "data": {
                    "schemas": ["urn:ietf:params:scim:api:messages:2.0:PatchOp"],
                    "Operations": [{"op": "replace", "path": "title", "value": "T"}],
                },
            },
        ),
    )
    assert response.status_code == 200, response.text
    results = {op.get("bulkId", op["method"]): op for op in response.json()["Operations"]}
    assert results["u1"]["status"] == "201"
    assert results["g1"]["status"] == "201"
    assert results["PATCH"]["status"] == "200"
    group = (await scim.get(results["g1"]["location"].split("/scim/v2")[1])).json()
    assert len(group["members"]) == 2
    member_names = set()
    for member in group["members"]:
        member_names.add((await scim.get(f"/Users/{member['value']}")).json()["userName"])
    assert member_names == {"bulk1", "bulk2"}


async def test_fail_on_errors_stops_processing(scim: httpx.AsyncClient) -> None:
    response = await scim.post(
        "/Bulk",
        json=bulk(
            {
                "method": "POST",
                "path": "/Users",
                "bulkId": "a",
                "data": {"schemas": [USER_SCHEMA], "userName": "dup"},
            },
            {
                "method": "POST",
                "path": "/Users",
                "bulkId": "b",
                "data": {"schemas": [USER_SCHEMA], "userName": "DUP"},
            },
            {
                "method": "POST",
                "path": "/Users",
                "bulkId": "c",
                "data": {"schemas": [USER_SCHEMA], "userName": "never"},
            },
            fail_on_errors=1,
        ),
    )
    operations = response.json()["Operations"]
    assert [op["status"] for op in operations] == ["201", "409"]
    assert operations[1]["response"]["scimType"] == "uniqueness"
    listing = await scim.get("/Users", params={"filter": 'userName eq "never"'})
    assert listing.json()["totalResults"] == 0


async def test_max_operations_is_enforced(scim: httpx.AsyncClient) -> None:
    operation = {"method": "DELETE", "path": "/Users/x"}
    response = await scim.post("/Bulk", json=bulk(*[operation] * 1001))
    assert_error(response, 413, "tooLarge")


async def test_unresolvable_bulk_id_fails_that_operation(scim: httpx.AsyncClient) -> None:
    response = await scim.post(
        "/Bulk",
        json=bulk(
            {
                "method": "POST",
                "path": "/Groups",
                "bulkId": "g",
                "data": {
                    "schemas": [GROUP_SCHEMA],
                    "displayName": "G",
                    "members": [{"value": "bulkId:missing"}],
                },
            },
        ),
    )
    assert response.json()["Operations"][0]["status"] == "409"
    assert (await scim.get("/Groups")).json()["totalResults"] == 0


async def test_malformed_bulk_requests(scim: httpx.AsyncClient) -> None:
    assert_error(await scim.post("/Bulk", json={"Operations": []}), 400, "invalidSyntax")
    assert_error(
        await scim.post("/Bulk", json=bulk({"method": "GET", "path": "/Users"})),
        400,
        "invalidSyntax",
    )
    assert_error(
        await scim.post("/Bulk", json=bulk({"method": "POST", "path": "/Users", "data": {}})),
        400,
        "invalidSyntax",
    )


async def test_operations_are_audited_under_the_callers_request_id(
    scim: httpx.AsyncClient, session: AsyncSession
) -> None:
    """Every operation of a Bulk request is audited under the request's
    X-Request-Id, the one the caller sent or, without one, the one the
    response names."""
    response = await scim.post(
        "/Bulk",
        headers={"X-Request-Id": "entra-cycle-42"},
        json=bulk(
            {
                "method": "POST",
                "path": "/Users",
                "bulkId": "u1",
                "data": {"schemas": [USER_SCHEMA], "userName": "audited1"},
            },
            {
                "method": "POST",
                "path": "/Groups",
                "bulkId": "g1",
                "data": {
                    "schemas": [GROUP_SCHEMA],
                    "displayName": "Audited",
                    "members": [{"value": "bulkId:u1"}],
                },
            },
        ),
    )
    assert [op["status"] for op in response.json()["Operations"]] == ["201", "201"]
    assert response.headers["x-request-id"] == "entra-cycle-42"
    audited = (await session.execute(select(AuditEntry.action, AuditEntry.request_id))).all()
    assert sorted(audited) == [
        ("group.create", "entra-cycle-42"),
        ("user.create", "entra-cycle-42"),
    ]

    unnamed = await scim.post(
        "/Bulk",
        json=bulk(
            {
                "method": "POST",
                "path": "/Users",
                "bulkId": "u2",
                "data": {"schemas": [USER_SCHEMA], "userName": "audited2"},
            }
        ),
    )
    assert unnamed.json()["Operations"][0]["status"] == "201"
    request_ids = set(
        (
            await session.scalars(
                select(AuditEntry.request_id).where(AuditEntry.resource_id == _id(unnamed))
            )
        ).all()
    )
    assert request_ids == {unnamed.headers["x-request-id"]}


def _id(response: httpx.Response) -> str:
    location: str = response.json()["Operations"][0]["location"]
    return location.rsplit("/", 1)[1]


async def test_duplicate_bulk_ids_are_refused_before_anything_runs(
    scim: httpx.AsyncClient,
) -> None:
    """Two operations with one bulkId: 400 invalidValue (RFC 7644 §3.7), and
    no operation has run."""
    response = await scim.post(
        "/Bulk",
        json=bulk(
            {
                "method": "POST",
                "path": "/Users",
                "bulkId": "same",
                "data": {"schemas": [USER_SCHEMA], "userName": "first"},
            },
            {
                "method": "POST",
                "path": "/Users",
                "bulkId": "same",
                "data": {"schemas": [USER_SCHEMA], "userName": "second"},
            },
        ),
    )
    assert_error(response, 400, "invalidValue")
    assert "same" in response.json()["detail"]
    assert (await scim.get("/Users")).json()["totalResults"] == 0
