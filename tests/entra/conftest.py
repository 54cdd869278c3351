"""An HTTP client that talks like Microsoft Entra ID's provisioning service."""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import pytest
from sqlalchemy.ext.asyncio import AsyncEngine
from starlette.applications import Starlette

from identity_store import tokens
from identity_store.database import create_session_factory

FLAG = "aadOptscim062020"


@pytest.fixture(params=["default", FLAG])
def mode(request: pytest.FixtureRequest) -> str:
    """Entra's two behaviours: the default one, and the one the tenant URL's
    ``aadOptscim062020`` flag selects."""
    return str(request.param)


@pytest.fixture
async def entra(app: Starlette, engine: AsyncEngine, mode: str) -> AsyncIterator[httpx.AsyncClient]:
    """Entra's connector: a token issued for AAD, the tenant URL (with the flag in
    its query in flag mode), ``application/scim+json`` bodies."""
    async with create_session_factory(engine)() as session:
        _, secret = await tokens.create_token(session, "entra", ["scim:write"], idp_source="AAD")
        await session.commit()
    params = {FLAG: ""} if mode == FLAG else {}
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app),
        base_url="http://testserver/scim/v2",
        params=params,
        headers={
            "Authorization": f"Bearer {secret}",
            "Content-Type": "application/scim+json; charset=utf-8",
            "User-Agent": "Azure-AD-SCIM-Provisioning",
        },
    ) as client:
        yield client
