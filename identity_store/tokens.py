"""API tokens: issue, list, revoke, authenticate (SPEC §3, §7).

A secret looks like ``idst_<token id>_<43 random url-safe chars>``. Only its
SHA-256 is stored: the secret carries 256 bits of randomness, so a slow
password hash would add latency to every request and no security. The id part
finds the row; the hash is compared with :func:`hmac.compare_digest`.

Two kinds of function live here. Those taking a session work inside the
caller's transaction: :func:`authenticate` on the request path,
:func:`create_token` for whoever already holds a session. Those taking
:class:`~identity_store.settings.Settings` are the use cases of the
``idstore`` command (:func:`issue_token`, :func:`list_tokens`,
:func:`revoke_token`, :func:`ensure_dev_token`): each opens a connection of its
own, runs one transaction, commits it and closes the connection.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import secrets
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path

from sqlalchemy import func, select, update
from sqlalchemy.engine import make_url
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from .database import create_engine, create_session_factory
from .errors import ConflictError, NotFoundError, ValidationError
from .models import ApiToken, new_id, utcnow
from .settings import Settings
from .store import Store, database_errors

PREFIX = "idst"
SCOPES = frozenset({"scim:read", "scim:write", "admin", "authz:check"})
"""``authz:check``: an application that only asks for decisions (``/api/v1``'s
checks, a user's permissions, who holds a permission); nothing on SCIM."""
LAST_USED_RESOLUTION = timedelta(minutes=1)
"""``last_used_at`` is written at most this often per token, not on every request."""
DEV_TOKEN_NAME = "dev"
DEV_TOKEN_SCOPES = ("scim:write", "admin")


@dataclass(frozen=True, slots=True)
class Principal:
    """Who is calling: the token that authenticated, its scopes and its user."""

    token_id: str
    name: str
    scopes: frozenset[str]
    user_id: str | None
    idp_source: str | None = None

    def allows(self, scope: str) -> bool:
        """``admin`` implies every scope, ``scim:write`` implies ``scim:read``;
        ``authz:check`` implies nothing else."""
        if "admin" in self.scopes or scope in self.scopes:
            return True
        return scope == "scim:read" and "scim:write" in self.scopes


@dataclass(frozen=True, slots=True)
class TokenInfo:
    """What may be shown of a stored token: everything but its secret's hash."""

    id: str
    name: str
    scopes: tuple[str, ...]
    user_id: str | None
    idp_source: str | None
    created_at: datetime
    last_used_at: datetime | None
    expires_at: datetime | None
    revoked_at: datetime | None

    @classmethod
    def of(cls, token: ApiToken) -> TokenInfo:
        return cls(
            id=token.id,
            name=token.name,
            scopes=tuple(token.scopes),
            user_id=token.user_id,
            idp_source=token.idp_source,
            created_at=token.created_at,
            last_used_at=token.last_used_at,
            expires_at=token.expires_at,
            revoked_at=token.revoked_at,
        )


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


@asynccontextmanager
async def _transaction(settings: Settings) -> AsyncIterator[AsyncSession]:
    """A session in one transaction on a connection of its own, for a one-shot
    command: committed when the block ends, rolled back when it raises."""
    engine = create_engine(settings, null_pool=True)
    try:
        # A database that cannot be reached is UnavailableError (one line
        # from the command), not a driver's traceback.
        with database_errors():
            async with create_session_factory(engine)() as session, session.begin():
                yield session
    finally:
        await engine.dispose()


async def issue_token(
    settings: Settings,
    name: str,
    scopes: list[str],
    *,
    user_id: str | None = None,
    expires_in: timedelta | None = None,
    idp_source: str | None = None,
) -> str:
    """Store a new token (``idstore token create``) and return its secret,
    which is shown this once. ``expires_in`` counts from now; ``None`` never
    expires."""
    expires_at = utcnow() + expires_in if expires_in is not None else None
    async with _transaction(settings) as session:
        _, secret = await create_token(
            session, name, scopes, user_id=user_id, expires_at=expires_at, idp_source=idp_source
        )
    return secret


async def list_tokens(settings: Settings, *, include_revoked: bool = False) -> list[TokenInfo]:
    """The tokens in the order they were created (``idstore token list``);
    revoked ones only when ``include_revoked``."""
    query = select(ApiToken).order_by(ApiToken.created_at, ApiToken.id)
    if not include_revoked:
        query = query.where(ApiToken.revoked_at.is_(None))
    async with _transaction(settings) as session:
        return [TokenInfo.of(token) for token in await session.scalars(query)]


async def revoke_token(settings: Settings, name_or_id: str) -> TokenInfo:
    """Revoke the token of that name or id (``idstore token revoke``). Revoking
    a revoked token keeps its first revocation time."""
    async with _transaction(settings) as session:
        token = await session.scalar(
            select(ApiToken).where((ApiToken.name == name_or_id) | (ApiToken.id == name_or_id))
        )
        if token is None:
            raise NotFoundError("token", name_or_id)
        if token.revoked_at is None:
            token.revoked_at = utcnow()
        return TokenInfo.of(token)


DEV_TOKEN_FILE_SUFFIX = ".dev-token"


def dev_token_file(settings: Settings) -> Path | None:
    """Where the dev token's secret is kept: beside the SQLite database file
    (``idstore.db.dev-token``); ``None`` on PostgreSQL and in-memory SQLite."""
    if not settings.is_sqlite:
        return None
    database = make_url(settings.database_url).database
    if not database or database == ":memory:" or database.startswith("file:"):
        return None
    path = Path(database)
    return path.with_name(path.name + DEV_TOKEN_FILE_SUFFIX)


def _read_kept_secret(path: Path | None) -> str | None:
    if path is None:
        return None
    try:
        return path.read_text().strip() or None
    except FileNotFoundError:
        return None


def _keep_secret(path: Path, secret: str) -> None:
    """Write ``secret`` to ``path``, readable by its owner only (0600), replacing
    the file at once so that no reader sees half a secret."""
    partial = path.with_name(path.name + ".partial")
    descriptor = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(descriptor, "w") as file:
        os.fchmod(file.fileno(), 0o600)
        file.write(secret + "\n")
    os.replace(partial, path)


def _still_valid(token: ApiToken, secret: str) -> bool:
    now = utcnow()
    return (
        token.revoked_at is None
        and (token.expires_at is None or token.expires_at > now)
        and hmac.compare_digest(token.secret_hash, hash_secret(secret))
    )


async def ensure_dev_token(settings: Settings) -> str | None:
    """While no token but the ``dev`` one is usable, return the ``dev`` token's
    secret, issuing it when needed; once other tokens exist, do nothing and
    return ``None``.

    Only hashes are stored in the database, so the secret is kept in
    :func:`dev_token_file` (mode 0600) beside the SQLite file, and given
    again while its hash is still the ``dev`` row's: the token a user copied
    keeps working across restarts. When the file is missing, or its secret no
    longer matches (revoked, expired, another database), the ``dev`` token is
    replaced and the file rewritten. Without a file (PostgreSQL, in-memory
    SQLite) it is replaced on every call. Once an admin has issued tokens of
    their own, nothing is created.
    """
    path = dev_token_file(settings)
    kept = _read_kept_secret(path)
    async with _transaction(settings) as session:
        others = await session.scalar(
            select(func.count())
            .select_from(ApiToken)
            .where(ApiToken.revoked_at.is_(None), ApiToken.name != DEV_TOKEN_NAME)
        )
        if others:
            return None
        existing = await session.scalar(select(ApiToken).where(ApiToken.name == DEV_TOKEN_NAME))
        if existing is not None and kept is not None and _still_valid(existing, kept):
            return kept
        if existing is not None:
            await session.delete(existing)
            await session.flush()
        _, secret = await create_token(session, DEV_TOKEN_NAME, list(DEV_TOKEN_SCOPES))
    if path is not None:
        _keep_secret(path, secret)
    return secret


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
