"""Auth0 properties on ``GET /api/v1/users`` pages
(``IDSTORE_AUTH0_USER_PROPERTIES``; scim_server/api/users.py with the
provider the composition root wires, against the Auth0 emulator): each
user's account properties under ``auth0``, and nothing asked of Auth0
when none are configured."""

from __future__ import annotations

from typing import Any

import httpx
import pytest
from sqlalchemy import update
from sqlalchemy.ext.asyncio import AsyncEngine
from starlette.applications import Starlette

from identity_store.models import User
from identity_store.settings import Settings
from idstore.auth0_gateway import open_auth0
from scim_server.app import create_app
from tests.emulators.auth0 import Auth0Emulator

SEARCH = "GET /api/v2/users"


async def _page(
    settings: Settings, admin_secret: str, engine: AsyncEngine, auth0: Auth0Emulator
) -> list[dict[str, Any]]:
    application: Starlette = create_app(settings, auth0=open_auth0)
    async with (
        application.router.lifespan_context(application),
        httpx.AsyncClient(
            transport=httpx.ASGITransport(app=application),
            base_url="http://testserver/api/v1",
            headers={"Authorization": f"Bearer {admin_secret}"},
        ) as api,
    ):
        made = await api.post("/user-groups", json={"userGroup": "staff", "crudSchema": {}})
        assert made.status_code == 201, made.text
        ids = []
        for name in ("ada", "bob"):
            created = await api.post(
                "/users",
                json={
                    "userGroup": "staff",
                    "username": f"{name}@corp.example",
                    "email": f"{name}@corp.example",
                },
            )
            assert created.status_code == 201, created.text
            ids.append(created.json()["id"])
        account = auth0.add_user("ada@corp.example", user_id="auth0|ada")
        auth0.log_in(account)
        async with engine.begin() as connection:
            await connection.execute(
                update(User).where(User.id == ids[0]).values(auth_user_id=account)
            )
        page = await api.get("/users", params={"userGroup": "staff"})
        assert page.status_code == 200, page.text
        items: list[dict[str, Any]] = page.json()["items"]
        assert [u["id"] for u in items] == sorted(ids)
        return items


@pytest.fixture
async def admin_secret(api_tokens: dict[str, str]) -> str:
    return api_tokens["admin"]


async def test_a_page_carries_each_accounts_configured_properties(
    settings: Settings, auth0: Auth0Emulator, engine: AsyncEngine, admin_secret: str
) -> None:
    configured = Settings(
        **{
            "DATABASE_URL": settings.database_url,
            **auth0.settings_fields(),
            "auth0_user_properties": "last_login,logins_count",
        }
    )
    items = await _page(configured, admin_secret, engine, auth0)
    by_name = {u["username"]: u for u in items}
    assert by_name["ada@corp.example"]["auth0"]["logins_count"] == 1
    assert set(by_name["ada@corp.example"]["auth0"]) == {"last_login", "logins_count"}
    assert by_name["bob@corp.example"]["auth0"] is None  # no account
    assert len(auth0.seen(SEARCH)) == 1


async def test_without_properties_configured_auth0_is_not_asked(
    settings: Settings, auth0: Auth0Emulator, engine: AsyncEngine, admin_secret: str
) -> None:
    plain = Settings(**{"DATABASE_URL": settings.database_url, **auth0.settings_fields()})
    items = await _page(plain, admin_secret, engine, auth0)
    assert [u["auth0"] for u in items] == [None, None]
    assert auth0.seen(SEARCH) == []
