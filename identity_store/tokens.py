"""API tokens: issue, list, revoke, authenticate (SPEC §3, §7).

A secret looks like ``idst_<token id>_<43 random url-safe chars>``. Only its
SHA-256 is stored: the secret carries 256 bits of randomness, so a slow
password hash would add latency to every request and no security. The id part
finds the row; the hash is compared with :func:`hmac.compare_digest`.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from .errors import ConflictError, NotFoundError, ValidationError
from .models import ApiToken, new_id, utcnow
from .store import Store

PREFIX = "idst"
SCOPES = frozenset({"scim:read", "scim:write", "admin"})
LAST_USED_RESOLUTION = timedelta(minutes=1)
"""``last_used_at`` is written at most this often per token, not on every request."""


@dataclass(frozen=True, slots=True)
class Principal:
    """Who is calling: the token that authenticated, its scopes and its user."""

    token_id: str
    name: str
    scopes: frozenset[str]
    user_id: str | None
    idp_source: str | None = None

    def allows(self, scope: str) -> bool:
        """``admin`` implies every scope, ``scim:write`` implies ``scim:read``."""
        if "admin" in self.scopes or scope in self.scopes:
            return True
        return scope == "scim:read" and "scim:write" in self.scopes


def hash_secret(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def _validate_scopes(scopes: list[str]) -> list[str]:
    unknown = sorted(set(scopes) - SCOPES)
    if unknown:
        raise ValidationError(f"unknown scope(s) {', '.join(unknown)}; known: {sorted(SCOPES)}")
    if not scopes:
        raise ValidationError("a token needs at least one scope")
    return sorted(set(scopes))


async def create_token(
    session: AsyncSession,
    name: str,
    scopes: list[str],
    *,
    user_id: str | None = None,
    expires_at: datetime | None = None,
    idp_source: str | None = None,
) -> tuple[ApiToken, str]:
    """Store a new token and return it with its secret, which is not kept."""
    if not name.strip():
        raise ValidationError("a token needs a name")
    token_id = new_id()
    secret = f"{PREFIX}_{token_id}_{secrets.token_urlsafe(32)}"
    token = ApiToken(
        id=token_id,
        name=name,
        scopes=_validate_scopes(scopes),
        secret_hash=hash_secret(secret),
        user_id=user_id,
        expires_at=expires_at,
        idp_source=idp_source,
    )
    session.add(token)
    try:
        await session.flush()
    except IntegrityError as exc:
        raise ConflictError("name", f"a token named {name!r} already exists") from exc
    return token, secret


async def list_tokens(session: AsyncSession, *, include_revoked: bool = False) -> list[ApiToken]:
    query = select(ApiToken).order_by(ApiToken.created_at, ApiToken.id)
    if not include_revoked:
        query = query.where(ApiToken.revoked_at.is_(None))
    return list((await session.scalars(query)).all())


async def revoke_token(session: AsyncSession, name_or_id: str) -> ApiToken:
    token = await session.scalar(
        select(ApiToken).where((ApiToken.name == name_or_id) | (ApiToken.id == name_or_id))
    )
    if token is None:
        raise NotFoundError("token", name_or_id)
    if token.revoked_at is None:
        token.revoked_at = utcnow()
    return token


async def authenticate(session: AsyncSession, secret: str) -> Principal | None:
    """The principal a secret belongs to, or ``None`` when it is unknown,
    revoked or expired."""
    parts = secret.split("_", 2)
    if len(parts) != 3 or parts[0] != PREFIX:
        return None
    token = await session.get(ApiToken, parts[1])
    if token is None or not hmac.compare_digest(token.secret_hash, hash_secret(secret)):
        return None
    now = utcnow()
    if token.revoked_at is not None or (token.expires_at is not None and token.expires_at <= now):
        return None
    if token.last_used_at is None or now - token.last_used_at >= LAST_USED_RESOLUTION:
        await session.execute(
            update(ApiToken).where(ApiToken.id == token.id).values(last_used_at=now)
        )
        await session.commit()
    return Principal(token.id, token.name, frozenset(token.scopes), token.user_id, token.idp_source)


async def verify_secret(store: Store, secret: str) -> Principal | None:
    """:func:`authenticate` in a session of its own: the use case a server
    calls for each request's bearer token."""
    async with store.reading() as session:
        return await authenticate(session, secret)
