"""The ceilings: a bare Starlette application with one route,
``GET /scim/v2/Users/{id}``, served by uvicorn with the settings ``idstore
serve`` uses (factory, host, port, workers, log level, ``proxy_headers``).

- **Bare** (the default): the route returns a fixed SCIM user body. Whatever
  the server does per request beyond this (authentication, database,
  serialisation, middleware) shows up as its ratio to the ceiling.
- **Database-backed** (``BENCH_CEILING_DSN`` set to a PostgreSQL DSN): the
  route answers with one prepared primary-key ``SELECT`` of the user's stored
  document (:data:`DOCUMENTS_TABLE`, filled by the seeding with the server's
  own rendering of every seeded user), on a connection of an asyncpg pool set
  up as the server's prepared-read pool is (no reset on release, generic
  plans, no JIT), and returns its bytes: the limit of any PostgreSQL-backed
  GET here. An unknown id is a 404.

Both are measured in the same run with the same generator and concurrency
as the phases.

    python -m bench.ceiling --port 8001 [--workers 1] [--log-level info]

``BENCH_CEILING_BODY`` may name a file holding the bare ceiling's body (the
run uses a user document fetched from the real server, so both send the same
bytes); otherwise a built-in Entra-provisioned user is returned.
``BENCH_CEILING_POOL_SIZE`` sizes the database-backed ceiling's pool (default
16, the bench server's read pool).
"""

from __future__ import annotations

import argparse
import json
import os
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from pathlib import Path

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

MEDIA_TYPE = "application/scim+json"
DOCUMENTS_SCHEMA = "bench_ceiling"
DOCUMENTS_TABLE = f"{DOCUMENTS_SCHEMA}.user_documents"
"""``(id varchar(26) PRIMARY KEY, document text)``: each seeded user's SCIM
document as the server renders it, compact JSON (bench.seed fills it)."""
SELECT_DOCUMENT = f"SELECT document FROM {DOCUMENTS_TABLE} WHERE id = $1"

DEFAULT_BODY = {
    "schemas": [
        "urn:ietf:params:scim:schemas:core:2.0:User",
        "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User",
    ],
    "id": "01M80QPADY00W8GAGEBV3Q6TY0",
    "externalId": "63033b0c-a389-435a-be3a-ea43c55ed418",
    "userName": "user0000000@bench.example.com",
    "name": {"formatted": "Given0 Family0", "familyName": "Family0", "givenName": "Given0"},
    "displayName": "Given0 Family0",
    "active": True,
    "emails": [{"value": "user0000000@bench.example.com", "type": "work", "primary": True}],
    "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User": {
        "employeeNumber": "E0000000",
        "department": "Dept0",
    },
    "meta": {
        "resourceType": "User",
        "created": "2026-01-01T00:00:00+00:00",
        "lastModified": "2026-01-01T00:00:00+00:00",
        "location": "http://127.0.0.1/scim/v2/Users/01M80QPADY00W8GAGEBV3Q6TY0",
        "version": 'W/"1"',
    },
}


def _body() -> bytes:
    path = os.environ.get("BENCH_CEILING_BODY")
    if path:
        return Path(path).read_bytes()
    return json.dumps(DEFAULT_BODY, separators=(",", ":")).encode()


async def _healthz(request: Request) -> Response:
    return Response(b'{"status":"ok"}', media_type="application/json")


def bare_app() -> Starlette:
    """The bare ceiling; the body is read once, at start."""
    body = _body()
    headers = {"ETag": 'W/"1"'}

    async def user(request: Request) -> Response:
        return Response(body, media_type=MEDIA_TYPE, headers=headers)

    return Starlette(
        routes=[
            Route("/healthz", _healthz, methods=["GET"]),
            Route("/scim/v2/Users/{id}", user, methods=["GET"]),
        ]
    )


async def _no_reset(connection: object) -> None:
    """Autocommit SELECTs only: nothing to reset on release."""


def database_app(dsn: str, pool_size: int) -> Starlette:
    """The database-backed ceiling: one prepared primary-key ``SELECT`` per
    request (asyncpg prepares it once per connection and caches it)."""
    import asyncpg  # type: ignore[import-untyped]

    pools: list[asyncpg.Pool] = []
    headers = {"ETag": 'W/"1"'}

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        pool = await asyncpg.create_pool(
            dsn,
            min_size=1,
            max_size=pool_size,
            reset=_no_reset,
            server_settings={"plan_cache_mode": "force_generic_plan", "jit": "off"},
        )
        pools.append(pool)
        try:
            yield
        finally:
            await pool.close()

    async def user(request: Request) -> Response:
        async with pools[0].acquire() as connection:
            document = await connection.fetchval(SELECT_DOCUMENT, request.path_params["id"])
        if document is None:
            return Response(b'{"status":"404"}', status_code=404, media_type=MEDIA_TYPE)
        return Response(document.encode(), media_type=MEDIA_TYPE, headers=headers)

    return Starlette(
        routes=[
            Route("/healthz", _healthz, methods=["GET"]),
            Route("/scim/v2/Users/{id}", user, methods=["GET"]),
        ],
        lifespan=lifespan,
    )


def app_factory() -> Starlette:
    """The ceiling the environment asks for (``BENCH_CEILING_DSN``: the
    database-backed one)."""
    dsn = os.environ.get("BENCH_CEILING_DSN")
    if dsn:
        return database_app(dsn, int(os.environ.get("BENCH_CEILING_POOL_SIZE", "16")))
    return bare_app()


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--log-level", default="info")
    args = parser.parse_args(argv)
    uvicorn.run(
        "bench.ceiling:app_factory",
        factory=True,
        host=args.host,
        port=args.port,
        workers=args.workers,
        log_level=args.log_level,
        proxy_headers=True,
    )


if __name__ == "__main__":
    main()
