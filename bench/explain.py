"""``EXPLAIN (ANALYZE, BUFFERS)`` of the SQL behind the filters the issue
names, on the seeded PostgreSQL store.

Two forms are shown: the queries as the issue writes them
(``user_name_normalized = $1 AND deleted_at IS NULL``; ``external_id = $1 AND
deleted_at IS NULL``), and every SELECT the server's application really sends
for ``GET /Users?filter=...``, captured from SQLAlchemy and from the asyncpg
connections of :mod:`identity_store.prepared_reads` while the application runs in
process, so that the plans follow the code as it changes. A fast-read
statement is explained as the server runs it: prepared, with a generic plan
and without JIT (the settings of its pool).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
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


FAST_READ_SETTINGS = ("SET plan_cache_mode = force_generic_plan", "SET jit = off")


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


def _literal(value: Any) -> str:
    if isinstance(value, int):
        return str(value)
    if isinstance(value, list):
        return "ARRAY[" + ", ".join(_literal(v) for v in value) + "]"
    return "'" + str(value).replace("'", "''") + "'"


async def _explain_prepared(conn: Any, title: str, sql: str, params: list[Any]) -> Plan:
    """As the fast-read pool runs it: prepared once, generic plan, no JIT."""
    async with conn.transaction():
        for setting in FAST_READ_SETTINGS:
            await conn.execute(setting.replace("SET", "SET LOCAL", 1))
        await conn.execute(f"PREPARE bench_explain AS {sql}")
        try:
            args = ", ".join(_literal(p) for p in params)
            rows = await conn.fetch(f"EXPLAIN (ANALYZE, BUFFERS) EXECUTE bench_explain({args})")
        finally:
            await conn.execute("DEALLOCATE bench_explain")
    return Plan(title, sql, params, "\n".join(r[0] for r in rows))


@contextmanager
def captured_statements() -> Iterator[list[tuple[str, list[Any], bool]]]:
    """Every SELECT sent to the database in this process while the block
    runs: ``(sql, params, fast)``, ``fast`` when it went through an asyncpg
    connection directly (the prepared reads) rather than SQLAlchemy.

    A listener on the :class:`~sqlalchemy.engine.Engine` class sees each
    SQLAlchemy statement; ``fetch``/``fetchval``/``fetchrow`` of asyncpg
    connections (which only the store's prepared reads call; SQLAlchemy
    prepares statements instead) are recorded while the block runs."""
    import asyncpg  # type: ignore[import-untyped]

    captured: list[tuple[str, list[Any], bool]] = []

    def capture(
        conn: Any, cursor: Any, statement: str, params: Any, context: Any, many: bool
    ) -> None:
        if statement.lstrip().upper().startswith(("SELECT", "WITH")):
            captured.append((statement, list(params or ()), False))

    names = ("fetch", "fetchval", "fetchrow")
    originals = {name: getattr(asyncpg.Connection, name) for name in names}

    def recording(name: str) -> Any:
        original = originals[name]

        async def method(self: Any, query: str, *args: Any, **kwargs: Any) -> Any:
            captured.append((query, list(args), True))
            return await original(self, query, *args, **kwargs)

        return method

    event.listen(Engine, "before_cursor_execute", capture)
    for name in originals:
        setattr(asyncpg.Connection, name, recording(name))
    try:
        yield captured
    finally:
        event.remove(Engine, "before_cursor_execute", capture)
        for name, original in originals.items():
            setattr(asyncpg.Connection, name, original)


async def explain_statements(
    conn: Any, title: str, statements: list[tuple[str, list[Any], bool]]
) -> list[Plan]:
    """Plans of captured statements, each as its path runs it (a fast read
    prepared, with a generic plan)."""
    plans: list[Plan] = []
    for k, (sql, params, fast) in enumerate(statements, 1):
        if fast:
            label = f"{title} (statement {k} of {len(statements)}, fast read, generic plan)"
            plans.append(await _explain_prepared(conn, label, sql, params))
        else:
            label = f"{title} (statement {k} of {len(statements)} the server sends)"
            plans.append(await _explain(conn, label, sql, params))
    return plans


async def _server_statements(url: str, token: str, path: str) -> list[tuple[str, list[Any], bool]]:
    """Every SELECT the server's own application sends for ``GET path``, and
    whether it went through the fast-read pool.

    The application of ``scim_server.app.create_app`` runs in this process
    (lifespan included) behind ``httpx.ASGITransport``, under
    :func:`captured_statements`. The request is sent twice and the second one
    is captured, so that one-off work (connection set-up, token bookkeeping)
    does not show."""
    import httpx

    from scim_server.app import create_app

    app = create_app(Settings(DATABASE_URL=url))
    with captured_statements() as captured:
        async with app.router.lifespan_context(app):
            transport = httpx.ASGITransport(app=app)
            headers = {"Authorization": f"Bearer {token}"}
            async with httpx.AsyncClient(transport=transport, base_url="http://bench") as client:
                await client.get(path, headers=headers)
                captured.clear()
                response = await client.get(path, headers=headers)
                response.raise_for_status()
        return list(captured)


async def explain_filters(
    url: str, data: Dataset, token: str | None = None
) -> tuple[list[Plan], str | None]:
    """Plans of both forms; the second element says why the captured form is
    missing, if it is."""
    import asyncpg

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
            plans.extend(await explain_statements(conn, title, statements))
    finally:
        await conn.close()
    return plans, problem
