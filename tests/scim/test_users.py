"""``/Users``: create, read, replace, patch, delete (RFC 7644 §3.3-§3.6, §3.14)."""

from __future__ import annotations

import httpx
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from identity_store.models import AuditEntry, LifecycleTransition, OutboxEntry, User

from .helpers import (
    ENTERPRISE,
    PRODUCT,
    USER_SCHEMA,
    assert_error,
    create_user,
    patch_body,
    user_body,
)


async def test_create_returns_201_with_location_etag_and_the_resource(
    scim: httpx.AsyncClient,
) -> None:
    """POST answers 201 with Location, a weak ETag and the stored representation."""
    response = await scim.post(
        "/Users",
        json=user_body(
            "bjensen@example.com",
            name={"givenName": "Barbara", "familyName": "Jensen"},
            emails=[{"value": "bjensen@example.com", "type": "work", "primary": True}],
            **{
                "schemas": [USER_SCHEMA, ENTERPRISE],
                ENTERPRISE: {"employeeNumber": "701984", "department": "Tour Operations"},
            },
        ),
    )
    assert response.status_code == 201, response.text
    assert response.headers["content-type"].startswith("application/scim+json")
    body = response.json()
    assert len(body["id"]) == 26
    assert response.headers["location"] == f"http://testserver/scim/v2/Users/{body['id']}"
    assert response.headers["etag"] == 'W/"1"' == body["meta"]["version"]
    assert body["meta"]["resourceType"] == "User"
    assert body["name"] == {"givenName": "Barbara", "familyName": "Jensen"}
    assert body["emails"] == [{"value": "bjensen@example.com", "type": "work", "primary": True}]
    assert body[ENTERPRISE] == {"employeeNumber": "701984", "department": "Tour Operations"}
    assert body["schemas"] == [USER_SCHEMA, ENTERPRISE, PRODUCT]
    assert body["active"] is True
    assert body[PRODUCT]["lifecycle"] == "CREATED"
    assert "password" not in body


async def test_get_returns_what_was_created(scim: httpx.AsyncClient) -> None:
    created = await create_user(scim, "alice", displayName="Alice", title="Engineer")
    response = await scim.get(f"/Users/{created['id']}")
    assert response.status_code == 200
    assert response.json() == created
    # "schemas" names the extensions the resource holds (RFC 7643 §3).
    assert created["schemas"] == [USER_SCHEMA, PRODUCT]


async def test_user_name_is_unique_in_any_case(scim: httpx.AsyncClient) -> None:
    """A second userName differing only in case is 409 uniqueness, and nothing is stored."""
    await create_user(scim, "Carol@Example.com")
    response = await scim.post("/Users", json=user_body("carol@EXAMPLE.com"))
    assert_error(response, 409, "uniqueness")
    listing = await scim.get("/Users")
    assert listing.json()["totalResults"] == 1


async def test_unknown_id_is_404(scim: httpx.AsyncClient) -> None:
    assert_error(await scim.get("/Users/01J00000000000000000000000"), 404)
    assert_error(await scim.delete("/Users/nope"), 404)
    assert_error(
        await scim.patch(
            "/Users/nope", json=patch_body({"op": "replace", "path": "title", "value": "x"})
        ),
        404,
    )


async def test_if_none_match_with_the_current_version_is_304(scim: httpx.AsyncClient) -> None:
    created = await create_user(scim, "dave")
    response = await scim.get(f"/Users/{created['id']}", headers={"If-None-Match": 'W/"1"'})
    assert response.status_code == 304
    assert response.content == b""
    changed = await scim.get(f"/Users/{created['id']}", headers={"If-None-Match": 'W/"7"'})
    assert changed.status_code == 200


async def test_etag_changes_on_every_write(scim: httpx.AsyncClient) -> None:
    created = await create_user(scim, "erin")
    versions = {created["meta"]["version"]}
    for title in ("A", "B", "C"):
        response = await scim.patch(
            f"/Users/{created['id']}",
            json=patch_body({"op": "replace", "path": "title", "value": title}),
        )
        assert response.status_code == 200, response.text
        assert response.headers["etag"] == response.json()["meta"]["version"]
        versions.add(response.json()["meta"]["version"])
    assert versions == {'W/"1"', 'W/"2"', 'W/"3"', 'W/"4"'}


async def test_if_match_with_an_old_version_is_412_and_changes_nothing(
    scim: httpx.AsyncClient,
) -> None:
    """An update based on an outdated version is refused and stores nothing."""
    created = await create_user(scim, "frank", title="Old")
    uid = created["id"]
    await scim.patch(
        f"/Users/{uid}", json=patch_body({"op": "replace", "path": "title", "value": "New"})
    )
    stale = {"If-Match": created["meta"]["version"]}
    patch = patch_body({"op": "replace", "path": "title", "value": "Stale"})
    assert_error(await scim.patch(f"/Users/{uid}", json=patch, headers=stale), 412)
    put = user_body("frank", title="Stale")
    assert_error(await scim.put(f"/Users/{uid}", json=put, headers=stale), 412)
    assert_error(await scim.delete(f"/Users/{uid}", headers=stale), 412)
    current = (await scim.get(f"/Users/{uid}")).json()
    assert current["title"] == "New"
    ok = await scim.patch(
        f"/Users/{uid}", json=patch, headers={"If-Match": current["meta"]["version"]}
    )
    assert ok.status_code == 200


async def test_put_replaces_every_attribute(scim: httpx.AsyncClient) -> None:
    """PUT drops what the new representation leaves out and keeps id and created."""
    created = await create_user(
        scim,
        "gina",
        title="Engineer",
        nickName="G",
        emails=[{"value": "g@example.com", "type": "work"}],
    )
    response = await scim.put(
        f"/Users/{created['id']}",
        json=user_body("gina", displayName="Gina B", id="ignored-id"),
    )
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["id"] == created["id"]
    assert body["displayName"] == "Gina B"
    assert "title" not in body
    assert "emails" not in body
    assert body["meta"]["created"] == created["meta"]["created"]


async def test_patch_paths(scim: httpx.AsyncClient) -> None:
    """add / replace / remove with simple, sub-attribute, URN and value-filter paths."""
    created = await create_user(
        scim,
        "hank",
        emails=[
            {"value": "hank@work.example", "type": "work", "primary": True},
            {"value": "hank@home.example", "type": "home"},
        ],
    )
    uid = created["id"]
    response = await scim.patch(
        f"/Users/{uid}",
        json=patch_body(
            {"op": "add", "path": "title", "value": "Pilot"},
            {"op": "replace", "path": "name.givenName", "value": "Hank"},
            {"op": "replace", "path": f"{ENTERPRISE}:department", "value": "Air"},
            {"op": "replace", "path": f"{ENTERPRISE}:manager", "value": {"value": "m-1"}},
            {"op": "replace", "path": 'emails[type eq "work"].value', "value": "hank@new.example"},
            {"op": "remove", "path": 'emails[type eq "home"]'},
        ),
    )
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["title"] == "Pilot"
    assert body["name"] == {"givenName": "Hank"}
    assert body[ENTERPRISE]["department"] == "Air"
    assert body[ENTERPRISE]["manager"]["value"] == "m-1"
    assert body["emails"] == [{"value": "hank@new.example", "type": "work", "primary": True}]

    removed = await scim.patch(
        f"/Users/{uid}",
        json=patch_body(
            {"op": "remove", "path": "title"}, {"op": "remove", "path": f"{ENTERPRISE}:manager"}
        ),
    )
    assert removed.status_code == 200, removed.text
    assert "title" not in removed.json()
    assert "manager" not in removed.json()[ENTERPRISE]


async def test_patch_errors(scim: httpx.AsyncClient) -> None:
    """Bad PATCH requests are 400 with the RFC's scimType, and change nothing."""
    created = await create_user(scim, "ivy", title="Keep")
    uid = created["id"]
    cases = [
        (patch_body({"op": "replace", "path": "id", "value": "x"}), "mutability"),
        (patch_body({"op": "replace", "path": "nosuchattr", "value": "x"}), "invalidPath"),
        (patch_body({"op": "replace", "path": "emails[type eq", "value": "x"}), "invalidPath"),
        (patch_body({"op": "jump", "path": "title", "value": "x"}), "invalidValue"),
        (patch_body({"op": "replace", "path": "active", "value": "maybe"}), "invalidValue"),
    ]
    for payload, scim_type in cases:
        response = await scim.patch(f"/Users/{uid}", json=payload)
        assert response.status_code == 400, (payload, response.text)
        assert response.json().get("scimType") == scim_type, (payload, response.text)
    after = (await scim.get(f"/Users/{uid}")).json()
    assert after["title"] == "Keep"
    assert after["meta"]["version"] == created["meta"]["version"]


async def test_delete_answers_404_afterwards_and_keeps_the_record(
    scim: httpx.AsyncClient, session: AsyncSession
) -> None:
    """DELETE is 204; the id is then 404 over SCIM while the store keeps it SUSPENDED."""
    created = await create_user(scim, "jack")
    response = await scim.delete(f"/Users/{created['id']}")
    assert response.status_code == 204
    assert_error(await scim.get(f"/Users/{created['id']}"), 404)
    listing = await scim.get("/Users", params={"filter": 'userName eq "jack"'})
    assert listing.json()["totalResults"] == 0
    row = await session.get(User, created["id"])
    assert row is not None
    assert row.lifecycle == "SUSPENDED"
    assert row.deleted_at is not None
    again = await create_user(scim, "jack")
    assert again["id"] != created["id"]


async def test_writes_leave_audit_outbox_and_lifecycle_rows(
    scim: httpx.AsyncClient, session: AsyncSession
) -> None:
    """Every write records the token and request id, with outbox and lifecycle rows."""
    created = await scim.post("/Users", json=user_body("kate"), headers={"X-Request-Id": "req-123"})
    uid = created.json()["id"]
    assert created.headers["x-request-id"] == "req-123"
    await scim.patch(
        f"/Users/{uid}", json=patch_body({"op": "replace", "path": "active", "value": False})
    )
    await scim.delete(f"/Users/{uid}")
    audit = (
        await session.execute(
            select(AuditEntry.action, AuditEntry.actor, AuditEntry.request_id, AuditEntry.token_id)
            .where(AuditEntry.resource_id == uid)
            .order_by(AuditEntry.id)
        )
    ).all()
    assert [a.action for a in audit] == ["user.create", "user.patch", "user.delete"]
    assert {a.actor for a in audit} == {"token:test-scim:write"}
    assert audit[0].request_id == "req-123"
    assert all(a.token_id for a in audit)
    outbox = (
        await session.scalars(
            select(OutboxEntry.operation)
            .where(OutboxEntry.aggregate_id == uid)
            .order_by(OutboxEntry.id)
        )
    ).all()
    assert list(outbox) == ["upsert", "block", "delete"]
    states = (
        await session.scalars(
            select(LifecycleTransition.to_state)
            .where(LifecycleTransition.user_id == uid)
            .order_by(LifecycleTransition.id)
        )
    ).all()
    assert list(states) == ["CREATED", "SUSPENDED"]


async def test_a_failed_write_leaves_nothing_behind(
    scim: httpx.AsyncClient, session: AsyncSession
) -> None:
    """A refused create writes no user, audit or outbox row."""
    await create_user(scim, "liam")
    before = [
        await session.scalar(select(func.count()).select_from(t))
        for t in (User, AuditEntry, OutboxEntry)
    ]
    assert_error(await scim.post("/Users", json=user_body("LIAM")), 409, "uniqueness")
    assert_error(await scim.post("/Users", json=user_body("")), 400, "invalidValue")
    after = [
        await session.scalar(select(func.count()).select_from(t))
        for t in (User, AuditEntry, OutboxEntry)
    ]
    assert after == before


async def test_lifecycle_follows_active_and_required_attributes(scim: httpx.AsyncClient) -> None:
    """With the IdP identifiers present the user is ACTIVE; active=false suspends it;
    active=true restores ACTIVE."""
    created = await create_user(
        scim,
        "mia",
        **{
            "schemas": [USER_SCHEMA, PRODUCT],
            PRODUCT: {"idpUsername": "mia", "idpCloudUsername": "mia@corp.example"},
        },
    )
    assert created[PRODUCT]["lifecycle"] == "ACTIVE"
    uid = created["id"]
    off = await scim.patch(
        f"/Users/{uid}", json=patch_body({"op": "replace", "path": "active", "value": False})
    )
    assert off.json()[PRODUCT]["lifecycle"] == "SUSPENDED"
    assert off.json()["active"] is False
    on = await scim.patch(
        f"/Users/{uid}", json=patch_body({"op": "replace", "path": "active", "value": True})
    )
    assert on.json()[PRODUCT]["lifecycle"] == "ACTIVE"


async def test_read_only_product_attributes_are_not_writable(scim: httpx.AsyncClient) -> None:
    """lifecycle is readOnly: ignored on create, refused in PATCH."""
    created = await create_user(
        scim, "noah", **{"schemas": [USER_SCHEMA, PRODUCT], PRODUCT: {"lifecycle": "ACTIVE"}}
    )
    assert created[PRODUCT]["lifecycle"] == "CREATED"
    response = await scim.patch(
        f"/Users/{created['id']}",
        json=patch_body({"op": "replace", "path": f"{PRODUCT}:lifecycle", "value": "ACTIVE"}),
    )
    assert_error(response, 400, "mutability")


async def test_password_is_stored_hashed_and_never_returned(
    scim: httpx.AsyncClient, session: AsyncSession
) -> None:
    created = await create_user(scim, "olga", password="S3cret!pass")
    assert "password" not in created
    row = await session.get(User, created["id"])
    assert row is not None
    assert row.password_hash is not None
    assert row.password_hash.startswith("scrypt$")
    assert "S3cret" not in row.password_hash
