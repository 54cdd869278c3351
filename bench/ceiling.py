"""The ceiling: a bare Starlette application with one route that returns a
fixed SCIM user body, served by uvicorn with the settings ``idstore serve``
uses (factory, host, port, workers, log level, ``proxy_headers``).

Whatever the server does per request beyond this (authentication, database,
serialisation, middleware) shows up as its ratio to the ceiling, measured in
the same run with the same generator and concurrency.

    python -m bench.ceiling --port 8001 [--workers 1] [--log-level info]

``BENCH_CEILING_BODY`` may name a file holding the body to return (the run
uses a user document fetched from the real server, so both send the same
bytes); otherwise a built-in Entra-provisioned user is returned.
"""

from __future__ import annotations

import argparse
import json
import os
from collections.abc import Sequence
from pathlib import Path

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

MEDIA_TYPE = "application/scim+json"

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


def app_factory() -> Starlette:
    """The ceiling application; the body is read once, at start."""
    body = _body()
    headers = {"ETag": 'W/"1"'}

    async def user(request: Request) -> Response:
        return Response(body, media_type=MEDIA_TYPE, headers=headers)

    async def healthz(request: Request) -> Response:
        return Response(b'{"status":"ok"}', media_type="application/json")

    return Starlette(
        routes=[
            Route("/healthz", healthz, methods=["GET"]),
            Route("/scim/v2/Users/{id}", user, methods=["GET"]),
        ]
    )


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
