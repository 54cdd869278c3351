"""The per-process memos of the read path stay within their bounds, and a
request past a bound is still answered correctly (its value computed, not
remembered)."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

from starlette.requests import Request

from scim_server import filters, request


def _request(host: str) -> Request:
    scope: dict[str, Any] = {
        "type": "http",
        "scheme": "http",
        "server": ("127.0.0.1", 8000),
        "path": "/scim/v2/Users",
        "query_string": b"",
        "headers": [(b"host", host.encode())],
    }
    return Request(scope)


def test_base_urls_are_remembered_up_to_their_bound() -> None:
    state: Any = SimpleNamespace(settings=SimpleNamespace(base_url=None))
    request._BASE_URLS.clear()
    for i in range(request.MAX_BASE_URLS + 10):
        host = f"h{i}.example:8000"
        assert request.base_url(_request(host), state) == f"http://{host}/scim/v2"
    assert len(request._BASE_URLS) == request.MAX_BASE_URLS


def test_hot_filter_attributes_are_remembered_up_to_their_bound() -> None:
    hot = filters._USERS.hot
    saved = dict(hot)
    hot.clear()
    try:
        for i in range(filters.MAX_HOT_ATTRIBUTES):
            hot[f"x-filler-{i}"] = ("userName", False)
        tree = filters.user_filter('externalId eq "abc"')
        assert isinstance(tree, filters.terms.Compare)
        assert (tree.attribute, tree.op, tree.value) == (
            "urn:ietf:params:scim:schemas:core:2.0:User:externalId",
            "eq",
            "abc",
        )
        assert len(hot) == filters.MAX_HOT_ATTRIBUTES
        assert "externalId" not in hot
    finally:
        hot.clear()
        hot.update(saved)
