"""Rönd's standalone endpoints over HTTP (``/api/v1/rond/...``), answered
as Rönd answers them, and the export of Rönd's collections."""

from __future__ import annotations

import httpx
import pytest

from .conftest import Directory, assert_problem
from .test_roles import revision_of


@pytest.fixture
async def people(api: httpx.AsyncClient, directory: Directory) -> dict[str, str]:
    """alice, bob, group G; role reader {doc.read}."""
    ids = {"alice": await directory.user("alice"), "bob": await directory.user("bob")}
    ids["G"] = await directory.group("G")
    response = await api.post(
        "/roles",
        json={"roleId": "reader", "name": "Reader", "permissions": ["doc.read"]},
    )
    assert response.status_code == 201, response.text
    return ids


async def test_a_grant_creates_a_binding_everywhere_and_answers_its_id(
    api: httpx.AsyncClient, people: dict[str, str]
) -> None:
    """200 ``{bindingId}`` and the revision; a ``resourceId`` without a type
    in the path is ignored, as Rönd ignores it; unknown fields too."""
    response = await api.post(
        "/rond/grant/bindings",
        json={
            "resourceId": "ignored",
            "subjects": [people["alice"]],
            "groups": [],
            "roles": ["reader"],
            "permissions": [],
            "unknownField": True,
        },
    )
    assert response.status_code == 200, response.text
    assert set(response.json()) == {"bindingId"}
    binding = (await api.get(f"/bindings/{response.json()['bindingId']}")).json()
    assert (binding["subjects"], binding["roles"], binding["resource"]) == (
        [people["alice"]],
        ["reader"],
        None,
    )
    assert revision_of(response) >= 1


async def test_a_grant_on_a_resource_type_binds_on_that_resource(
    api: httpx.AsyncClient, people: dict[str, str]
) -> None:
    """The path's type and the body's ``resourceId`` make the binding's resource."""
    response = await api.post(
        "/rond/grant/bindings/resource/project",
        json={"resourceId": "p1", "groups": [people["G"]], "permissions": ["project.edit"]},
    )
    assert response.status_code == 200, response.text
    binding = (await api.get(f"/bindings/{response.json()['bindingId']}")).json()
    assert binding["resource"] == {"resourceType": "project", "resourceId": "p1"}
    assert binding["permissions"] == ["project.edit"]


@pytest.mark.parametrize(
    ("path", "body", "detail"),
    [
        (
            "/rond/grant/bindings/resource/project",
            {"subjects": ["{alice}"], "roles": ["reader"]},
            "missing resource id",
        ),
        (
            "/rond/grant/bindings/resource/project",
            {"resourceId": "", "subjects": ["{alice}"], "roles": ["reader"]},
            None,
        ),
        (
            "/rond/grant/bindings",
            {"subjects": [], "groups": [], "roles": [], "permissions": []},
            "a binding needs at least one subject or group",
        ),
        ("/rond/grant/bindings", {"subjects": ["{alice}"], "roles": ["nope"]}, None),
    ],
    ids=["no resource id", "empty resource id", "all lists empty", "unknown role"],
)
async def test_a_grant_rond_refuses_is_400_and_writes_nothing(
    api: httpx.AsyncClient,
    people: dict[str, str],
    path: str,
    body: dict[str, object],
    detail: str | None,
) -> None:
    """Each of Rönd's refusals (and an unknown role) is a 400; no binding is made."""
    body = {
        key: [v.format(**people) for v in value] if isinstance(value, list) else value
        for key, value in body.items()
    }
    assert_problem(await api.post(path, json=body), 400, "invalid-request", detail)
    assert (await api.get("/bindings")).json()["items"] == []


async def test_a_revoke_takes_subjects_out_and_deletes_emptied_bindings(
    api: httpx.AsyncClient, people: dict[str, str]
) -> None:
    """alice leaves both bindings: the one she shared is modified, the one
    that was hers alone is deleted; Rönd's counts answer."""
    shared = {"bindingId": "shared", "subjects": [people["alice"], people["bob"]]}
    alone = {"bindingId": "alone", "subjects": [people["alice"]]}
    for body in (shared, alone):
        response = await api.post("/bindings", json=body | {"roles": ["reader"]})
        assert response.status_code == 201, response.text
    response = await api.post("/rond/revoke/bindings", json={"subjects": [people["alice"]]})
    assert response.status_code == 200, response.text
    assert response.json() == {"deletedBindings": 1, "modifiedBindings": 1}
    assert int(response.headers["rbac-revision"]) >= 1
    assert (await api.get("/bindings/shared")).json()["subjects"] == [people["bob"]]
    assert_problem(await api.get("/bindings/alone"), 404, "not-found")


async def test_a_revoke_on_resources_deletes_their_bindings(
    api: httpx.AsyncClient, people: dict[str, str]
) -> None:
    """With a type in the path and ``resourceIds`` only, every binding on
    those resources goes; others stay."""
    for resource_id in ("p1", "p2", "p3"):
        response = await api.post(
            "/rond/grant/bindings/resource/project",
            json={"resourceId": resource_id, "subjects": [people["bob"]], "roles": ["reader"]},
        )
        assert response.status_code == 200, response.text
    response = await api.post(
        "/rond/revoke/bindings/resource/project", json={"resourceIds": ["p1", "p2"]}
    )
    assert response.json() == {"deletedBindings": 2, "modifiedBindings": 0}
    left = (await api.get("/bindings")).json()["items"]
    assert [b["resource"]["resourceId"] for b in left] == ["p3"]


@pytest.mark.parametrize(
    ("path", "body"),
    [
        ("/rond/revoke/bindings", {}),
        ("/rond/revoke/bindings", {"resourceIds": ["p1"]}),
        ("/rond/revoke/bindings/resource/project", {"resourceIds": []}),
    ],
    ids=["nothing", "ids without a type", "a type without ids"],
)
async def test_a_revoke_with_nothing_to_revoke_is_400(
    api: httpx.AsyncClient, path: str, body: dict[str, object]
) -> None:
    """Neither subjects nor groups nor (a type and resource ids): Rönd's 400."""
    assert_problem(
        await api.post(path, json=body),
        400,
        "invalid-request",
        "empty subjects and groups lists or resource ids",
    )


async def test_the_export_gives_rond_documents(
    api: httpx.AsyncClient, people: dict[str, str]
) -> None:
    """Roles as ``{roleId, name, description, permissions}`` (an absent
    description is Rönd's empty string) and bindings as ``{bindingId,
    subjects, groups, roles, permissions, resource?}``: no timestamps, no
    resource key for a binding everywhere."""
    await api.post(
        "/bindings", json={"bindingId": "b1", "groups": [people["G"]], "roles": ["reader"]}
    )
    await api.post(
        "/bindings",
        json={
            "bindingId": "b2",
            "subjects": [people["bob"]],
            "permissions": ["doc.read"],
            "resource": {"resourceType": "doc", "resourceId": "7"},
        },
    )
    response = await api.get("/rbac/export")
    assert response.status_code == 200, response.text
    assert response.json() == {
        "roles": [
            {"roleId": "reader", "name": "Reader", "description": "", "permissions": ["doc.read"]}
        ],
        "bindings": [
            {
                "bindingId": "b1",
                "subjects": [],
                "groups": [people["G"]],
                "roles": ["reader"],
                "permissions": [],
            },
            {
                "bindingId": "b2",
                "subjects": [people["bob"]],
                "groups": [],
                "roles": [],
                "permissions": ["doc.read"],
                "resource": {"resourceType": "doc", "resourceId": "7"},
            },
        ],
    }
