"""API tokens: only hashes are stored; revoked and expired tokens do not authenticate.

The use cases of the ``idstore token`` commands (:func:`tokens.issue_token`,
:func:`tokens.list_tokens`, :func:`tokens.revoke_token`,
:func:`tokens.ensure_dev_token`) are called here directly, each on its own
connection; what they stored is read back through a session of the test's
engine. Every test that writes asks for ``engine``, whose teardown empties the
tables.
"""

from __future__ import annotations

import stat
from datetime import timedelta

import pytest
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession

from identity_store import tokens
from identity_store.database import create_session_factory
from identity_store.errors import ConflictError, NotFoundError, ValidationError
from identity_store.models import ApiToken, new_id, utcnow
from identity_store.settings import Settings


async def _principal(engine: AsyncEngine, secret: str) -> tokens.Principal | None:
    """Authenticate ``secret`` in a session of its own, as a request would."""
    async with create_session_factory(engine)() as session:
        return await tokens.authenticate(session, secret)


async def _stored(engine: AsyncEngine) -> list[ApiToken]:
    async with create_session_factory(engine)() as session:
        return list(await session.scalars(select(ApiToken).order_by(ApiToken.name)))


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


async def test_revoked_and_expired_tokens_are_refused(
    settings: Settings, engine: AsyncEngine, session: AsyncSession
) -> None:
    """Neither a revoked nor an expired token authenticates; listing leaves out
    only the revoked one unless asked."""
    _, revoked = await tokens.create_token(session, "old", ["scim:read"])
    _, expired = await tokens.create_token(
        session, "short", ["scim:read"], expires_at=utcnow() - timedelta(seconds=1)
    )
    await session.commit()
    await tokens.revoke_token(settings, "old")
    assert await _principal(engine, revoked) is None
    assert await _principal(engine, expired) is None
    assert [t.name for t in await tokens.list_tokens(settings)] == ["short"]
    assert {t.name for t in await tokens.list_tokens(settings, include_revoked=True)} == {
        "old",
        "short",
    }


async def test_token_rules(settings: Settings, session: AsyncSession) -> None:
    """Unknown scopes, duplicate names and unknown tokens are clear errors."""
    with pytest.raises(ValidationError):
        await tokens.create_token(session, "x", ["scim:everything"])
    await tokens.create_token(session, "dup", ["admin"])
    await session.commit()
    with pytest.raises(ConflictError):
        await tokens.create_token(session, "dup", ["admin"])
    await session.rollback()
    with pytest.raises(NotFoundError):
        await tokens.revoke_token(settings, "missing")


async def test_an_issued_token_authenticates_with_the_secret_issue_token_returns(
    settings: Settings, engine: AsyncEngine
) -> None:
    """``issue_token`` commits the token with its scopes, user, provider and
    expiry, and returns a secret that authenticates as it."""
    user_id = new_id()
    before = utcnow()
    secret = await tokens.issue_token(
        settings,
        "entra",
        ["scim:write", "scim:read"],
        user_id=user_id,
        expires_in=timedelta(days=90),
        idp_source="AAD",
    )
    principal = await _principal(engine, secret)
    assert principal is not None
    assert principal.name == "entra"
    assert principal.scopes == frozenset({"scim:read", "scim:write"})
    assert principal.user_id == user_id
    assert principal.idp_source == "AAD"
    [stored] = await _stored(engine)
    assert stored.secret_hash == tokens.hash_secret(secret)
    assert stored.expires_at is not None
    assert before + timedelta(days=90) <= stored.expires_at <= utcnow() + timedelta(days=90)


async def test_a_token_issued_without_an_expiry_never_expires(
    settings: Settings, engine: AsyncEngine
) -> None:
    """With no ``expires_in`` the stored token has no expiry time."""
    await tokens.issue_token(settings, "forever", ["scim:read"])
    [stored] = await _stored(engine)
    assert stored.expires_at is None


async def test_issuing_a_taken_name_or_an_unknown_scope_stores_nothing(
    settings: Settings, engine: AsyncEngine
) -> None:
    """A duplicate name is a conflict and an unknown scope a validation error;
    neither leaves a row behind."""
    first = await tokens.issue_token(settings, "dup", ["admin"])
    with pytest.raises(ConflictError):
        await tokens.issue_token(settings, "dup", ["scim:read"])
    with pytest.raises(ValidationError):
        await tokens.issue_token(settings, "odd", ["scim:everything"])
    assert [(t.name, t.secret_hash) for t in await _stored(engine)] == [
        ("dup", tokens.hash_secret(first))
    ]


async def test_list_tokens_shows_them_in_creation_order_without_their_secrets(
    settings: Settings, engine: AsyncEngine
) -> None:
    """Each listed token carries its fields and timestamps, oldest first, and
    nothing derived from its secret."""
    await tokens.issue_token(settings, "first", ["scim:read"])
    await tokens.issue_token(settings, "second", ["admin", "scim:write"], idp_source="AAD")
    listed = await tokens.list_tokens(settings)
    assert [t.name for t in listed] == ["first", "second"]
    second = listed[1]
    assert second.scopes == ("admin", "scim:write")
    assert second.idp_source == "AAD"
    assert second.user_id is None
    assert second.last_used_at is None
    assert second.revoked_at is None
    assert listed[0].created_at <= second.created_at <= utcnow()
    assert not hasattr(second, "secret_hash")


async def test_revoke_token_finds_a_token_by_id_and_keeps_the_first_revocation_time(
    settings: Settings, engine: AsyncEngine
) -> None:
    """A token can be revoked by its id as well as its name; revoking it again
    changes nothing, and the revoked token is listed only with revoked ones."""
    secret = await tokens.issue_token(settings, "reader", ["scim:read"])
    [issued] = await tokens.list_tokens(settings)
    revoked = await tokens.revoke_token(settings, issued.id)
    assert revoked.name == "reader"
    assert revoked.revoked_at is not None
    again = await tokens.revoke_token(settings, "reader")
    assert again.revoked_at == revoked.revoked_at
    assert await _principal(engine, secret) is None
    assert await tokens.list_tokens(settings) == []
    [listed] = await tokens.list_tokens(settings, include_revoked=True)
    assert listed.revoked_at == revoked.revoked_at


async def test_revoking_an_unknown_token_is_not_found(
    settings: Settings, engine: AsyncEngine
) -> None:
    """Neither a name nor an id that no token has can be revoked."""
    await tokens.issue_token(settings, "reader", ["scim:read"])
    with pytest.raises(NotFoundError):
        await tokens.revoke_token(settings, "writer")
    assert [t.revoked_at for t in await tokens.list_tokens(settings)] == [None]


async def test_the_dev_token_is_issued_on_an_empty_store(
    settings: Settings, engine: AsyncEngine
) -> None:
    """With no token at all, ``ensure_dev_token`` issues ``dev`` with
    ``scim:write`` and ``admin`` and returns a secret that works."""
    secret = await tokens.ensure_dev_token(settings)
    assert secret is not None
    principal = await _principal(engine, secret)
    assert principal is not None
    assert principal.name == tokens.DEV_TOKEN_NAME == "dev"
    assert principal.scopes == frozenset({"scim:write", "admin"})


@pytest.mark.parametrize("backend", ["sqlite"], indirect=True)
async def test_the_dev_token_stays_valid_while_its_file_holds_it(
    settings: Settings, engine: AsyncEngine
) -> None:
    """On SQLite the dev secret is kept beside the database file (mode 0600),
    so each call returns the same working secret and stores one ``dev`` row."""
    first = await tokens.ensure_dev_token(settings)
    second = await tokens.ensure_dev_token(settings)
    assert first is not None
    assert second == first
    assert await _principal(engine, first) is not None
    path = tokens.dev_token_file(settings)
    assert path is not None
    assert path.read_text().strip() == first
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert [t.name for t in await _stored(engine)] == ["dev"]


@pytest.mark.parametrize("backend", ["sqlite"], indirect=True)
async def test_the_dev_token_is_reissued_when_its_file_no_longer_matches(
    settings: Settings, engine: AsyncEngine
) -> None:
    """A revoked dev token, or a file that lost its secret, gives a new secret
    that works, written to the file; the old one no longer works."""
    old = await tokens.ensure_dev_token(settings)
    assert old is not None
    await tokens.revoke_token(settings, "dev")
    new = await tokens.ensure_dev_token(settings)
    assert new is not None
    assert new != old
    assert await _principal(engine, old) is None
    assert await _principal(engine, new) is not None
    path = tokens.dev_token_file(settings)
    assert path is not None
    assert path.read_text().strip() == new

    path.unlink()
    newest = await tokens.ensure_dev_token(settings)
    assert newest not in (None, new)
    assert await _principal(engine, new) is None
    assert path.read_text().strip() == newest


@pytest.mark.parametrize("backend", ["postgresql"], indirect=True)
async def test_the_dev_token_is_rotated_where_no_file_can_keep_it(
    settings: Settings, engine: AsyncEngine
) -> None:
    """Without a SQLite file to keep the secret beside, each call replaces the
    dev token: the new secret works, the old one no longer does, and one
    ``dev`` row remains. A revoked token of another name does not count as
    another token."""
    assert tokens.dev_token_file(settings) is None
    await tokens.issue_token(settings, "retired", ["admin"])
    await tokens.revoke_token(settings, "retired")
    old = await tokens.ensure_dev_token(settings)
    new = await tokens.ensure_dev_token(settings)
    assert old is not None
    assert new is not None
    assert new != old
    assert await _principal(engine, old) is None
    assert await _principal(engine, new) is not None
    assert [t.name for t in await _stored(engine)] == ["dev", "retired"]


async def test_no_dev_token_is_issued_once_another_token_is_usable(
    settings: Settings, engine: AsyncEngine
) -> None:
    """Once an admin issued a token of their own, ``ensure_dev_token`` returns
    ``None`` and leaves the existing dev token as it was."""
    dev = await tokens.ensure_dev_token(settings)
    assert dev is not None
    await tokens.issue_token(settings, "entra", ["scim:write"])
    assert await tokens.ensure_dev_token(settings) is None
    assert await _principal(engine, dev) is not None
    assert [t.name for t in await _stored(engine)] == ["dev", "entra"]
