"""Each request shape Microsoft Entra ID's provisioning service and SCIM
validator send, replayed with Entra's JSON, in both of its modes."""

from __future__ import annotations

import uuid

import httpx
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from identity_store.models import GroupMember, User

from .payloads import (
    ADSCIM_GROUP,
    ENTERPRISE,
    FLAG,
    GROUP,
    PRODUCT,
    USER,
    add_members,
    create_group,
    create_user,
    op,
    patch,
    remove_members,
    set_active,
    set_manager,
)

LIST = "urn:ietf:params:scim:api:messages:2.0:ListResponse"


async def _user(entra: httpx.AsyncClient, upn: str, **extra: object) -> dict[str, object]:
    body = create_user(upn, str(uuid.uuid4()), "Given", "Family", **extra)  # type: ignore[arg-type]
    response = await entra.post("/Users", json=body)
    assert response.status_code == 201, response.text
    return dict(response.json())


async def _group(entra: httpx.AsyncClient, name: str) -> dict[str, object]:
    response = await entra.post("/Groups", json=create_group(name, str(uuid.uuid4())))
    assert response.status_code == 201, response.text
    return dict(response.json())


async def test_test_connection_filters_answer_an_empty_list(entra: httpx.AsyncClient) -> None:
    """The validator's probes get 200 and an empty ListResponse, never 404."""
    probes = [
        ("/Users", f'userName eq "{uuid.uuid4()}"'),
        ("/Users", f'externalId eq "{uuid.uuid4()}"'),
        ("/Groups", f'displayName eq "{uuid.uuid4()}"'),
        ("/Groups", f'externalId eq "{uuid.uuid4()}"'),
        ("/Users", f'id eq "{uuid.uuid4()}" and manager eq "{uuid.uuid4()}"'),
        ("/Users", 'emails[type eq "work"].value eq "nobody@contoso.com"'),
    ]
    for path, expression in probes:
        response = await entra.get(path, params={"filter": expression})
        assert response.status_code == 200, (expression, response.text)
        assert response.headers["content-type"].startswith("application/scim+json")
        body = response.json()
        assert body["schemas"] == [LIST]
        assert body["totalResults"] == 0
        assert body["Resources"] == []


async def test_filters_find_what_entra_looks_up(entra: httpx.AsyncClient) -> None:
    user = await _user(entra, "Finder@Contoso.com")
    manager = await _user(entra, "boss@contoso.com")
    assert (
        await entra.patch(f"/Users/{user['id']}", json=set_manager("default", str(manager["id"])))
    ).status_code == 200
    cases = [
        'userName eq "finder@contoso.com"',
        f'externalId eq "{user["externalId"]}"',
        f'id eq "{user["id"]}" and manager eq "{manager["id"]}"',
        'emails[type eq "work"].value eq "FINDER@contoso.com"',
    ]
    for expression in cases:
        found = (await entra.get("/Users", params={"filter": expression})).json()
        assert [r["id"] for r in found["Resources"]] == [user["id"]], expression


async def test_unquoted_legacy_values_are_a_clear_invalid_filter(entra: httpx.AsyncClient) -> None:
    response = await entra.get("/Users", params={"filter": "userName eq bjensen"})
    assert response.status_code == 400
    assert response.json()["scimType"] == "invalidFilter"


async def test_op_in_any_letter_case(entra: httpx.AsyncClient) -> None:
    user = await _user(entra, "ops@contoso.com")
    for name, value in (("Add", "A"), ("REPLACE", "B"), ("replace", "C")):
        response = await entra.patch(
            f"/Users/{user['id']}", json=patch({"op": name, "path": "title", "value": value})
        )
        assert response.status_code == 200, response.text
        assert response.json()["title"] == value
    removed = await entra.patch(
        f"/Users/{user['id']}", json=patch({"op": "Remove", "path": "title"})
    )
    assert "title" not in removed.json()


async def test_booleans_as_strings(entra: httpx.AsyncClient) -> None:
    """``"active": "True"`` on POST and ``"False"`` in PATCH are booleans."""
    user = await _user(entra, "strings@contoso.com", active="True")
    assert user["active"] is True
    off = await entra.patch(
        f"/Users/{user['id']}", json=patch({"op": "Replace", "path": "active", "value": "False"})
    )
    assert off.json()["active"] is False


async def test_path_less_values_with_dotted_and_urn_keys(
    entra: httpx.AsyncClient, mode: str
) -> None:
    user = await _user(entra, "pathless@contoso.com")
    for name in ("add", "replace"):
        response = await entra.patch(
            f"/Users/{user['id']}",
            json=patch(
                op(
                    mode,
                    name,
                    None,
                    {
                        "name.givenName": f"G-{name}",
                        f"{ENTERPRISE}:employeeNumber": f"E-{name}",
                        'emails[type eq "work"].value': f"{name}@contoso.com",
                        "displayName": f"D-{name}",
                    },
                )
            ),
        )
        assert response.status_code == 200, response.text
        body = response.json()
        assert body["name"]["givenName"] == f"G-{name}"
        assert body[ENTERPRISE]["employeeNumber"] == f"E-{name}"
        assert body["emails"] == [{"value": f"{name}@contoso.com", "type": "work", "primary": True}]
        assert body["displayName"] == f"D-{name}"


async def test_add_to_a_missing_filtered_entry_creates_it(
    entra: httpx.AsyncClient, mode: str
) -> None:
    user = await _user(entra, "adds@contoso.com")
    response = await entra.patch(
        f"/Users/{user['id']}",
        json=patch(
            op(mode, "add", 'phoneNumbers[type eq "work"].value', "+14255550100"),
            op(mode, "add", 'phoneNumbers[type eq "mobile"].value', "+14255550101"),
            op(mode, "add", 'addresses[type eq "work"].streetAddress', "1 Microsoft Way"),
            op(mode, "add", 'addresses[type eq "work"].locality', "Redmond"),
            op(mode, "add", 'emails[type eq "other"].value', "other@contoso.com"),
        ),
    )
    assert response.status_code == 200, response.text
    body = response.json()
    assert sorted((p["type"], p["value"]) for p in body["phoneNumbers"]) == [
        ("mobile", "+14255550101"),
        ("work", "+14255550100"),
    ]
    assert body["addresses"] == [
        {"streetAddress": "1 Microsoft Way", "locality": "Redmond", "type": "work"}
    ]
    assert {e["type"] for e in body["emails"]} == {"work", "other"}


async def test_manager_as_string_object_and_removal(entra: httpx.AsyncClient) -> None:
    user = await _user(entra, "report@contoso.com")
    boss = await _user(entra, "boss2@contoso.com")
    other = await _user(entra, "boss3@contoso.com")
    uid = user["id"]
    as_string = await entra.patch(
        f"/Users/{uid}",
        json=patch({"op": "Replace", "path": f"{ENTERPRISE}:manager", "value": boss["id"]}),
    )
    assert as_string.json()[ENTERPRISE]["manager"]["value"] == boss["id"]
    as_object = await entra.patch(
        f"/Users/{uid}",
        json=patch(
            {"op": "Replace", "path": f"{ENTERPRISE}:manager", "value": {"value": other["id"]}}
        ),
    )
    manager = as_object.json()[ENTERPRISE]["manager"]
    assert manager["value"] == other["id"]
    assert manager["displayName"] == "Given Family"
    removed = await entra.patch(
        f"/Users/{uid}", json=patch({"op": "Remove", "path": f"{ENTERPRISE}:manager"})
    )
    assert "manager" not in removed.json().get(ENTERPRISE, {})
    cleared = await entra.patch(
        f"/Users/{uid}",
        json=patch(
            {"op": "Replace", "path": f"{ENTERPRISE}:manager", "value": boss["id"]},
            {"op": "Replace", "path": f"{ENTERPRISE}:manager", "value": ""},
        ),
    )
    assert "manager" not in cleared.json().get(ENTERPRISE, {})


async def _member_ids(session: AsyncSession, group_id: object) -> set[str]:
    rows = await session.scalars(
        select(GroupMember.member_id).where(GroupMember.group_id == group_id)
    )
    return set(rows.all())


async def test_member_removal_removes_exactly_the_named_members(
    entra: httpx.AsyncClient, mode: str, session: AsyncSession
) -> None:
    """A value list (default) or filtered paths (flag): never all members."""
    users = [str((await _user(entra, f"m{i}@contoso.com"))["id"]) for i in range(5)]
    group = await _group(entra, "Removal")
    gid = group["id"]
    added = await entra.patch(f"/Groups/{gid}", json=add_members(mode, users))
    assert added.status_code == 204, added.text
    assert added.content == b""
    one = await entra.patch(f"/Groups/{gid}", json=remove_members(mode, users[:1]))
    assert one.status_code == 204, one.text
    assert await _member_ids(session, gid) == set(users[1:])
    several = await entra.patch(f"/Groups/{gid}", json=remove_members(mode, users[1:3]))
    assert several.status_code == 204, several.text
    assert await _member_ids(session, gid) == set(users[3:])
    # Both forms are accepted whatever the mode.
    other = FLAG if mode == "default" else "default"
    last = await entra.patch(f"/Groups/{gid}", json=remove_members(other, users[3:4]))
    assert last.status_code == 204
    assert await _member_ids(session, gid) == {users[4]}


async def test_member_add_with_null_ref_and_bare_string(
    entra: httpx.AsyncClient, session: AsyncSession
) -> None:
    a = str((await _user(entra, "ref@contoso.com"))["id"])
    b = str((await _user(entra, "bare@contoso.com"))["id"])
    group = await _group(entra, "Adds")
    with_ref = await entra.patch(
        f"/Groups/{group['id']}",
        json=patch({"op": "Add", "path": "members", "value": [{"$ref": None, "value": a}]}),
    )
    assert with_ref.status_code == 204, with_ref.text
    bare = await entra.patch(
        f"/Groups/{group['id']}", json=patch({"op": "Add", "path": "members", "value": [b]})
    )
    assert bare.status_code == 204, bare.text
    assert await _member_ids(session, group["id"]) == {a, b}


async def test_group_create_tolerates_entra_schema_uris(entra: httpx.AsyncClient) -> None:
    body = create_group("Tolerant", str(uuid.uuid4()))
    body["schemas"].append("urn:ietf:params:scim:schemas:extension:contoso:2.0:Group")
    body["urn:ietf:params:scim:schemas:extension:contoso:2.0:Group"] = {"costCode": "1"}
    response = await entra.post("/Groups", json=body)
    assert response.status_code == 201, response.text
    assert ADSCIM_GROUP in create_group("x", "y")["schemas"]
    assert response.json()["schemas"] == [GROUP]


async def test_user_create_tolerates_read_only_noise(entra: httpx.AsyncClient) -> None:
    """``"manager": null``, ``meta``, an ``id`` and an unknown extension are ignored."""
    body = create_user("noise@contoso.com", str(uuid.uuid4()), "N", "Oise")
    body["id"] = "client-chosen"
    body["schemas"].append("urn:ietf:params:scim:schemas:extension:contoso:2.0:User")
    body["urn:ietf:params:scim:schemas:extension:contoso:2.0:User"] = {"x": 1}
    response = await entra.post("/Users", json=body)
    assert response.status_code == 201, response.text
    assert response.json()["id"] != "client-chosen"
    assert "manager" not in response.json()[ENTERPRISE]


async def test_app_roles_stringified_and_complex(entra: httpx.AsyncClient) -> None:
    user = await _user(entra, "roles@contoso.com")
    stringified = await entra.patch(
        f"/Users/{user['id']}",
        json=patch(
            {
                "op": "Add",
                "path": "roles",
                "value": [
                    {
                        "value": '{"id":"06b07648-ecfe-589f-9d2f-6325724a46ee",'
                        '"value":"Admin","displayName":"Administrator"}'
                    }
                ],
            }
        ),
    )
    assert stringified.status_code == 200, stringified.text
    assert stringified.json()["roles"] == [{"value": "Admin", "display": "Administrator"}]
    complex_replace = await entra.patch(
        f"/Users/{user['id']}",
        json=patch(
            {
                "op": "replace",
                "path": "roles",
                "value": [
                    {
                        "primary": True,
                        "type": "WindowsAzureActiveDirectoryRole",
                        "display": "Reader",
                        "value": "Reader",
                    }
                ],
            }
        ),
    )
    assert complex_replace.status_code == 200, complex_replace.text
    assert complex_replace.json()["roles"] == [
        {
            "value": "Reader",
            "display": "Reader",
            "type": "WindowsAzureActiveDirectoryRole",
            "primary": True,
        }
    ]


async def test_soft_delete_and_reactivation(
    entra: httpx.AsyncClient, mode: str, session: AsyncSession
) -> None:
    """active=false keeps the user readable, SUSPENDED, in its groups; active=true
    restores ACTIVE."""
    user = await _user(entra, "soft@contoso.com")
    uid = user["id"]
    assert user[PRODUCT]["lifecycle"] == "ACTIVE"
    group = await _group(entra, "Kept")
    await entra.patch(f"/Groups/{group['id']}", json=add_members(mode, [str(uid)]))
    off = await entra.patch(f"/Users/{uid}", json=set_active(mode, False))
    assert off.status_code == 200, off.text
    assert off.json()[PRODUCT]["lifecycle"] == "SUSPENDED"
    read = await entra.get(f"/Users/{uid}")
    assert read.status_code == 200
    assert read.json()["active"] is False
    found = await entra.get("/Users", params={"filter": 'userName eq "soft@contoso.com"'})
    assert found.json()["totalResults"] == 1
    inactive = await entra.get("/Users", params={"filter": "active eq false"})
    assert [r["id"] for r in inactive.json()["Resources"]] == [uid]
    assert await _member_ids(session, group["id"]) == {uid}
    on = await entra.patch(f"/Users/{uid}", json=set_active(mode, True))
    assert on.json()[PRODUCT]["lifecycle"] == "ACTIVE"
    assert on.json()["active"] is True


async def test_delete_then_recreate_with_the_same_user_name_and_external_id(
    entra: httpx.AsyncClient, session: AsyncSession
) -> None:
    """DELETE is 204 and the id 404 afterwards; the store keeps the record; a new
    POST with the same userName and externalId creates a new user."""
    body = create_user("gone@contoso.com", str(uuid.uuid4()), "Gone", "User")
    first = (await entra.post("/Users", json=body)).json()
    deleted = await entra.delete(f"/Users/{first['id']}")
    assert deleted.status_code == 204
    assert deleted.headers["content-type"].startswith("application/scim+json")
    assert (await entra.get(f"/Users/{first['id']}")).status_code == 404
    again = await entra.post("/Users", json=body)
    assert again.status_code == 201, again.text
    assert again.json()["id"] != first["id"]
    kept = await session.get(User, first["id"])
    assert kept is not None
    assert kept.lifecycle == "SUSPENDED"
    assert kept.deleted_at is not None
    by_external = await entra.get(
        "/Users", params={"filter": f'externalId eq "{body["externalId"]}"'}
    )
    assert [r["id"] for r in by_external.json()["Resources"]] == [again.json()["id"]]


async def test_case_insensitive_paths_and_scim_content_type_everywhere(
    entra: httpx.AsyncClient,
) -> None:
    user = await _user(entra, "paths@contoso.com")
    responses = [
        await entra.get(f"/users/{user['id']}"),
        await entra.get("/groups"),
        await entra.get(f"/USERS/{user['id']}", headers={"If-None-Match": user["meta"]["version"]}),
        await entra.get("/users/nope"),
        await entra.patch(
            f"/users/{user['id']}", json=patch({"op": "Replace", "path": "title", "value": "T"})
        ),
        await entra.get("/serviceproviderconfig"),
    ]
    assert [r.status_code for r in responses] == [200, 200, 304, 404, 200, 200]
    for response in responses:
        assert response.headers["content-type"].startswith("application/scim+json")


async def test_entra_users_carry_their_idp_identifiers(
    entra: httpx.AsyncClient, session: AsyncSession
) -> None:
    """idp_source AAD (the token is issued for AAD), idp_reference_id the object id,
    idp_cloud_username the UPN, which follows a UPN rename."""
    object_id = str(uuid.uuid4())
    created = await entra.post("/Users", json=create_user("upn@contoso.com", object_id, "U", "P"))
    uid = created.json()["id"]
    product = created.json()[PRODUCT]
    assert product["idpSource"] == "AAD"
    assert product["idpReferenceId"] == object_id
    assert product["idpCloudUsername"] == "upn@contoso.com"
    renamed = await entra.patch(
        f"/Users/{uid}",
        json=patch({"op": "Replace", "path": "userName", "value": "renamed@contoso.com"}),
    )
    assert renamed.json()[PRODUCT]["idpCloudUsername"] == "renamed@contoso.com"
    row = await session.get(User, uid)
    assert row is not None
    assert (row.idp_source, row.idp_reference_id, row.idp_cloud_username) == (
        "AAD",
        object_id,
        "renamed@contoso.com",
    )


async def test_flag_in_the_tenant_url_routes_like_the_plain_url(
    entra: httpx.AsyncClient,
) -> None:
    """``/scim/v2?aadOptscim062020`` is the same service as ``/scim/v2``."""
    response = await entra.get("/Users", params={FLAG: "", "filter": 'userName eq "x"'})
    assert response.status_code == 200
    config = await entra.get("/ServiceProviderConfig", params={FLAG: ""})
    assert config.json()["patch"] == {"supported": True}
    assert USER  # the core schema URN Entra sends in every user body
