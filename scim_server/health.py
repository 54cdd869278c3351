"""Operational endpoints: ``/healthz`` (process up) and ``/readyz`` (database
reachable and its migration history containing the code's head: at head, or
ahead during a rolling upgrade), SPEC §5 "Operations", docs/operations.md."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import JSONResponse

from .state import app_state


async def healthz(request: Request) -> JSONResponse:
    return JSONResponse({"status": "ok"})


async def readyz(request: Request) -> JSONResponse:
    state = await app_state(request).store.migration_state()
    if not state.reachable:
        return JSONResponse(
            {"status": "unavailable", "database": "unreachable", "detail": state.problem},
            status_code=503,
        )
    if not state.ready:
        return JSONResponse(
            {
                "status": "unavailable",
                "database": "reachable",
                "migration": state.current,
                "expected": state.head,
                "schema": state.position,
            },
            status_code=503,
        )
    return JSONResponse(
        {
            "status": "ok",
            "database": "reachable",
            "migration": state.current,
            "schema": state.position,
        }
    )
