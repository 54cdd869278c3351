"""A user's lifecycle over SCIM (SPEC §4 "visible in the API"): the product
extension's read-only ``lifecycle``, ``lifecycleChangedAt`` and ``status``
steps, which no client writes (RFC 7643 §2.2 readOnly: ignored in a POST or
PUT, RFC 7644 §3.5.1; a PATCH naming one is 400 ``mutability``, as for
``lifecycle`` since the extension was served)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import httpx
import pytest
from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession

from identity_store.models import User

from .helpers import PRODUCT, USER_SCHEMA, assert_error, create_user, patch_body

COMPLETE = {"schemas": [USER_SCHEMA, PRODUCT], PRODUCT: {"idpUsername": "ada"}}


def _moment(text: str) -> datetime:
    assert text.endswith("Z"), text  # every SCIM time in UTC, as meta.created
    return datetime.fromisoformat(text)


async def _changed_at(session: AsyncSession, user_id: str) -> datetime:
    found = await session.scalar(select(User.lifecycle_changed_at).where(User.id == user_id))
    assert found is not None
    return found


async def test_a_user_shows_its_state_and_since_when(
    scim: httpx.AsyncClient, session: AsyncSession
) -> None:
    """``lifecycleChangedAt`` is the stored time of the last transition; a
    transition moves it, a write that moves nothing leaves it."""
    created = await create_user(scim, "ada@corp.example", **COMPLETE)
    product = created[PRODUCT]
    assert product["lifecycle"] == "ACTIVE"
    assert _moment(product["lifecycleChangedAt"]) == await _changed_at(session, created["id"])

    titled = await scim.patch(
        f"/Users/{created['id']}", json=patch_body({"op": "replace", "path": "title", "value": "X"})
    )
    assert titled.json()[PRODUCT]["lifecycleChangedAt"] == product["lifecycleChangedAt"]

    off = await scim.patch(
        f"/Users/{created['id']}",
        json=patch_body({"op": "replace", "path": "active", "value": False}),
    )
    moved = off.json()[PRODUCT]
    assert moved["lifecycle"] == "SUSPENDED"
    assert _moment(moved["lifecycleChangedAt"]) > _moment(product["lifecycleChangedAt"])
    read = (await scim.get(f"/Users/{created['id']}")).json()[PRODUCT]
    assert read["lifecycleChangedAt"] == moved["lifecycleChangedAt"]


async def test_status_steps_come_out_as_the_schema_names_them(
    scim: httpx.AsyncClient, session: AsyncSession
) -> None:
    """Stored ``{name, status, message, updated_at}`` (identity_store.status_steps)
    is served ``{name, status, message, updatedAt}``, the time in UTC with ``Z``;
    an absent message is left out, as every unassigned attribute."""
    created = await create_user(scim, "bo@corp.example")
    assert "status" not in created[PRODUCT]  # no step yet
    steps = [
        {
            "name": "PROFILE_SYNC",
            "status": "ERROR",
            "message": "idp_username still missing after 3 look-ups",
            "updated_at": "2026-12-02T10:00:00+00:00",
        },
        {"name": "AUTH0_SYNC", "status": "OK", "message": None, "updated_at": "2026-12-02T10:01"},
    ]
    await session.execute(update(User).where(User.id == created["id"]).values(status=steps))
    await session.commit()
    body = (await scim.get(f"/Users/{created['id']}")).json()
    assert body[PRODUCT]["status"] == [
        {
            "name": "PROFILE_SYNC",
            "status": "ERROR",
            "message": "idp_username still missing after 3 look-ups",
            "updatedAt": "2026-12-02T10:00:00Z",
        },
        {"name": "AUTH0_SYNC", "status": "OK", "updatedAt": "2026-12-02T10:01:00"},
    ]
    only = await scim.get(
        f"/Users/{created['id']}", params={"attributes": f"{PRODUCT}:status.updatedAt"}
    )
    assert only.status_code == 200, only.text
    assert [s.get("updatedAt") for s in only.json()[PRODUCT]["status"]] == [
        "2026-12-02T10:00:00Z",
        "2026-12-02T10:01:00",
    ]


@pytest.mark.parametrize(
    ("path", "value"),
    [
        pytest.param(
            f"{PRODUCT}:lifecycleChangedAt", "2020-01-01T00:00:00Z", id="lifecycleChangedAt"
        ),
        pytest.param(f"{PRODUCT}:lifecycle", "ACTIVE", id="lifecycle"),
        pytest.param(
            f"{PRODUCT}:status",
            [{"name": "PROFILE_SYNC", "status": "OK"}],
            id="status",
        ),
    ],
)
@pytest.mark.parametrize("op", ["replace", "add"])
async def test_a_patch_naming_a_read_only_lifecycle_attribute_is_refused(
    scim: httpx.AsyncClient, session: AsyncSession, op: str, path: str, value: Any
) -> None:
    """400 ``mutability`` and nothing written: same version, same time."""
    created = await create_user(scim, "cy@corp.example")
    before = await _changed_at(session, created["id"])
    response = await scim.patch(
        f"/Users/{created['id']}", json=patch_body({"op": op, "path": path, "value": value})
    )
    assert_error(response, 400, "mutability")
    after = (await scim.get(f"/Users/{created['id']}")).json()
    assert after["meta"]["version"] == created["meta"]["version"]
    assert await _changed_at(session, created["id"]) == before


async def test_a_patch_removing_lifecycle_changed_at_is_refused(scim: httpx.AsyncClient) -> None:
    created = await create_user(scim, "di@corp.example")
    response = await scim.patch(
        f"/Users/{created['id']}",
        json=patch_body({"op": "remove", "path": f"{PRODUCT}:lifecycleChangedAt"}),
    )
    assert_error(response, 400, "mutability")


async def test_read_only_lifecycle_attributes_sent_in_a_post_or_put_are_ignored(
    scim: httpx.AsyncClient, session: AsyncSession
) -> None:
    """RFC 7644 §3.3 and §3.5.1: the server's values stand."""
    noise = {
        "lifecycle": "INACTIVE",
        "lifecycleChangedAt": "2001-01-01T00:00:00Z",
        "status": [{"name": "PROFILE_SYNC", "status": "OK"}],
    }
    created = await create_user(
        scim, "ed@corp.example", **{"schemas": [USER_SCHEMA, PRODUCT], PRODUCT: noise}
    )
    assert created[PRODUCT]["lifecycle"] == "CREATED"
    assert created[PRODUCT]["lifecycleChangedAt"] != noise["lifecycleChangedAt"]
    assert "status" not in created[PRODUCT]
    before = await _changed_at(session, created["id"])
    replaced = await scim.put(
        f"/Users/{created['id']}",
        json={
            "schemas": [USER_SCHEMA, PRODUCT],
            "userName": "ed@corp.example",
            PRODUCT: {**noise, "idpUsername": "ed", "idpCloudUsername": "ed@corp.example"},
        },
    )
    assert replaced.status_code == 200, replaced.text
    body = replaced.json()[PRODUCT]
    assert body["lifecycle"] == "ACTIVE"  # moved by the IdP attributes, not by the noise
    assert _moment(body["lifecycleChangedAt"]) > before
    assert "status" not in body


async def test_the_schema_declares_lifecycle_changed_at_read_only(
    scim: httpx.AsyncClient,
) -> None:
    schema = (await scim.get(f"/Schemas/{PRODUCT}")).json()
    attributes = {a["name"]: a for a in schema["attributes"]}
    changed_at = attributes["lifecycleChangedAt"]
    assert (changed_at["type"], changed_at["mutability"]) == ("dateTime", "readOnly")
    assert attributes["status"]["mutability"] == "readOnly"
    steps = {a["name"]: a for a in attributes["status"]["subAttributes"]}
    assert steps["updatedAt"]["type"] == "dateTime"


async def test_users_can_be_found_by_state_and_since_when(scim: httpx.AsyncClient) -> None:
    """``lifecycle`` and ``lifecycleChangedAt`` filter and sort like any attribute:
    "suspended since before a date" is one query."""
    first = await create_user(scim, "fi@corp.example", active=False)
    await create_user(scim, "gu@corp.example")
    since = first[PRODUCT]["lifecycleChangedAt"]
    query = f'{PRODUCT}:lifecycle eq "SUSPENDED" and {PRODUCT}:lifecycleChangedAt le "{since}"'
    found = (await scim.get("/Users", params={"filter": query})).json()
    assert [u["userName"] for u in found["Resources"]] == ["fi@corp.example"]
    later = datetime(2000, 1, 1, tzinfo=UTC).isoformat().replace("+00:00", "Z")
    none = (
        await scim.get("/Users", params={"filter": f'{PRODUCT}:lifecycleChangedAt lt "{later}"'})
    ).json()
    assert none["totalResults"] == 0
    ordered = (
        await scim.get(
            "/Users", params={"sortBy": f"{PRODUCT}:lifecycleChangedAt", "sortOrder": "descending"}
        )
    ).json()
    assert [u["userName"] for u in ordered["Resources"]] == ["gu@corp.example", "fi@corp.example"]
