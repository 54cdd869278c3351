"""``/api/v1/groups/{id}/roles`` and ``/api/v1/users/{id}/roles`` over HTTP:
read, replace as a whole, refuse unknown roles and unknown owners."""

from __future__ import annotations

import httpx
import pytest

from .conftest import Directory, assert_problem
from .test_roles import revision_of

UNKNOWN = "01JZ0000000000000000000000"


@pytest.fixture
async def roles(api: httpx.AsyncClient) -> list[str]:
    for role_id in ("a", "b", "c"):
        response = await api.post(
            "/roles", json={"roleId": role_id, "name": role_id, "permissions": [f"{role_id}.p"]}
        )
        assert response.status_code == 201, response.text
    return ["a", "b", "c"]


@pytest.mark.parametrize("owner", ["groups", "users"])
async def test_roles_are_replaced_as_a_whole(
    api: httpx.AsyncClient, directory: Directory, roles: list[str], owner: str
) -> None:
    """Empty at first; each PUT gives the whole sorted set and a new
    revision; the GET after it reads that set."""
    owner_id = await (directory.group("G") if owner == "groups" else directory.user("alice"))
    path = f"/{owner}/{owner_id}/roles"
    assert (await api.get(path)).json() == {"roles": []}
    first = await api.put(path, json={"roles": ["c", "a", "c"]})
    assert first.status_code == 200, first.text
    assert first.json() == {"roles": ["a", "c"]}
    second = await api.put(path, json={"roles": ["b"]})
    assert second.json() == {"roles": ["b"]}
    assert revision_of(second) == revision_of(first) + 1
    assert (await api.get(path)).json() == {"roles": ["b"]}
    cleared = await api.put(path, json={"roles": []})
    assert cleared.json() == {"roles": []}
    assert (await api.get(path)).json() == {"roles": []}


@pytest.mark.parametrize("owner", ["groups", "users"])
async def test_an_unknown_role_is_400_naming_it_and_the_old_set_stays(
    api: httpx.AsyncClient, directory: Directory, roles: list[str], owner: str
) -> None:
    """Nothing of a refused replacement is applied: the old set is kept whole."""
    owner_id = await (directory.group("G") if owner == "groups" else directory.user("alice"))
    path = f"/{owner}/{owner_id}/roles"
    await api.put(path, json={"roles": ["a"]})
    response = await api.put(path, json={"roles": ["b", "nope", "zilch"]})
    assert_problem(response, 400, "invalid-request", "unknown role id(s): nope, zilch")
    assert (await api.get(path)).json() == {"roles": ["a"]}


@pytest.mark.parametrize("owner", ["groups", "users"])
async def test_an_unknown_group_or_user_is_404(
    api: httpx.AsyncClient, roles: list[str], owner: str
) -> None:
    """Reading or replacing the roles of no one: 404 ``not-found``."""
    path = f"/{owner}/{UNKNOWN}/roles"
    assert_problem(await api.get(path), 404, "not-found")
    assert_problem(await api.put(path, json={"roles": ["a"]}), 404, "not-found")


async def test_a_body_without_roles_is_400_naming_the_field(
    api: httpx.AsyncClient, directory: Directory
) -> None:
    """``roles`` is required (an empty list clears; a missing one is a mistake)."""
    group = await directory.group("G")
    problem = assert_problem(
        await api.put(f"/groups/{group}/roles", json={}), 400, "invalid-request"
    )
    assert problem["errors"][0]["location"] == ["body", "roles"]
