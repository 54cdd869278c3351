"""Fixtures of the ``/api/v1`` tests: clients of the real application over
ASGI, one per kind of token, and users and groups made through SCIM."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from sqlalchemy.ext.asyncio import AsyncEngine
from starlette.applications import Starlette

from identity_store.database import create_session_factory

SCOPES = ("scim:read", "scim:write", "admin", "authz:check")


@pytest.fixture
async def api_tokens(engine: AsyncEngine) -> dict[str, str]:
    """Secrets of one token per scope, ``authz:check`` included."""
    from identity_store import tokens

    secrets_: dict[str, str] = {}
    async with create_session_factory(engine)() as session:
        for scope in SCOPES:
            _, secrets_[scope] = await tokens.create_token(session, f"api-{scope}", [scope])
        await session.commit()
    return secrets_


def _client(app: Starlette, secret: str | None, base: str = "/api/v1") -> httpx.AsyncClient:
    headers = {"Authorization": f"Bearer {secret}"} if secret else {}
    return httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url=f"http://testserver{base}", headers=headers
    )


@pytest.fixture
async def api(app: Starlette, api_tokens: dict[str, str]) -> AsyncIterator[httpx.AsyncClient]:
    """A client of ``/api/v1`` with an ``admin`` token."""
    async with _client(app, api_tokens["admin"]) as client:
        yield client


@pytest.fixture
async def checker(app: Starlette, api_tokens: dict[str, str]) -> AsyncIterator[httpx.AsyncClient]:
    """A client of ``/api/v1`` with an ``authz:check`` token."""
    async with _client(app, api_tokens["authz:check"]) as client:
        yield client


@pytest.fixture
async def as_scope(app: Starlette, api_tokens: dict[str, str]) -> AsyncIterator[Any]:
    """``as_scope(scope)``: a client of ``/api/v1`` with that scope's token."""
    opened: list[httpx.AsyncClient] = []

    def make(scope: str, base: str = "/api/v1") -> httpx.AsyncClient:
        client = _client(app, api_tokens[scope], base)
        opened.append(client)
        return client

    yield make
    for client in opened:
        await client.aclose()


@pytest.fixture
async def directory(app: Starlette, api_tokens: dict[str, str]) -> AsyncIterator[Directory]:
    """Makes users and groups through SCIM, as Entra would."""
    async with _client(app, api_tokens["scim:write"], "/scim/v2") as client:
        yield Directory(client)


USER = "urn:ietf:params:scim:schemas:core:2.0:User"
GROUP = "urn:ietf:params:scim:schemas:core:2.0:Group"
PRODUCT = "urn:idstore:params:scim:schemas:extension:idstore:2.0:User"
PATCH = "urn:ietf:params:scim:api:messages:2.0:PatchOp"


class Directory:
    def __init__(self, scim: httpx.AsyncClient) -> None:
        self.scim = scim

    async def user(self, name: str, *, complete: bool = True, active: bool = True) -> str:
        """A user's id: ``ACTIVE`` when ``complete`` and ``active``, else
        ``CREATED`` (IdP attributes missing) or ``SUSPENDED``."""
        body: dict[str, Any] = {"schemas": [USER, PRODUCT], "userName": name, "active": active}
        if complete:
            body[PRODUCT] = {"idpUsername": name, "idpCloudUsername": f"{name}@corp.example"}
        response = await self.scim.post("/Users", json=body)
        assert response.status_code == 201, response.text
        return str(response.json()["id"])

    async def group(self, name: str, members: list[str] = ()) -> str:  # type: ignore[assignment]
        body = {"schemas": [GROUP], "displayName": name, "members": [{"value": m} for m in members]}
        response = await self.scim.post("/Groups", json=body)
        assert response.status_code == 201, response.text
        return str(response.json()["id"])

    async def suspend(self, user_id: str) -> None:
        patch = {
            "schemas": [PATCH],
            "Operations": [{"op": "replace", "path": "active", "value": False}],
        }
        response = await self.scim.patch(f"/Users/{user_id}", json=patch)
        assert response.status_code == 200, response.text


def assert_problem(
    response: httpx.Response, status: int, kind: str, detail: str | None = None
) -> dict[str, Any]:
    """The response is an RFC 9457 problem of this status and kind (and detail)."""
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/problem+json", response.headers
    body: dict[str, Any] = response.json()
    assert body["type"] == f"urn:idstore:problem:{kind}", body
    assert body["status"] == status
    assert body["title"]
    assert body["detail"]
    assert body["requestId"] == response.headers["x-request-id"]
    assert body["instance"] == response.request.url.path
    if detail is not None:
        assert body["detail"] == detail, body
    return body
