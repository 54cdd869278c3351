"""API tokens: only hashes are stored; revoked and expired tokens do not authenticate."""

from __future__ import annotations

from datetime import timedelta

import pytest
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from identity_store import tokens
from identity_store.errors import ConflictError, NotFoundError, ValidationError
from identity_store.models import ApiToken, utcnow


async def test_a_created_token_authenticates_and_stores_no_secret(session: AsyncSession) -> None:
    """The secret works once issued, and the table holds only its SHA-256."""
    token, secret = await tokens.create_token(session, "entra", ["scim:write"])
    await session.commit()
    stored = await session.scalar(select(ApiToken).where(ApiToken.id == token.id))
    assert stored is not None
    assert secret not in {stored.secret_hash, stored.name, stored.id}
    assert stored.secret_hash == tokens.hash_secret(secret)

    principal = await tokens.authenticate(session, secret)
    assert principal is not None
    assert principal.scopes == frozenset({"scim:write"})
    assert principal.allows("scim:read")
    assert principal.allows("scim:write")
    assert not principal.allows("admin")


async def test_a_wrong_or_malformed_secret_does_not_authenticate(session: AsyncSession) -> None:
    """Changing one character, or sending garbage, gives no principal."""
    _, secret = await tokens.create_token(session, "reader", ["scim:read"])
    await session.commit()
    tampered = secret[:-1] + ("A" if secret[-1] != "A" else "B")
    assert await tokens.authenticate(session, tampered) is None
    assert await tokens.authenticate(session, "not-a-token") is None
    assert await tokens.authenticate(session, "idst_nope_nope") is None


async def test_read_scope_does_not_allow_writes(session: AsyncSession) -> None:
    _, secret = await tokens.create_token(session, "reader", ["scim:read"])
    await session.commit()
    principal = await tokens.authenticate(session, secret)
    assert principal is not None
    assert principal.allows("scim:read")
    assert not principal.allows("scim:write")


async def test_revoked_and_expired_tokens_are_refused(session: AsyncSession) -> None:
    _, revoked = await tokens.create_token(session, "old", ["scim:read"])
    _, expired = await tokens.create_token(
        session, "short", ["scim:read"], expires_at=utcnow() - timedelta(seconds=1)
    )
    await session.commit()
    await tokens.revoke_token(session, "old")
    await session.commit()
    assert await tokens.authenticate(session, revoked) is None
    assert await tokens.authenticate(session, expired) is None
    assert [t.name for t in await tokens.list_tokens(session)] == ["short"]
    assert {t.name for t in await tokens.list_tokens(session, include_revoked=True)} == {
        "old",
        "short",
    }


async def test_token_rules(session: AsyncSession) -> None:
    """Unknown scopes, duplicate names and unknown tokens are clear errors."""
    with pytest.raises(ValidationError):
        await tokens.create_token(session, "x", ["scim:everything"])
    await tokens.create_token(session, "dup", ["admin"])
    await session.commit()
    with pytest.raises(ConflictError):
        await tokens.create_token(session, "dup", ["admin"])
    await session.rollback()
    with pytest.raises(NotFoundError):
        await tokens.revoke_token(session, "missing")
