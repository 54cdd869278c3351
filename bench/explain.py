"""``EXPLAIN (ANALYZE, BUFFERS)`` of the SQL behind the filters the issue
names, on the seeded PostgreSQL store.

Two forms are shown: the queries as the issue writes them
(``user_name_normalized = $1 AND deleted_at IS NULL``; ``external_id = $1 AND
deleted_at IS NULL``), and every SELECT the server's application really sends
for ``GET /Users?filter=...``, captured from SQLAlchemy while the application
runs in process, so that the plans follow the code as it changes.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sqlalchemy import event
from sqlalchemy.engine import Engine, make_url

from identity_store.settings import Settings

from .dataset import Dataset
from .httpclient import encode_query

HANDWRITTEN = {
    "userName eq": "SELECT * FROM users WHERE user_name_normalized = $1 AND deleted_at IS NULL",
    "externalId eq": "SELECT * FROM users WHERE external_id = $1 AND deleted_at IS NULL",
}


@dataclass(slots=True)
class Plan:
    """One statement and its plan."""

    title: str
    sql: str
    params: list[Any]
    plan: str


async def _explain(conn: Any, title: str, sql: str, params: list[Any]) -> Plan:
    rows = await conn.fetch(f"EXPLAIN (ANALYZE, BUFFERS) {sql}", *params)
    return Plan(title, sql, params, "\n".join(r[0] for r in rows))


async def _server_statements(url: str, token: str, path: str) -> list[tuple[str, list[Any]]]:
    """Every SELECT the server's own application sends for ``GET path``.

    The application of ``scim_server.app.create_app`` runs in this process
    (lifespan included) behind ``httpx.ASGITransport``; a listener on the
    :class:`~sqlalchemy.engine.Engine` class sees each statement. The request
    is sent twice and the second one is captured, so that one-off work
    (connection set-up, token bookkeeping) does not show."""
    import httpx

    from scim_server.app import create_app

    app = create_app(Settings(DATABASE_URL=url))
    captured: list[tuple[str, list[Any]]] = []

    def capture(
        conn: Any, cursor: Any, statement: str, params: Any, context: Any, many: bool
    ) -> None:
        if statement.lstrip().upper().startswith(("SELECT", "WITH")):
            captured.append((statement, list(params or ())))

    event.listen(Engine, "before_cursor_execute", capture)
    try:
        async with app.router.lifespan_context(app):
            transport = httpx.ASGITransport(app=app)
            headers = {"Authorization": f"Bearer {token}"}
            async with httpx.AsyncClient(transport=transport, base_url="http://bench") as client:
                await client.get(path, headers=headers)
                captured.clear()
                response = await client.get(path, headers=headers)
                response.raise_for_status()
    finally:
        event.remove(Engine, "before_cursor_execute", capture)
    return captured


async def explain_filters(
    url: str, data: Dataset, token: str | None = None
) -> tuple[list[Plan], str | None]:
    """Plans of both forms; the second element says why the captured form is
    missing, if it is."""
    import asyncpg  # type: ignore[import-untyped]

    dsn = make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)
    i = data.regular_users // 2
    values = {"userName eq": data.user_name(i), "externalId eq": data.external_id(i)}
    plans: list[Plan] = []
    problem: str | None = None
    conn = await asyncpg.connect(dsn)
    try:
        for title, sql in HANDWRITTEN.items():
            plans.append(
                await _explain(conn, f"{title} (as written in the issue)", sql, [values[title]])
            )
        for title, attr in (("userName eq", "userName"), ("externalId eq", "externalId")):
            if token is None:
                problem = "no token: the server's statements were not captured"
                break
            path = "/scim/v2/Users?" + encode_query({"filter": f'{attr} eq "{values[title]}"'})
            try:
                statements = await _server_statements(url, token, path)
            except Exception as exc:  # the application may change under us
                problem = f"could not capture the server's statements: {type(exc).__name__}: {exc}"
                break
            for k, (sql, params) in enumerate(statements, 1):
                label = f"{title} (statement {k} of {len(statements)} the server sends)"
                plans.append(await _explain(conn, label, sql, params))
    finally:
        await conn.close()
    return plans, problem
