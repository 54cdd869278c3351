"""Test fixtures: every store test runs against SQLite and PostgreSQL.

The PostgreSQL half uses a database created for this run (dropped at the
end) on the server named by ``IDSTORE_TEST_POSTGRES_URL`` (default: the local
``test`` database). When that server is unreachable the PostgreSQL half is
deselected and the run says so in its summary, unless
``IDSTORE_TEST_REQUIRE_POSTGRES=1`` (set by CI), which makes the run fail.
"""

from __future__ import annotations

import asyncio
import os
import re
import secrets
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import delete, text
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, create_async_engine
from starlette.applications import Starlette

from identity_store import migrate
from identity_store.database import create_engine, create_session_factory
from identity_store.models import Base
from identity_store.settings import Settings
from scim_server.app import create_app
from tests.emulators.auth0 import Auth0Emulator

DEFAULT_POSTGRES_URL = "postgresql+asyncpg://postgres@127.0.0.1:5432/test"
BACKENDS = ["sqlite", "postgresql"]

_postgres_problem: str | None = None


def postgres_server_url() -> str:
    return os.environ.get("IDSTORE_TEST_POSTGRES_URL", DEFAULT_POSTGRES_URL)


def postgres_required() -> bool:
    return os.environ.get("IDSTORE_TEST_REQUIRE_POSTGRES", "") not in ("", "0", "false")


async def _probe_postgres(url: str) -> str | None:
    engine = create_async_engine(url, connect_args={"timeout": 5})
    try:
        async with engine.connect() as connection:
            await connection.execute(text("SELECT 1"))
    except Exception as exc:  # any failure means "not reachable"
        return f"{type(exc).__name__}: {exc}"
    finally:
        await engine.dispose()
    return None


def pytest_configure(config: pytest.Config) -> None:
    global _postgres_problem
    _postgres_problem = asyncio.run(_probe_postgres(postgres_server_url()))
    if _postgres_problem and postgres_required():
        raise pytest.UsageError(
            "PostgreSQL is required (IDSTORE_TEST_REQUIRE_POSTGRES=1) but "
            f"{postgres_server_url()} is unreachable: {_postgres_problem}"
        )


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if not _postgres_problem:
        return
    kept, dropped = [], []
    for item in items:
        callspec = getattr(item, "callspec", None)
        uses_pg = callspec is not None and callspec.params.get("backend") == "postgresql"
        (dropped if uses_pg or item.get_closest_marker("postgresql") else kept).append(item)
    if dropped:
        config.hook.pytest_deselected(items=dropped)
        items[:] = kept
    config.stash[_deselected_key] = len(dropped)


_deselected_key = pytest.StashKey[int]()


_ran_key = pytest.StashKey[dict[str, int]]()


def _database_of(item: pytest.Item) -> str | None:
    callspec = getattr(item, "callspec", None)
    backend = callspec.params.get("backend") if callspec is not None else None
    if backend is None and item.get_closest_marker("postgresql"):
        return "postgresql"
    return str(backend) if backend is not None else None


def pytest_collection_finish(session: pytest.Session) -> None:
    """Count the tests of each half that are about to run (after every
    deselection: ``-k``, ``-m``, an unreachable PostgreSQL)."""
    ran = {"sqlite": 0, "postgresql": 0}
    for item in session.items:
        database = _database_of(item)
        if database in ran:
            ran[database] += 1
    session.config.stash[_ran_key] = ran


_BACKEND_ID = re.compile(r"\[(?:[^\]]*-)?(sqlite|postgresql)(?:-[^\]]*)?\]$")


@pytest.hookimpl(optionalhook=True)
def pytest_xdist_node_collection_finished(node: Any, ids: list[str]) -> None:
    """Under pytest-xdist the workers collect, not this process: count each
    half from the first worker's test ids (every worker collects the same),
    by the ``backend`` parameter's id in them."""
    config = node.config
    if config.stash.get(_ran_key, None) is not None:
        return
    ran = {"sqlite": 0, "postgresql": 0}
    for nodeid in ids:
        if (found := _BACKEND_ID.search(nodeid)) is not None:
            ran[found.group(1)] += 1
    config.stash[_ran_key] = ran


def pytest_terminal_summary(terminalreporter: Any, exitstatus: int, config: pytest.Config) -> None:
    """Say what ran, both ways: each half that ran and how many of its tests,
    and the PostgreSQL half that did not."""
    ran = config.stash.get(_ran_key, {})
    if ran.get("sqlite"):
        terminalreporter.write_line(f"SQLite half run ({ran['sqlite']} tests)")
    if _postgres_problem:
        count = config.stash.get(_deselected_key, 0)
        terminalreporter.write_line(
            f"PostgreSQL half NOT run ({count} tests deselected): {postgres_server_url()} "
            f"unreachable ({_postgres_problem}). Set IDSTORE_TEST_REQUIRE_POSTGRES=1 to fail "
            "instead.",
            yellow=True,
            bold=True,
        )
    elif ran.get("postgresql"):
        server = make_url(postgres_server_url()).render_as_string(hide_password=True)
        terminalreporter.write_line(
            f"PostgreSQL half run against {server} ({ran['postgresql']} tests)", green=True
        )


async def _create_postgres_database() -> str:
    server = make_url(postgres_server_url())
    name = f"idstore_test_{os.getpid()}_{secrets.token_hex(4)}"
    admin = create_async_engine(server, isolation_level="AUTOCOMMIT")
    try:
        async with admin.connect() as connection:
            await connection.execute(text(f'CREATE DATABASE "{name}"'))
    finally:
        await admin.dispose()
    return server.set(database=name).render_as_string(hide_password=False)


async def _drop_postgres_database(url: str) -> None:
    server = make_url(postgres_server_url())
    name = make_url(url).database
    admin = create_async_engine(server, isolation_level="AUTOCOMMIT")
    try:
        async with admin.connect() as connection:
            await connection.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    finally:
        await admin.dispose()


@pytest.fixture(scope="session")
async def fresh_database_url(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Any]:
    """A factory of empty databases (not migrated) of a given backend."""
    created: list[str] = []

    async def make(backend: str) -> str:
        if backend == "sqlite":
            path = tmp_path_factory.mktemp("sqlite") / "idstore.db"
            return f"sqlite+aiosqlite:///{path}"
        url = await _create_postgres_database()
        created.append(url)
        return url

    yield make
    for url in created:
        await _drop_postgres_database(url)


@pytest.fixture(scope="session", params=BACKENDS)
def backend(request: pytest.FixtureRequest) -> str:
    """Which database the test runs against."""
    return str(request.param)


@pytest.fixture(scope="session")
async def migrated_urls() -> dict[str, str]:
    """One migrated database per backend, shared by the session."""
    return {}


@pytest.fixture(scope="session")
async def _backend_url(backend: str, fresh_database_url: Any, migrated_urls: dict[str, str]) -> str:
    if backend not in migrated_urls:
        url = await fresh_database_url(backend)
        await migrate.upgrade_async(Settings(DATABASE_URL=url))
        migrated_urls[backend] = url
    return migrated_urls[backend]


@pytest.fixture
def settings(_backend_url: str) -> Settings:
    """Settings pointing at the migrated database of this backend."""
    return Settings(DATABASE_URL=_backend_url)


@pytest.fixture(scope="session")
async def _engines() -> AsyncIterator[dict[str, AsyncEngine]]:
    engines: dict[str, AsyncEngine] = {}
    yield engines
    for engine in engines.values():
        await engine.dispose()


async def _empty_tables(engine: AsyncEngine) -> None:
    tables = list(reversed(Base.metadata.sorted_tables))
    async with engine.begin() as connection:
        if engine.dialect.name == "postgresql":
            names = ", ".join(t.name for t in tables)
            await connection.execute(text(f"TRUNCATE {names} RESTART IDENTITY CASCADE"))
        else:
            for table in tables:
                await connection.execute(delete(table))
        # The one row migration 0008 writes, as a fresh database has it.
        await connection.execute(text("INSERT INTO rbac_revisions (id, revision) VALUES (1, 0)"))


@pytest.fixture
async def engine(
    settings: Settings, _engines: dict[str, AsyncEngine]
) -> AsyncIterator[AsyncEngine]:
    """The engine of this backend's database; every table is emptied after the test."""
    if settings.database_url not in _engines:
        _engines[settings.database_url] = create_engine(settings)
    engine = _engines[settings.database_url]
    yield engine
    await _empty_tables(engine)


@pytest.fixture
async def session(engine: AsyncEngine) -> AsyncIterator[AsyncSession]:
    async with create_session_factory(engine)() as session:
        yield session


@pytest.fixture
async def app(settings: Settings, engine: AsyncEngine) -> AsyncIterator[Starlette]:
    """The real application, its lifespan running."""
    application = create_app(settings)
    async with application.router.lifespan_context(application):
        yield application


@pytest.fixture
async def client(app: Starlette) -> AsyncIterator[httpx.AsyncClient]:
    """An HTTP client talking to the application through ASGI."""
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as client:
        yield client


@pytest.fixture(scope="session")
def repo_root() -> Iterator[Path]:
    return Path(__file__).resolve().parent.parent


@pytest.fixture
async def tokens_by_scope(engine: AsyncEngine) -> dict[str, str]:
    """Secrets of three tokens: ``scim:read``, ``scim:write`` and ``admin``."""
    from identity_store import tokens

    secrets_: dict[str, str] = {}
    async with create_session_factory(engine)() as session:
        for scope in ("scim:read", "scim:write", "admin"):
            _, secrets_[scope] = await tokens.create_token(session, f"test-{scope}", [scope])
        await session.commit()
    return secrets_


@pytest.fixture
async def scim(app: Starlette, tokens_by_scope: dict[str, str]) -> AsyncIterator[httpx.AsyncClient]:
    """A client of ``/scim/v2`` authenticated with a ``scim:write`` token."""
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(
        transport=transport,
        base_url="http://testserver/scim/v2",
        headers={
            "Authorization": f"Bearer {tokens_by_scope['scim:write']}",
            "Content-Type": "application/scim+json",
        },
    ) as client:
        yield client


@pytest.fixture
async def store(settings: Settings, engine: AsyncEngine) -> AsyncIterator[Any]:
    """The open store of this backend's database, as the server and workers open it."""
    from identity_store.store import Store

    opened = await Store.open(settings)
    try:
        yield opened
    finally:
        await opened.close()


@pytest.fixture(scope="session")
def auth0_server() -> Iterator[Auth0Emulator]:
    """One Auth0 emulator for the session (a real uvicorn on 127.0.0.1)."""
    with Auth0Emulator() as emulator:
        yield emulator


@pytest.fixture
def auth0(auth0_server: Auth0Emulator) -> Iterator[Auth0Emulator]:
    """The Auth0 emulator, empty (no users, limit or fault); at teardown, no
    request the test made and no answer it got broke Auth0's OpenAPI
    description (a test that breaks it on purpose clears the list)."""
    auth0_server.reset()
    yield auth0_server
    violations = list(auth0_server.contract_violations)
    auth0_server.reset()
    assert violations == [], "the Auth0 contract was broken:\n" + "\n".join(violations)
