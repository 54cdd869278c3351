"""Operational endpoints: ``/healthz`` (process up) and ``/readyz`` (database
reachable and migrated to head), SPEC §5 "Operations"."""

from __future__ import annotations

from sqlalchemy.exc import SQLAlchemyError
from starlette.requests import Request
from starlette.responses import JSONResponse

from identity_store.migrate import current_revision

from .state import app_state


async def healthz(request: Request) -> JSONResponse:
    return JSONResponse({"status": "ok"})


async def readyz(request: Request) -> JSONResponse:
    state = app_state(request)
    try:
        revision = await current_revision(state.engine)
    except (SQLAlchemyError, OSError) as exc:
        return JSONResponse(
            {"status": "unavailable", "database": "unreachable", "detail": type(exc).__name__},
            status_code=503,
        )
    if revision != state.head_revision:
        return JSONResponse(
            {
                "status": "unavailable",
                "database": "reachable",
                "migration": revision,
                "expected": state.head_revision,
            },
            status_code=503,
        )
    return JSONResponse({"status": "ok", "database": "reachable", "migration": revision})
