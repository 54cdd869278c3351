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

from identity_store import migrate, tokens
from identity_store.errors import StoreError, UnavailableError
from identity_store.settings import Settings
from idstore import (
    auth0_commands,
    import_commands,
    logs,
    outbox_commands,
    user_commands,
    worker_commands,
)


def _print_err(message: str) -> None:
    print(message, file=sys.stderr)


def cmd_serve(args: argparse.Namespace, settings: Settings) -> int:
    host = args.host or settings.host
    port = args.port if args.port is not None else settings.port
    if settings.is_sqlite and settings.worker_in_process:
        # The in-process worker reads its schedules at startup: a typo stops
        # the command here with one line, not the server with a traceback.
        worker_commands.check_schedules(settings)
    if settings.is_sqlite and not args.no_migrate:
        migrate.upgrade(settings)
    if settings.is_sqlite and settings.dev_token:
        secret = asyncio.run(tokens.ensure_dev_token(settings))
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
        log_config=logs.log_config(settings.log_level),
        proxy_headers=True,
    )
    return 0


def cmd_migrate(args: argparse.Namespace, settings: Settings) -> int:
    migrate.upgrade(settings, args.revision)
    _print_err(f"database migrated to {args.revision}")
    return 0


def _token_json(token: tokens.TokenInfo) -> dict[str, object]:
    return {
        "id": token.id,
        "name": token.name,
        "scopes": list(token.scopes),
        "user_id": token.user_id,
        "idp_source": token.idp_source,
        "created_at": token.created_at.isoformat(),
        "last_used_at": token.last_used_at.isoformat() if token.last_used_at else None,
        "expires_at": token.expires_at.isoformat() if token.expires_at else None,
        "revoked_at": token.revoked_at.isoformat() if token.revoked_at else None,
    }


def cmd_token(args: argparse.Namespace, settings: Settings) -> int:
    if args.token_command == "create":
        scopes = [s.strip() for value in args.scope for s in value.split(",") if s.strip()]
        secret = asyncio.run(
            tokens.issue_token(
                settings,
                args.name,
                scopes,
                user_id=args.user_id,
                expires_in=timedelta(days=args.expires_in_days) if args.expires_in_days else None,
                idp_source=args.idp_source,
            )
        )
        # The secret alone on stdout, so that scripts can capture it.
        print(secret)
        _print_err(f"token {args.name!r} created; the secret is shown only once")
    elif args.token_command == "list":
        listed = asyncio.run(tokens.list_tokens(settings, include_revoked=args.all))
        if args.json:
            print(json.dumps([_token_json(token) for token in listed], indent=2))
        else:
            for token in listed:
                last_used = token.last_used_at.isoformat() if token.last_used_at else "never"
                revoked = f"  revoked {token.revoked_at.isoformat()}" if token.revoked_at else ""
                print(
                    f"{token.id}  {token.name:<24} {','.join(token.scopes):<28} "
                    f"last used {last_used}{revoked}"
                )
    else:
        revoked_token = asyncio.run(tokens.revoke_token(settings, args.name))
        _print_err(f"token {revoked_token.name!r} revoked")
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
        help="scim:read, scim:write, admin or authz:check; repeat or separate with commas",
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

    worker_commands.add_parsers(sub)
    user_commands.add_parsers(sub)
    outbox_commands.add_parsers(sub)
    auth0_commands.add_parsers(sub)
    import_commands.add_parsers(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    settings = Settings()
    try:
        result: int = args.handler(args, settings)
    except UnavailableError as exc:  # DatabaseConnectionError among them
        _print_err(f"idstore: {exc.detail}")
        return 1
    except StoreError as exc:
        _print_err(f"idstore: {exc.detail}")
        return 2
    except worker_commands.ERRORS as exc:
        _print_err(f"idstore: {exc}")
        return 2
    return result


if __name__ == "__main__":
    sys.exit(main())
