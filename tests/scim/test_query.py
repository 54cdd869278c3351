"""Listing: filters over HTTP, sorting, index and cursor pagination, attribute
selection, ``/.search`` (RFC 7644 §3.4, RFC 9865)."""

from __future__ import annotations

import httpx
import pytest

from .helpers import PRODUCT, SEARCH_SCHEMA, assert_error, create_group, create_user


async def _ids(response: httpx.Response) -> list[str]:
    assert response.status_code == 200, response.text
    return [r["id"] for r in response.json()["Resources"]]


async def test_filter_returns_an_empty_list_not_404(scim: httpx.AsyncClient) -> None:
    response = await scim.get("/Users", params={"filter": 'userName eq "nobody"'})
    assert response.status_code == 200
    assert response.json() == {
        "schemas": ["urn:ietf:params:scim:api:messages:2.0:ListResponse"],
        "totalResults": 0,
        "itemsPerPage": 0,
        "startIndex": 1,
        "Resources": [],
    }


async def test_filter_matches_user_name_case_insensitively(scim: httpx.AsyncClient) -> None:
    user = await create_user(scim, "Pat@Example.com")
    await create_user(scim, "other@example.com")
    response = await scim.get("/Users", params={"filter": 'USERNAME eq "pat@example.COM"'})
    assert await _ids(response) == [user["id"]]


async def test_invalid_filters_are_400_invalid_filter(scim: httpx.AsyncClient) -> None:
    for bad in ("userName eq", 'nosuch eq "x"', 'userName zz "x"', "(((", 'userName eq "x"' * 500):
        assert_error(await scim.get("/Users", params={"filter": bad}), 400, "invalidFilter")
    assert_error(
        await scim.get("/Groups", params={"filter": 'userName eq "x"'}), 400, "invalidFilter"
    )


async def test_what_the_store_cannot_filter_or_sort_by_is_400_with_its_reason(
    scim: httpx.AsyncClient,
) -> None:
    """The store's refusals are RFC 7644 §3.12 errors: invalidFilter for a filter
    (at /.search too, when no resource type can run it), invalidValue for sortBy."""
    response = await scim.get("/Users", params={"filter": 'password eq "x"'})
    assert_error(response, 400, "invalidFilter")
    reason = "'password' cannot be filtered: only a salted hash of it is stored"
    assert response.json()["detail"] == reason
    response = await scim.post(
        "/.search", json={"schemas": [SEARCH_SCHEMA], "filter": "customData pr"}
    )
    assert_error(response, 400, "invalidFilter")
    assert response.json()["detail"] == "'customData' is a free JSON object and cannot be filtered"
    response = await scim.get("/Users", params={"sortBy": "tags"})
    assert_error(response, 400, "invalidValue")
    assert response.json()["detail"] == f"sortBy: '{PRODUCT}:tags' cannot be sorted by"


async def test_index_pagination_and_sorting(scim: httpx.AsyncClient) -> None:
    names = ["delta", "alpha", "echo", "charlie", "bravo"]
    ids = {n: (await create_user(scim, n))["id"] for n in names}
    page = await scim.get("/Users", params={"sortBy": "userName", "startIndex": 2, "count": 2})
    body = page.json()
    assert body["totalResults"] == 5
    assert body["startIndex"] == 2
    assert body["itemsPerPage"] == 2
    assert await _ids(page) == [ids["bravo"], ids["charlie"]]
    desc = await scim.get(
        "/Users", params={"sortBy": "userName", "sortOrder": "descending", "count": 1}
    )
    assert await _ids(desc) == [ids["echo"]]
    zero = await scim.get("/Users", params={"count": 0})
    assert zero.json()["totalResults"] == 5
    assert zero.json()["Resources"] == []
    assert_error(await scim.get("/Users", params={"count": "x"}), 400, "invalidValue")
    assert_error(await scim.get("/Users", params={"sortOrder": "up"}), 400, "invalidValue")


async def test_cursor_pagination_is_stable_under_inserts_and_deletes(
    scim: httpx.AsyncClient,
) -> None:
    """Rows inserted before the cursor or deleted behind it neither repeat nor go missing."""
    created = [(await create_user(scim, f"c{i:02d}"))["id"] for i in range(10)]
    first = await scim.get("/Users", params={"cursor": "", "count": 4})
    seen = await _ids(first)
    assert seen == created[:4]
    cursor = first.json()["nextCursor"]
    assert "startIndex" not in first.json()
    # A user deleted behind the cursor and one created (sorting last by id) meanwhile.
    await scim.delete(f"/Users/{created[1]}")
    late = (await create_user(scim, "late"))["id"]
    while cursor:
        page = await scim.get("/Users", params={"cursor": cursor, "count": 4})
        seen += await _ids(page)
        cursor = page.json().get("nextCursor")
    assert seen == [*created, late]
    assert_error(await scim.get("/Users", params={"cursor": "garbage!"}), 400, "invalidCursor")


async def test_cursor_pagination_sorted_by_user_name(scim: httpx.AsyncClient) -> None:
    ids = {n: (await create_user(scim, n))["id"] for n in ["b", "a", "d", "c"]}
    first = await scim.get("/Users", params={"cursor": "", "count": 3, "sortBy": "userName"})
    second = await scim.get(
        "/Users", params={"cursor": first.json()["nextCursor"], "count": 3, "sortBy": "userName"}
    )
    assert await _ids(first) + await _ids(second) == [ids[k] for k in "abcd"]
    assert "nextCursor" not in second.json()


async def test_attributes_and_excluded_attributes(scim: httpx.AsyncClient) -> None:
    await create_user(
        scim,
        "sel",
        displayName="Sel",
        title="T",
        emails=[{"value": "sel@example.com", "type": "work"}],
    )
    only = (await scim.get("/Users", params={"attributes": "userName,emails.value"})).json()
    resource = only["Resources"][0]
    assert set(resource) == {"schemas", "id", "userName", "emails"}
    assert resource["emails"] == [{"value": "sel@example.com"}]
    without = (await scim.get("/Users", params={"excludedAttributes": "title,emails"})).json()
    resource = without["Resources"][0]
    assert "title" not in resource
    assert "emails" not in resource
    assert resource["displayName"] == "Sel"


async def test_search_endpoints(scim: httpx.AsyncClient) -> None:
    """POST /.search per type and at the root, where Users come before Groups."""
    user = await create_user(scim, "finder", displayName="Finder")
    group = await create_group(scim, "Finder")
    body = {
        "schemas": [SEARCH_SCHEMA],
        "filter": 'displayName eq "Finder"',
        "attributes": ["displayName"],
    }
    users = await scim.post("/Users/.search", json=body)
    assert await _ids(users) == [user["id"]]
    groups = await scim.post("/Groups/.search", json=body)
    assert await _ids(groups) == [group["id"]]
    root = await scim.post("/.search", json=body)
    assert await _ids(root) == [user["id"], group["id"]]
    assert root.json()["totalResults"] == 2
    page2 = await scim.post("/.search", json={**body, "startIndex": 2, "count": 1})
    assert await _ids(page2) == [group["id"]]
    user_only = await scim.post(
        "/.search", json={"schemas": [SEARCH_SCHEMA], "filter": 'userName eq "finder"'}
    )
    assert await _ids(user_only) == [user["id"]]
    assert_error(await scim.post("/Users/.search", json={"filter": "x"}), 400, "invalidSyntax")


async def test_meta_dates_filter(scim: httpx.AsyncClient) -> None:
    user = await create_user(scim, "dated")
    created = user["meta"]["created"]
    after = await scim.get("/Users", params={"filter": f'meta.created ge "{created}"'})
    assert await _ids(after) == [user["id"]]
    before = await scim.get("/Users", params={"filter": f'meta.lastModified lt "{created}"'})
    assert await _ids(before) == []


async def test_missing_sort_values_go_last_ascending_and_first_descending(
    scim: httpx.AsyncClient,
) -> None:
    """RFC 7644 §3.4.2.3, identically on both databases."""
    untitled = (await create_user(scim, "n0"))["id"]
    b = (await create_user(scim, "n1", title="B"))["id"]
    a = (await create_user(scim, "n2", title="a"))["id"]
    ascending = await scim.get("/Users", params={"sortBy": "title"})
    assert await _ids(ascending) == [a, b, untitled]
    descending = await scim.get("/Users", params={"sortBy": "title", "sortOrder": "descending"})
    assert await _ids(descending) == [untitled, b, a]


async def test_a_filter_with_a_lone_surrogate_escape_is_400(scim: httpx.AsyncClient) -> None:
    """Not a 500 from the database driver: a clear invalidFilter, on the fast
    look-up path and on the general one alike."""
    for expression in ('userName eq "\\ud800"', 'displayName eq "\\ud800"', 'id eq "\\udc00x"'):
        response = await scim.get("/Users", params={"filter": expression})
        assert_error(response, 400, "invalidFilter")
    response = await scim.get("/Groups", params={"filter": 'displayName eq "\\ud800"'})
    assert_error(response, 400, "invalidFilter")
    # A pair of escapes is one character and an ordinary value.
    response = await scim.get("/Users", params={"filter": 'userName eq "\\ud83d\\ude00"'})
    assert response.status_code == 200
    assert response.json()["totalResults"] == 0


async def test_a_forged_cursor_is_400_invalid_cursor(scim: httpx.AsyncClient) -> None:
    """A cursor is opaque but decodable: one carrying what no cursor of ours
    carries (a lone surrogate, a time without zone, the wrong shape) is
    refused, never passed to the database."""
    import base64
    import json

    def forged(values: object) -> str:
        return base64.urlsafe_b64encode(json.dumps(values).encode()).decode().rstrip("=")

    await create_user(scim, "someone")
    for params in (
        {"cursor": forged(["\ud800"])},
        {"cursor": forged(["a\udc00b"]), "sortBy": "id"},
        {"cursor": forged(["x\ud800", "id"]), "sortBy": "userName"},
        {"cursor": forged(["2026-01-01T00:00:00", "id"]), "sortBy": "meta.created"},
        {"cursor": forged([1])},
        {"cursor": forged({"id": "x"})},
    ):
        response = await scim.get("/Users", params=params)
        assert_error(response, 400, "invalidCursor")
    response = await scim.get("/Groups", params={"cursor": forged(["\ud800"])})
    assert_error(response, 400, "invalidCursor")
    # An ordinary forged value is just a position.
    assert (await scim.get("/Users", params={"cursor": forged(["0"])})).status_code == 200


@pytest.mark.parametrize(
    "moment",
    ["0001-01-01T00:00:00+14:00", "9999-12-31T23:59:59-14:00", "0001-01-01T00:30:00+01:00"],
)
@pytest.mark.parametrize("path", ["/Users", "/Groups"])
async def test_a_filter_date_with_no_utc_equivalent_is_400(
    scim: httpx.AsyncClient, moment: str, path: str
) -> None:
    """A dateTime whose offset takes it out of years 1-9999 in UTC is a clear
    invalidFilter, not a 500 (issue 10)."""
    response = await scim.get(path, params={"filter": f'meta.created gt "{moment}"'})
    assert_error(response, 400, "invalidFilter")
    assert "no UTC equivalent" in response.json()["detail"]


@pytest.mark.parametrize(
    "expression",
    [
        'userName eq "a\\u0000b"',  # the grammar-free look-up
        'displayName co "\\u0000"',
        'emails[value sw "x\\u0000"]',
        'userName eq "a" or title eq "\\u0000"',
    ],
)
async def test_a_filter_comparing_a_nul_character_is_400(
    scim: httpx.AsyncClient, expression: str
) -> None:
    """A NUL, which PostgreSQL refuses in text, is invalidFilter on both databases,
    before any database is asked (issue 10)."""
    response = await scim.get("/Users", params={"filter": expression})
    assert_error(response, 400, "invalidFilter")
    assert response.json()["detail"] == "a compared string has a NUL character"
