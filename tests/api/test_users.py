"""``/api/v1/users`` over HTTP, on SQLite and PostgreSQL: users managed by
user group as Mia-Platform's User Manager Service does (create, with an
id, read, list and count by group, state and search, change, block and
unblock, reset, delete and restore), through the store's use cases, so
that each write is audited, evented and seen by SCIM alike."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncEngine

from identity_store import deprovisioning, lifecycle, users
from identity_store.actor import Actor, job_actor
from identity_store.database import create_session_factory
from identity_store.models import AuditEntry, Lifecycle, LifecycleTransition, OutboxEntry, User
from identity_store.store import Store

from .conftest import PRODUCT, assert_problem

ULID = "01JEZ8Q6W5YB7ZKX3M4N2P9RTV"
SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "address": {
            "type": "object",
            "properties": {"zip": {"type": "string", "pattern": "^[0-9]{5}$"}},
        },
        "score": {"type": "integer"},
    },
}
IDP = {"idpUsername": "ada", "idpCloudUsername": "ada@corp.example"}


@pytest.fixture
async def groups(api: httpx.AsyncClient) -> None:
    """Two user groups: ``partners`` (with a schema) and ``staff`` (any data)."""
    for name, schema in (("partners", SCHEMA), ("staff", {})):
        response = await api.post("/user-groups", json={"userGroup": name, "crudSchema": schema})
        assert response.status_code == 201, response.text


async def _create(api: httpx.AsyncClient, email: str, **fields: Any) -> dict[str, Any]:
    response = await api.post("/users", json={"userGroup": "partners", "email": email, **fields})
    assert response.status_code == 201, response.text
    body: dict[str, Any] = response.json()
    return body


async def _rows(engine: AsyncEngine, model: Any, *where: Any) -> list[Any]:
    async with create_session_factory(engine)() as session:
        return list((await session.scalars(select(model).where(*where).order_by(model.id))).all())


DOCUMENT_KEYS = {
    "id",
    "auth0",
    "userGroup",
    "username",
    "email",
    "name",
    "givenName",
    "familyName",
    "middleName",
    "customData",
    "lifecycle",
    "blocked",
    "expirationDate",
    "roles",
    "authUserId",
    "externalId",
    "idpReferenceId",
    "idpUsername",
    "idpCloudUsername",
    "idpWorkforceId",
    "idpSource",
    "createdAt",
    "updatedAt",
    "version",
}


@pytest.mark.usefixtures("groups")
async def test_a_user_is_created_in_a_group_and_read_back(
    api: httpx.AsyncClient, engine: AsyncEngine
) -> None:
    """201 with Location and ETag; the document of the User Manager Service;
    ``ACTIVE`` with the required IdP identifiers; audited, with an ``auth0``
    outbox row carrying the request id."""
    created = await api.post(
        "/users",
        json={
            "userGroup": "partners",
            "email": "ada@example.com",
            "username": "ada",
            "name": "Ada Lovelace",
            "givenName": "Ada",
            "familyName": "Lovelace",
            "middleName": "King",
            "customData": {"address": {"zip": "75001"}, "score": 12345678901234567890},
            **IDP,
        },
    )
    assert created.status_code == 201, created.text
    body = created.json()
    assert set(body) == DOCUMENT_KEYS
    assert created.headers["location"] == f"/api/v1/users/{body['id']}"
    assert created.headers["etag"] == 'W/"1"'
    assert {k: body[k] for k in DOCUMENT_KEYS - {"id", "createdAt", "updatedAt"}} == {
        "userGroup": "partners",
        "username": "ada",
        "email": "ada@example.com",
        "name": "Ada Lovelace",
        "givenName": "Ada",
        "familyName": "Lovelace",
        "middleName": "King",
        "customData": {"address": {"zip": "75001"}, "score": 12345678901234567890},
        "lifecycle": "ACTIVE",
        "blocked": False,
        "expirationDate": None,
        "roles": [],
        "authUserId": None,
        "externalId": None,
        "idpReferenceId": None,
        "idpUsername": "ada",
        "idpCloudUsername": "ada@corp.example",
        "idpWorkforceId": None,
        "idpSource": "MANUAL",
        "version": 1,
        "auth0": None,  # only list pages carry Auth0 properties, when configured
    }
    read = await api.get(f"/users/{body['id']}")
    assert read.json() == body
    assert read.headers["etag"] == 'W/"1"'

    [entry] = await _rows(engine, AuditEntry, AuditEntry.resource_id == body["id"])
    assert (entry.action, entry.actor) == ("user.create", "token:api-admin")
    [row] = await _rows(engine, OutboxEntry, OutboxEntry.aggregate_id == body["id"])
    assert (row.target, row.operation, row.request_id) == (
        "auth0",
        "upsert",
        created.headers["x-request-id"],
    )


@pytest.mark.usefixtures("groups")
async def test_the_api_and_scim_show_the_same_user(api: httpx.AsyncClient, as_scope: Any) -> None:
    """What the API wrote, SCIM reads in its product extension, and back."""
    body = await _create(api, "ada@example.com", customData={"score": 3})
    scim = as_scope("scim:write", "/scim/v2")
    doc = (await scim.get(f"/Users/{body['id']}")).json()
    assert doc["userName"] == "ada@example.com"
    assert doc["emails"] == [{"value": "ada@example.com", "primary": True}]
    assert doc[PRODUCT]["userGroup"] == "partners"
    assert doc[PRODUCT]["customData"] == {"score": 3}
    assert doc[PRODUCT]["idpSource"] == "MANUAL"
    patch = {
        "schemas": ["urn:ietf:params:scim:api:messages:2.0:PatchOp"],
        "Operations": [{"op": "replace", "path": "name.givenName", "value": "Ada"}],
    }
    assert (await scim.patch(f"/Users/{body['id']}", json=patch)).status_code == 200
    again = (await api.get(f"/users/{body['id']}")).json()
    assert (again["givenName"], again["version"], again["customData"]) == ("Ada", 2, {"score": 3})


@pytest.mark.usefixtures("groups")
async def test_a_user_without_the_idp_identifiers_starts_created(api: httpx.AsyncClient) -> None:
    """SPEC §4: ``CREATED`` until the required attributes are there; the
    username defaults to the e-mail address; a date already passed: ``SUSPENDED``."""
    body = await _create(api, "Bob@Example.com")
    assert (body["username"], body["lifecycle"], body["idpCloudUsername"]) == (
        "Bob@Example.com",
        "CREATED",
        "Bob@Example.com",
    )
    past = await _create(api, "old@example.com", expirationDate="2020-01-01T00:00:00+01:00", **IDP)
    assert past["lifecycle"] == "SUSPENDED"
    assert past["expirationDate"] == "2019-12-31T23:00:00Z"


CUSTOM_DATA_REFUSALS: list[tuple[str, dict[str, Any], str, list[str | int]]] = [
    (
        "a pattern",
        {"userGroup": "partners", "customData": {"address": {"zip": "123"}}},
        "customData.address.zip: '123' does not match '^[0-9]{5}$'",
        ["body", "customData", "address", "zip"],
    ),
    (
        "a type",
        {"userGroup": "partners", "customData": {"score": "high"}},
        "customData.score: 'high' is not of type 'integer'",
        ["body", "customData", "score"],
    ),
    (
        "a group that is not configured",
        {"userGroup": "nobody"},
        "userGroup 'nobody' is not a configured user group",
        ["body", "userGroup"],
    ),
]


@pytest.mark.usefixtures("groups")
async def test_custom_data_is_validated_against_the_group_schema(api: httpx.AsyncClient) -> None:
    """400 naming the failing path and the validator's message; nothing stored."""
    for name, body, detail, location in CUSTOM_DATA_REFUSALS:
        response = await api.post("/users", json={"email": "ada@example.com", **body})
        assert response.status_code == 400, (name, response.text)
        problem = assert_problem(response, 400, "invalid-request", detail)
        assert problem["errors"][0]["location"] == location
    assert (await api.get("/users/count")).json() == {"count": 0}


@pytest.mark.usefixtures("groups")
async def test_a_user_is_created_with_the_id_the_caller_chose(api: httpx.AsyncClient) -> None:
    """The id must be a ULID in the store's form; a taken one (a deleted
    user's included) is 409."""
    created = await api.post(
        "/users/with-id", json={"id": ULID, "userGroup": "staff", "email": "a@example.com"}
    )
    assert created.status_code == 201, created.text
    assert created.json()["id"] == ULID
    assert created.headers["location"] == f"/api/v1/users/{ULID}"
    for bad in (ULID.lower(), ULID[:-1], "8" + ULID[1:], ULID[:-1] + "U", "x" * 26):
        response = await api.post(
            "/users/with-id", json={"id": bad, "userGroup": "staff", "email": "b@example.com"}
        )
        assert_problem(response, 400, "invalid-request")
    assert (await api.delete(f"/users/{ULID}")).status_code == 204
    again = await api.post(
        "/users/with-id", json={"id": ULID, "userGroup": "staff", "email": "c@example.com"}
    )
    assert_problem(again, 409, "conflict", f"id {ULID!r} is already taken")


@pytest.mark.usefixtures("groups")
async def test_roles_are_assigned_in_the_same_transaction(
    api: httpx.AsyncClient, checker: httpx.AsyncClient
) -> None:
    """Unknown role ids are a 400 naming them and no user is created; known
    ones are the user's roles (``/users/{id}/roles``) and grant their
    permissions (``/users/{id}/permissions``)."""
    for role_id in ("reader", "writer"):
        await api.post(
            "/roles", json={"roleId": role_id, "name": role_id, "permissions": [role_id]}
        )
    refused = await api.post(
        "/users",
        json={"userGroup": "staff", "email": "a@example.com", "roles": ["reader", "nope", "ghost"]},
    )
    assert_problem(refused, 400, "invalid-request", "unknown role id(s): ghost, nope")
    assert (await api.get("/users/count")).json() == {"count": 0}

    body = await _create(api, "a@example.com", userGroup="staff", roles=["writer", "reader"], **IDP)
    assert body["roles"] == ["reader", "writer"]
    assert (await api.get(f"/users/{body['id']}/roles")).json() == {"roles": ["reader", "writer"]}
    held = (await checker.get(f"/users/{body['id']}/permissions")).json()
    assert [p["permission"] for p in held["permissions"]] == ["reader", "writer"]

    changed = await api.patch(f"/users/{body['id']}", json={"roles": ["writer"]})
    assert changed.status_code == 200, changed.text
    assert (changed.json()["roles"], changed.json()["version"]) == (["writer"], 2)
    assert changed.headers["etag"] == 'W/"2"'
    same = await api.patch(f"/users/{body['id']}", json={"roles": ["writer"]})
    assert (same.json()["roles"], same.json()["version"]) == (["writer"], 2)
    held = (await checker.get(f"/users/{body['id']}/permissions")).json()
    assert [p["permission"] for p in held["permissions"]] == ["writer"]


async def _people(api: httpx.AsyncClient) -> dict[str, str]:
    """Five users of two groups and three states; their ids by name."""
    made = {
        "ada": await _create(api, "ada@example.com", givenName="Ada", familyName="Lovelace", **IDP),
        "élodie": await _create(api, "e.durand@example.com", givenName="Élodie", **IDP),
        "grace": await _create(api, "grace@navy.example", userGroup="staff", familyName="Hopper"),
        "alan": await _create(api, "alan@example.com", userGroup="staff", name="Alan 100%_x"),
        "linus": await _create(api, "linus@example.com", middleName="Benedict", **IDP),
    }
    blocked = await api.post(f"/users/{made['linus']['id']}/state", json={"action": "block"})
    assert blocked.status_code == 200, blocked.text
    return {name: body["id"] for name, body in made.items()}


LIST_CASES: list[tuple[dict[str, str], set[str]]] = [
    ({}, {"ada", "élodie", "grace", "alan", "linus"}),
    ({"userGroup": "staff"}, {"grace", "alan"}),
    ({"userGroup": "nobody"}, set()),
    ({"lifecycle": "ACTIVE"}, {"ada", "élodie"}),
    ({"lifecycle": "CREATED"}, {"grace", "alan"}),
    ({"lifecycle": "SUSPENDED", "userGroup": "partners"}, {"linus"}),
    ({"q": "ADA"}, {"ada"}),
    ({"q": "example.com"}, {"ada", "élodie", "alan", "linus"}),
    ({"q": "ÉLO"}, {"élodie"}),
    ({"q": "hopper"}, {"grace"}),
    ({"q": "benedict"}, {"linus"}),
    ({"q": "0%_"}, {"alan"}),
    ({"q": "%"}, {"alan"}),
    ({"q": "love", "userGroup": "staff"}, set()),
    ({"q": "a", "lifecycle": "CREATED"}, {"grace", "alan"}),
]


@pytest.mark.usefixtures("groups")
async def test_users_are_listed_and_counted_by_group_state_and_search(
    api: httpx.AsyncClient,
) -> None:
    """Every filter given holds; ``q`` is a case-insensitive substring of
    the username, an e-mail, or a name (``%`` and ``_`` taken literally);
    ``count`` answers the same filters; pages follow ids."""
    ids = await _people(api)
    names = {user_id: name for name, user_id in ids.items()}
    for params, expected in LIST_CASES:
        page = (await api.get("/users", params=params)).json()
        listed = [names[u["id"]] for u in page["items"]]
        assert set(listed) == expected, params
        assert [u["id"] for u in page["items"]] == sorted(ids[n] for n in listed), params
        assert page["nextCursor"] is None
        count = (await api.get("/users/count", params=params)).json()
        assert count == {"count": len(expected)}, params

    seen: list[str] = []
    cursor = None
    while True:
        params: dict[str, Any] = {"count": 2} | ({"cursor": cursor} if cursor else {})
        page = (await api.get("/users", params=params)).json()
        assert len(page["items"]) <= 2
        seen += [u["id"] for u in page["items"]]
        cursor = page["nextCursor"]
        if cursor is None:
            break
    assert seen == sorted(ids.values())


@pytest.mark.usefixtures("groups")
async def test_a_search_examines_a_bounded_window_per_page(
    api: httpx.AsyncClient, store: Store
) -> None:
    """With ``q`` a page examines at most ``scan`` users past its cursor: it
    may come back short (even empty) with a cursor, and following the
    cursors finds every match exactly once."""
    ids = await _people(api)
    query = users.UserQuery(search="example.com")
    matching = sorted(ids[n] for n in ("ada", "élodie", "alan", "linus"))
    found: list[str] = []
    pages: list[int] = []
    after = None
    while True:
        page = await users.list_users(store, query, after=after, limit=10, scan=2)
        found += [r.user.id for r in page.users]
        pages.append(len(page.users))
        after = page.next_after
        if after is None:
            break
    assert found == matching
    assert len(pages) == 3  # five users, two examined per page
    whole = await users.list_users(store, query, after=None, limit=2, scan=10_000)
    assert [r.user.id for r in whole.users] == matching[:2]
    assert whole.next_after == matching[1]


@pytest.mark.usefixtures("groups")
async def test_deleted_users_are_neither_listed_nor_counted(api: httpx.AsyncClient) -> None:
    ids = await _people(api)
    assert (await api.delete(f"/users/{ids['ada']}")).status_code == 204
    listed = {u["id"] for u in (await api.get("/users")).json()["items"]}
    assert ids["ada"] not in listed
    assert (await api.get("/users/count")).json() == {"count": 4}
    assert (await api.get("/users/count", params={"q": "ada"})).json() == {"count": 0}
    assert_problem(await api.get(f"/users/{ids['ada']}"), 404, "not-found")


@pytest.mark.usefixtures("groups")
async def test_a_patch_changes_only_the_fields_it_names(
    api: httpx.AsyncClient, engine: AsyncEngine
) -> None:
    """Absent fields are kept, ``null`` clears; the e-mail replaces the
    primary address; ``If-Match`` guards the version (412); a patch that
    changes nothing writes nothing."""
    body = await _create(api, "ada@example.com", givenName="Ada", middleName="K", **IDP)
    user_id = body["id"]
    changed = await api.patch(
        f"/users/{user_id}",
        json={
            "email": "ada@lovelace.example",
            "username": "ada.l",
            "middleName": None,
            "familyName": "Lovelace",
            "customData": {"score": 1},
        },
        headers={"If-Match": 'W/"1"'},
    )
    assert changed.status_code == 200, changed.text
    after = changed.json()
    assert (after["email"], after["username"], after["givenName"]) == (
        "ada@lovelace.example",
        "ada.l",
        "Ada",
    )
    assert (after["middleName"], after["familyName"], after["customData"]) == (
        None,
        "Lovelace",
        {"score": 1},
    )
    assert (after["version"], changed.headers["etag"]) == (2, 'W/"2"')
    stale = await api.patch(
        f"/users/{user_id}", json={"givenName": "X"}, headers={"If-Match": 'W/"1"'}
    )
    assert_problem(stale, 412, "precondition-failed", "the resource is at version 2, not 1")
    same = await api.patch(f"/users/{user_id}", json={"givenName": "Ada"})
    assert same.json()["version"] == 2
    audits = await _rows(engine, AuditEntry, AuditEntry.resource_id == user_id)
    assert [a.action for a in audits] == ["user.create", "user.update"]


@pytest.mark.usefixtures("groups")
async def test_a_patch_is_validated_as_a_create_is(api: httpx.AsyncClient) -> None:
    """A taken username is 409; another group's schema applies to the data
    kept; ``null`` for a field that cannot be empty is a 400."""
    await _create(api, "taken@example.com")
    body = await _create(api, "ada@example.com", userGroup="staff", customData={"score": "x"})
    user_id = body["id"]
    assert_problem(
        await api.patch(f"/users/{user_id}", json={"username": "TAKEN@example.com"}),
        409,
        "conflict",
        "userName 'TAKEN@example.com' is already taken",
    )
    assert_problem(
        await api.patch(f"/users/{user_id}", json={"userGroup": "partners"}),
        400,
        "invalid-request",
        "customData.score: 'x' is not of type 'integer'",
    )
    moved = await api.patch(
        f"/users/{user_id}", json={"userGroup": "partners", "customData": {"score": 2}}
    )
    assert moved.status_code == 200, moved.text
    for field in ("username", "email", "userGroup", "roles"):
        assert_problem(
            await api.patch(f"/users/{user_id}", json={field: None}), 400, "invalid-request"
        )
    assert (await api.get(f"/users/{user_id}")).json()["version"] == 2


@pytest.mark.usefixtures("groups")
async def test_an_expiration_date_passed_suspends_and_clearing_it_reactivates(
    api: httpx.AsyncClient, engine: AsyncEngine
) -> None:
    """SPEC §4: a date passed is ``SUSPENDED`` (cause ``expired``, an
    ``auth0`` ``block`` row); cleared, ``ACTIVE`` again (``reactivated``)."""
    body = await _create(api, "ada@example.com", **IDP)
    user_id = body["id"]
    past = (datetime.now(UTC) - timedelta(minutes=1)).isoformat()
    expired = await api.patch(f"/users/{user_id}", json={"expirationDate": past})
    assert expired.json()["lifecycle"] == "SUSPENDED"
    future = (datetime.now(UTC) + timedelta(days=30)).isoformat()
    later = await api.patch(f"/users/{user_id}", json={"expirationDate": future})
    assert later.json()["lifecycle"] == "ACTIVE"
    again = await api.patch(f"/users/{user_id}", json={"expirationDate": past})
    assert again.json()["lifecycle"] == "SUSPENDED"
    cleared = await api.patch(f"/users/{user_id}", json={"expirationDate": None})
    assert (cleared.json()["lifecycle"], cleared.json()["expirationDate"]) == ("ACTIVE", None)
    history = await _rows(engine, LifecycleTransition, LifecycleTransition.user_id == user_id)
    assert [(h.to_state, h.cause) for h in history] == [
        ("ACTIVE", "created"),
        ("SUSPENDED", "expired"),
        ("ACTIVE", "reactivated"),
        ("SUSPENDED", "expired"),
        ("ACTIVE", "reactivated"),
    ]
    operations = await _rows(engine, OutboxEntry, OutboxEntry.aggregate_id == user_id)
    assert [o.operation for o in operations] == ["upsert", "block", "upsert", "block", "upsert"]


@pytest.mark.usefixtures("groups")
async def test_block_and_unblock_drive_the_lifecycle(
    api: httpx.AsyncClient, engine: AsyncEngine
) -> None:
    """``block``: ``SUSPENDED`` (cause ``blocked``, an ``auth0`` ``block``
    row); again: nothing written; ``unblock``: ``ACTIVE``, or ``CREATED``
    for a user still missing IdP identifiers."""
    user_id = (await _create(api, "ada@example.com", **IDP))["id"]
    incomplete = (await _create(api, "bob@example.com"))["id"]
    blocked = await api.post(f"/users/{user_id}/state", json={"action": "block"})
    assert blocked.status_code == 200, blocked.text
    assert (blocked.json()["lifecycle"], blocked.json()["blocked"]) == ("SUSPENDED", True)
    assert blocked.headers["etag"] == 'W/"2"'
    twice = await api.post(f"/users/{user_id}/state", json={"action": "block"})
    assert twice.json()["version"] == 2
    unblocked = await api.post(
        f"/users/{user_id}/state", json={"action": "unblock"}, headers={"If-Match": 'W/"2"'}
    )
    assert (unblocked.json()["lifecycle"], unblocked.json()["blocked"]) == ("ACTIVE", False)
    await api.post(f"/users/{incomplete}/state", json={"action": "block"})
    back = await api.post(f"/users/{incomplete}/state", json={"action": "unblock"})
    assert back.json()["lifecycle"] == "CREATED"
    audits = await _rows(engine, AuditEntry, AuditEntry.resource_id == user_id)
    assert [a.action for a in audits] == ["user.create", "user.block", "user.unblock"]
    operations = await _rows(engine, OutboxEntry, OutboxEntry.aggregate_id == user_id)
    assert [o.operation for o in operations] == ["upsert", "block", "upsert"]
    assert_problem(
        await api.post(f"/users/{user_id}/state", json={"action": "freeze"}),
        400,
        "invalid-request",
    )


async def _in_error(store: Store, user_id: str) -> None:
    """What the profile sync leaves when it gives up: ``ERROR``."""

    async def work(session: Any) -> None:
        user = await session.get(User, user_id)
        lifecycle.transition(
            session, user, Lifecycle.ERROR, "profile-sync", job_actor("profile-sync", 1)
        )

    await store.transaction(work)


@pytest.mark.usefixtures("groups")
async def test_reset_moves_a_user_in_error_back_to_created(
    api: httpx.AsyncClient, store: Store
) -> None:
    """``reset`` is lifecycle_admin's: ``ERROR`` → ``CREATED``; any other
    state is a 409 and nothing changes."""
    user_id = (await _create(api, "bob@example.com"))["id"]
    refused = await api.post(f"/users/{user_id}/state", json={"action": "reset"})
    assert_problem(
        refused,
        409,
        "state-conflict",
        f"user {user_id} is CREATED, not ERROR: only a user in ERROR can be reset",
    )
    await _in_error(store, user_id)
    reset = await api.post(f"/users/{user_id}/state", json={"action": "reset"})
    assert reset.status_code == 200, reset.text
    assert (reset.json()["lifecycle"], reset.json()["version"]) == ("CREATED", 3)


@pytest.mark.usefixtures("groups")
async def test_a_deleted_user_is_restored_before_the_deletion_sync(
    api: httpx.AsyncClient, engine: AsyncEngine
) -> None:
    """DELETE is SCIM's soft delete; restore brings the user back ``ACTIVE``
    with its roles, counted and listed again; audited, in the history, with
    an ``auth0`` row each way."""
    await api.post("/roles", json={"roleId": "reader", "name": "r", "permissions": ["p"]})
    user_id = (await _create(api, "ada@example.com", roles=["reader"], **IDP))["id"]
    stale = await api.delete(f"/users/{user_id}", headers={"If-Match": 'W/"7"'})
    assert_problem(stale, 412, "precondition-failed")
    assert (await api.delete(f"/users/{user_id}", headers={"If-Match": 'W/"1"'})).status_code == 204
    assert (await api.get("/users/count")).json() == {"count": 0}
    restored = await api.post(f"/users/{user_id}/restore")
    assert restored.status_code == 200, restored.text
    body = restored.json()
    assert (body["lifecycle"], body["roles"], body["version"]) == ("ACTIVE", ["reader"], 3)
    assert restored.headers["etag"] == 'W/"3"'
    assert (await api.get(f"/users/{user_id}")).json() == body
    assert (await api.get("/users/count")).json() == {"count": 1}
    assert_problem(
        await api.post(f"/users/{user_id}/restore"),
        409,
        "state-conflict",
        f"user {user_id} is not deleted: there is nothing to restore",
    )
    history = await _rows(engine, LifecycleTransition, LifecycleTransition.user_id == user_id)
    assert [(h.to_state, h.cause) for h in history] == [
        ("ACTIVE", "created"),
        ("SUSPENDED", "deleted"),
        ("ACTIVE", "restored"),
    ]
    audits = await _rows(engine, AuditEntry, AuditEntry.resource_id == user_id)
    assert [a.action for a in audits][-2:] == ["user.delete", "user.restore"]
    operations = await _rows(engine, OutboxEntry, OutboxEntry.aggregate_id == user_id)
    assert [o.operation for o in operations if o.target == "auth0"] == [
        "upsert",
        "delete",
        "upsert",
    ]


@pytest.mark.usefixtures("groups")
async def test_a_restore_needs_the_username_free_and_the_user_not_deprovisioned(
    api: httpx.AsyncClient, store: Store
) -> None:
    """409 ``conflict`` when a live user took the username meanwhile; 409
    ``state-conflict`` once the deletion sync made it ``INACTIVE``; 404 for
    an id no user ever had."""
    first = (await _create(api, "ada@example.com"))["id"]
    await api.delete(f"/users/{first}")
    second = (await _create(api, "ada@example.com"))["id"]
    assert_problem(
        await api.post(f"/users/{first}/restore"),
        409,
        "conflict",
        "userName 'ada@example.com' is already taken",
    )
    await api.delete(f"/users/{second}")
    outcome = await deprovisioning.deprovision_batch(
        store,
        cutoff=datetime.now(UTC) + timedelta(days=1),
        limit=10,
        actor=Actor(name="job:deletion-sync"),
        hard_delete=False,
    )
    assert outcome.users == 2
    assert_problem(
        await api.post(f"/users/{first}/restore"),
        409,
        "state-conflict",
        f"user {first} was deprovisioned by the deletion sync (INACTIVE) and cannot be restored",
    )
    assert_problem(await api.post(f"/users/{ULID}/restore"), 404, "not-found")


def _nested(levels: int) -> Any:
    value: Any = 1
    for _ in range(levels - 1):
        value = [value]
    return {"a": value}


HOSTILE: list[tuple[str, dict[str, Any], int, str]] = [
    ("a NUL in a name", {"givenName": "a\x00b"}, 400, "invalid-value"),
    ("a control character", {"familyName": "a\x07"}, 400, "invalid-request"),
    ("an e-mail without @", {"email": "nobody"}, 400, "invalid-request"),
    ("a name of 256 characters", {"name": "n" * 256}, 400, "invalid-request"),
    ("a year-1 date", {"expirationDate": "0001-01-01T00:00:00+05:00"}, 400, "invalid-request"),
    ("a date without a zone", {"expirationDate": "2030-01-01T00:00:00"}, 400, "invalid-request"),
    ("customData 33 levels deep", {"customData": _nested(33)}, 400, "invalid-request"),
    ("customData of 70,000 bytes", {"customData": {"a": "x" * 70_000}}, 400, "invalid-request"),
    ("10,000 roles", {"roles": [f"r{i}" for i in range(10_000)]}, 400, "invalid-request"),
    ("customData not an object", {"customData": [1]}, 400, "invalid-request"),
    ("an unknown field", {"password": "x"}, 400, "invalid-request"),
]


@pytest.mark.usefixtures("groups")
async def test_hostile_users_are_refused_and_nothing_is_stored(api: httpx.AsyncClient) -> None:
    """One request per limit, each refused whole."""
    for name, fields, status, kind in HOSTILE:
        body = {"userGroup": "staff", "email": "ada@example.com", **fields}
        response = await api.post("/users", json=body)
        assert response.status_code == status, (name, response.text)
        assert_problem(response, status, kind)
    assert (await api.get("/users/count")).json() == {"count": 0}


HOSTILE_QUERIES: list[tuple[str, str, str]] = [
    ("a NUL in q", "/users?q=a%00b", "invalid-request"),
    ("an empty q", "/users?q=", "invalid-request"),
    ("a q of 256 characters", "/users?q=" + "a" * 256, "invalid-request"),
    ("an unknown state", "/users?lifecycle=GONE", "invalid-request"),
    ("a count of 0", "/users?count=0", "invalid-request"),
    ("a count of 1001", "/users?count=1001", "invalid-request"),
    ("a 20-digit count", "/users?count=12345678901234567890", "invalid-request"),
    ("a cursor of another list", "/users?cursor=cm9sZXM6YQ", "invalid-cursor"),
    ("a cursor of nothing", "/users?cursor=AAAA", "invalid-cursor"),
    ("an unknown parameter", "/users?usergroup=staff", "invalid-request"),
    ("a NUL in the count's q", "/users/count?q=%00", "invalid-request"),
]


async def test_hostile_queries_are_400(api: httpx.AsyncClient) -> None:
    for name, url, kind in HOSTILE_QUERIES:
        response = await api.get(url)
        assert response.status_code == 400, (name, response.text)
        assert_problem(response, 400, kind)


async def test_users_need_the_admin_scope(as_scope: Any) -> None:
    """``authz:check`` and SCIM tokens get 403 on every users endpoint."""
    for scope in ("authz:check", "scim:write"):
        client = as_scope(scope)
        assert_problem(await client.get("/users"), 403, "insufficient-scope")
        assert_problem(
            await client.post("/users", json={"userGroup": "g", "email": "a@b.c"}),
            403,
            "insufficient-scope",
        )
        assert_problem(await client.get("/user-groups"), 403, "insufficient-scope")
