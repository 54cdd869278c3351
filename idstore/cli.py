"""The ``idstore`` command: serve, migrate, tokens (SPEC §5 "CLI").

Every command honours ``DATABASE_URL`` and the other settings of
:class:`identity_store.settings.Settings`.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from collections.abc import Sequence
from datetime import timedelta

import uvicorn
from sqlalchemy import func, select

from identity_store import migrate, tokens
from identity_store.database import create_engine, create_session_factory
from identity_store.errors import StoreError
from identity_store.models import ApiToken, utcnow
from identity_store.settings import Settings

DEV_TOKEN_NAME = "dev"


def _print_err(message: str) -> None:
    print(message, file=sys.stderr)


async def _ensure_dev_token(settings: Settings) -> str | None:
    """On the SQLite default with no usable token, (re)issue the ``dev`` token.

    Only hashes are stored, so an existing dev token cannot be shown again:
    when the ``dev`` token is the only one, it is rotated so that every
    ``idstore serve`` prints one that works. Once an admin has issued tokens of
    their own, nothing is created.
    """
    engine = create_engine(settings, null_pool=True)
    try:
        async with create_session_factory(engine)() as session:
            others = await session.scalar(
                select(func.count())
                .select_from(ApiToken)
                .where(ApiToken.revoked_at.is_(None), ApiToken.name != DEV_TOKEN_NAME)
            )
            if others:
                return None
            existing = await session.scalar(select(ApiToken).where(ApiToken.name == DEV_TOKEN_NAME))
            if existing is not None:
                await session.delete(existing)
                await session.flush()
            _, secret = await tokens.create_token(session, DEV_TOKEN_NAME, ["scim:write", "admin"])
            await session.commit()
            return secret
    finally:
        await engine.dispose()


def cmd_serve(args: argparse.Namespace, settings: Settings) -> int:
    host = args.host or settings.host
    port = args.port if args.port is not None else settings.port
    if settings.is_sqlite and not args.no_migrate:
        migrate.upgrade(settings)
    if settings.is_sqlite and settings.dev_token:
        secret = asyncio.run(_ensure_dev_token(settings))
        if secret:
            print(f"Development token (scim:write, admin): {secret}")
            print(
                f"  curl -H 'Authorization: Bearer {secret}' http://{host}:{port}/scim/v2/Users",
                flush=True,
            )
    uvicorn.run(
        "idstore.asgi:app_factory",
        factory=True,
        host=host,
        port=port,
        workers=args.workers,
        log_level=settings.log_level,
        proxy_headers=True,
    )
    return 0


def cmd_migrate(args: argparse.Namespace, settings: Settings) -> int:
    migrate.upgrade(settings, args.revision)
    _print_err(f"database migrated to {args.revision}")
    return 0


async def _token_create(args: argparse.Namespace, settings: Settings) -> str:
    scopes = [s.strip() for value in args.scope for s in value.split(",") if s.strip()]
    expires_at = utcnow() + timedelta(days=args.expires_in_days) if args.expires_in_days else None
    engine = create_engine(settings, null_pool=True)
    try:
        async with create_session_factory(engine)() as session:
            _, secret = await tokens.create_token(
                session,
                args.name,
                scopes,
                user_id=args.user_id,
                expires_at=expires_at,
                idp_source=args.idp_source,
            )
            await session.commit()
            return secret
    finally:
        await engine.dispose()


async def _token_list(args: argparse.Namespace, settings: Settings) -> list[dict[str, object]]:
    engine = create_engine(settings, null_pool=True)
    try:
        async with create_session_factory(engine)() as session:
            rows = await tokens.list_tokens(session, include_revoked=args.all)
            return [
                {
                    "id": t.id,
                    "name": t.name,
                    "scopes": t.scopes,
                    "user_id": t.user_id,
                    "idp_source": t.idp_source,
                    "created_at": t.created_at.isoformat(),
                    "last_used_at": t.last_used_at.isoformat() if t.last_used_at else None,
                    "expires_at": t.expires_at.isoformat() if t.expires_at else None,
                    "revoked_at": t.revoked_at.isoformat() if t.revoked_at else None,
                }
                for t in rows
            ]
    finally:
        await engine.dispose()


async def _token_revoke(args: argparse.Namespace, settings: Settings) -> str:
    engine = create_engine(settings, null_pool=True)
    try:
        async with create_session_factory(engine)() as session:
            token = await tokens.revoke_token(session, args.name)
            await session.commit()
            return token.name
    finally:
        await engine.dispose()


def cmd_token(args: argparse.Namespace, settings: Settings) -> int:
    if args.token_command == "create":
        # The secret alone on stdout, so that scripts can capture it.
        print(asyncio.run(_token_create(args, settings)))
        _print_err(f"token {args.name!r} created; the secret is shown only once")
    elif args.token_command == "list":
        rows = asyncio.run(_token_list(args, settings))
        if args.json:
            print(json.dumps(rows, indent=2))
        else:
            for row in rows:
                revoked = f"  revoked {row['revoked_at']}" if row["revoked_at"] else ""
                scopes = ",".join(row["scopes"])  # type: ignore[arg-type]
                print(
                    f"{row['id']}  {row['name']:<24} {scopes:<28} "
                    f"last used {row['last_used_at'] or 'never'}{revoked}"
                )
    else:
        name = asyncio.run(_token_revoke(args, settings))
        _print_err(f"token {name!r} revoked")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="idstore", description="SCIM 2.0 provisioning server and identity store"
    )
    sub = parser.add_subparsers(dest="command", required=True)

    serve = sub.add_parser("serve", help="run the HTTP server (uvicorn)")
    serve.add_argument("--host", help="interface to bind (default: HOST or 127.0.0.1)")
    serve.add_argument("--port", type=int, help="port (default: PORT or 8000)")
    serve.add_argument("--workers", type=int, default=1, help="worker processes (default 1)")
    serve.add_argument(
        "--no-migrate", action="store_true", help="do not migrate the SQLite default at start"
    )
    serve.set_defaults(handler=cmd_serve)

    mig = sub.add_parser("migrate", help="apply Alembic migrations")
    mig.add_argument("revision", nargs="?", default="head", help="target revision (default head)")
    mig.set_defaults(handler=cmd_migrate)

    token = sub.add_parser("token", help="manage API tokens")
    token_sub = token.add_subparsers(dest="token_command", required=True)
    create = token_sub.add_parser("create", help="issue a token; prints the secret once")
    create.add_argument("--name", required=True)
    create.add_argument(
        "--scope",
        action="append",
        required=True,
        help="scim:read, scim:write or admin; repeat or separate with commas",
    )
    create.add_argument("--user-id", help="bind the token to a user (SCIM /Me)")
    create.add_argument("--expires-in-days", type=int, help="expiry, in days from now")
    create.add_argument(
        "--idp-source",
        help="identity provider the token writes for (AAD for Microsoft Entra ID): "
        "users it creates get this idp_source",
    )
    listing = token_sub.add_parser("list", help="list tokens (never their secrets)")
    listing.add_argument("--all", action="store_true", help="include revoked tokens")
    listing.add_argument("--json", action="store_true", help="print JSON")
    revoke = token_sub.add_parser("revoke", help="revoke a token by name or id")
    revoke.add_argument("name")
    token.set_defaults(handler=cmd_token)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    settings = Settings()
    try:
        result: int = args.handler(args, settings)
    except StoreError as exc:
        _print_err(f"idstore: {exc.detail}")
        return 2
    except migrate.MigrationsNotFoundError as exc:
        _print_err(f"idstore: {exc}")
        return 2
    return result


if __name__ == "__main__":
    sys.exit(main())
