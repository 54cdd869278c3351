"""A database that is away is 503 with ``Retry-After`` on every path, never
500, and the server recovers without a restart (issue 10). PostgreSQL only:
SQLite is a file in the process."""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from sqlalchemy import text
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncEngine

from identity_store.settings import Settings
from scim_server.app import create_app

from .helpers import BULK_REQUEST, GROUP_SCHEMA, SEARCH_SCHEMA, patch_body, user_body

UNKNOWN = "01JZ0000000000000000000000"


def _requests(user_id: str, group_id: str) -> list[tuple[str, str, Any]]:
    """One request of each kind: reads (prepared and SQLAlchemy), writes, search, bulk."""
    return [
        ("GET", f"/Users/{user_id}", None),
        ("GET", "/Users", None),
        ("GET", '/Users?filter=userName eq "x"', None),
        ("GET", '/Users?filter=title eq "x"', None),
        ("GET", "/Users?sortBy=userName", None),
        ("GET", f"/Groups/{group_id}", None),
        ("GET", "/Groups", None),
        ("POST", "/Users", user_body("new")),
        ("PUT", f"/Users/{user_id}", user_body("renamed")),
        (
            "PATCH",
            f"/Users/{user_id}",
            patch_body({"op": "replace", "path": "title", "value": "t"}),
        ),
        ("DELETE", f"/Users/{user_id}", None),
        ("POST", "/Groups", {"schemas": [GROUP_SCHEMA], "displayName": "new"}),
        (
            "PATCH",
            f"/Groups/{group_id}",
            patch_body({"op": "replace", "path": "displayName", "value": "n"}),
        ),
        ("DELETE", f"/Groups/{group_id}", None),
        ("POST", "/.search", {"schemas": [SEARCH_SCHEMA]}),
        ("POST", "/Users/.search", {"schemas": [SEARCH_SCHEMA], "filter": 'userName eq "x"'}),
    ]


def _assert_unavailable(response: httpx.Response) -> None:
    assert response.status_code == 503, response.text
    assert response.headers["retry-after"].isdigit()
    assert response.json()["status"] == "503"


def _closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@pytest.fixture
async def unreachable() -> AsyncIterator[httpx.AsyncClient]:
    """A client of a server whose PostgreSQL is a port nobody listens on."""
    url = f"postgresql+asyncpg://postgres@127.0.0.1:{_closed_port()}/idstore"
    application = create_app(Settings(DATABASE_URL=url))
    async with (
        application.router.lifespan_context(application),
        httpx.AsyncClient(
            transport=httpx.ASGITransport(app=application),
            base_url="http://testserver/scim/v2",
            headers={"Authorization": "Bearer idst_x_y"},
        ) as client,
    ):
        yield client


@pytest.mark.postgresql
async def test_a_server_whose_database_is_a_closed_port_answers_503(
    unreachable: httpx.AsyncClient,
) -> None:
    """The token look-up is the first to need the database: 503, not 500 nor 401."""
    for method, path, body in _requests(UNKNOWN, UNKNOWN):
        _assert_unavailable(await unreachable.request(method, path, json=body))
    bulk = {
        "schemas": [BULK_REQUEST],
        "Operations": [{"method": "DELETE", "path": f"/Users/{UNKNOWN}"}],
    }
    _assert_unavailable(await unreachable.post("/Bulk", json=bulk))


class _Proxy:
    """A TCP relay on loopback to PostgreSQL that the test can cut."""

    def __init__(self, host: str, port: int) -> None:
        self.target = (host, port)
        self.server: asyncio.Server | None = None
        self.writers: set[asyncio.StreamWriter] = set()

    async def start(self) -> int:
        self.server = await asyncio.start_server(self._relay, "127.0.0.1", 0)
        return int(self.server.sockets[0].getsockname()[1])

    async def _relay(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            upstream_reader, upstream_writer = await asyncio.open_connection(*self.target)
        except OSError:
            writer.close()
            return
        self.writers |= {writer, upstream_writer}

        async def pipe(source: asyncio.StreamReader, sink: asyncio.StreamWriter) -> None:
            with contextlib.suppress(OSError, asyncio.CancelledError):
                while data := await source.read(65536):
                    sink.write(data)
                    await sink.drain()
            sink.close()

        await asyncio.gather(pipe(reader, upstream_writer), pipe(upstream_reader, writer))

    async def cut(self) -> None:
        """Refuse new connections and drop the open ones."""
        assert self.server is not None
        self.server.close()
        for writer in self.writers:
            writer.transport.abort()
        self.writers.clear()


@pytest.mark.parametrize("backend", ["postgresql"], indirect=True)
async def test_a_database_lost_after_start_is_503_on_every_path(
    settings: Settings, engine: AsyncEngine, tokens_by_scope: dict[str, str]
) -> None:
    """With the token already verified (cached), every read and write path
    meets the lost database itself: 503 with Retry-After each time."""
    server = make_url(settings.database_url)
    proxy = _Proxy(server.host or "127.0.0.1", server.port or 5432)
    port = await proxy.start()
    application = create_app(
        Settings(DATABASE_URL=server.set(port=port).render_as_string(hide_password=False))
    )
    headers = {"Authorization": f"Bearer {tokens_by_scope['scim:write']}"}
    async with (
        application.router.lifespan_context(application),
        httpx.AsyncClient(
            transport=httpx.ASGITransport(app=application),
            base_url="http://testserver/scim/v2",
            headers=headers,
        ) as client,
    ):
        user = (await client.post("/Users", json=user_body("kept"))).json()
        group = (
            await client.post("/Groups", json={"schemas": [GROUP_SCHEMA], "displayName": "g"})
        ).json()
        assert (await client.get(f"/Users/{user['id']}")).status_code == 200
        await proxy.cut()
        for method, path, body in _requests(user["id"], group["id"]):
            _assert_unavailable(await client.request(method, path, json=body))


@pytest.mark.parametrize("backend", ["postgresql"], indirect=True)
async def test_backends_terminated_under_load_give_503_at_worst_and_the_server_recovers(
    settings: Settings, engine: AsyncEngine, scim: httpx.AsyncClient, app: Any
) -> None:
    """``pg_terminate_backend`` of every connection of the server, three times
    during 240 requests (8 at a time): each answer is a success or a 503,
    never a 500; afterwards every request succeeds again, same process."""
    users = [
        (await scim.post("/Users", json=user_body(f"load{i}", title="t"))).json()["id"]
        for i in range(4)
    ]
    requests: list[tuple[str, str, Any]] = []
    for i in range(240):
        user_id = users[i % len(users)]
        requests.append(
            [
                ("GET", f"/Users/{user_id}", None),  # prepared read (asyncpg pool)
                ("GET", '/Users?filter=title eq "t"', None),  # SQLAlchemy read
                (
                    "PATCH",
                    f"/Users/{user_id}",
                    patch_body({"op": "replace", "path": "displayName", "value": str(i)}),
                ),
                ("GET", f'/Users?filter=userName eq "load{i % 4}"', None),
            ][i % 4]
        )
    statuses: list[int] = []
    queue: asyncio.Queue[tuple[str, str, Any]] = asyncio.Queue()
    for request in requests:
        queue.put_nowait(request)

    async def worker() -> None:
        while not queue.empty():
            method, path, body = queue.get_nowait()
            response = await scim.request(method, path, json=body)
            statuses.append(response.status_code)
            if response.status_code == 503:
                assert response.headers["retry-after"].isdigit()

    terminated = 0

    async def killer() -> None:
        nonlocal terminated
        database = make_url(settings.database_url).database
        for _ in range(3):
            await asyncio.sleep(0.15)
            async with engine.connect() as connection:
                result = await connection.execute(
                    text(
                        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
                        " WHERE datname = :name AND pid <> pg_backend_pid()"
                    ),
                    {"name": database},
                )
                terminated += len(result.all())
                await connection.commit()

    await asyncio.gather(killer(), *(worker() for _ in range(8)))
    await engine.dispose()  # the test's own connections were terminated too
    assert terminated > 0
    assert set(statuses) <= {200, 503}, sorted(set(statuses))
    assert len(statuses) == len(requests)
    # Recovery, same process: a dropped pooled connection is replaced at its
    # first use; once each pool has gone round, everything succeeds.
    for _ in range(3):
        for method, path, body in requests[:40]:
            await scim.request(method, path, json=body)
    for method, path, body in requests[:40]:
        response = await scim.request(method, path, json=body)
        assert response.status_code == 200, (method, path, response.text)
