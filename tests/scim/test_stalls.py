"""No request stalls the server (issue 10): the size of what one request may
ask is bounded (operations per PATCH, values per multi-valued attribute), and
while the heaviest PATCH allowed runs a real server keeps answering
``/healthz``: typically within 100 ms, always within 1 s (see the test)."""

from __future__ import annotations

import asyncio
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from identity_store.settings import Settings

from .helpers import assert_error, create_user, patch_body, user_body

VALUES: dict[str, Any] = {
    "emails": lambda i: {"value": f"e{i}@example.com", "type": "work"},
    "phoneNumbers": lambda i: {"value": f"+1555{i:04d}", "type": "work"},
    "ims": lambda i: {"value": f"im{i}", "type": "aim"},
    "photos": lambda i: {"value": f"https://photos.example.com/{i}.jpg"},
    "roles": lambda i: {"value": f"r{i}"},
    "entitlements": lambda i: {"value": f"e{i}"},
    "x509Certificates": lambda i: {"value": "TUlJRERqQ0NBZmFnQXdJQkFnSUVGTW9HSm9kUEg="},
    "addresses": lambda i: {"streetAddress": f"{i} Main St", "type": "work"},
}
"""A value of each of a user's multi-valued attributes."""


def _full_user(user_name: str) -> dict[str, Any]:
    """A user holding the most values allowed (100) in each multi-valued attribute."""
    return user_body(
        user_name, **{name: [make(i) for i in range(100)] for name, make in VALUES.items()}
    )


def _heaviest_patch() -> dict[str, Any]:
    """The most operations allowed (100): the most values allowed for each
    multi-valued attribute (100, once per attribute and request), then
    operations through value filters, which carry no values but make
    scim2-models compare each attribute they touch before and after."""
    replaces = [
        {"op": "replace", "path": name, "value": [make(i + 1000) for i in range(100)]}
        for name, make in VALUES.items()
    ]
    filtered = [
        {
            "op": "replace",
            "path": f'emails[value eq "e{1000 + i}@example.com"].display',
            "value": "x",
        }
        for i in range(100 - len(replaces))
    ]
    return patch_body(*replaces, *filtered)


async def test_too_many_operations_or_values_are_refused_before_any_work(
    scim: httpx.AsyncClient,
) -> None:
    """101 operations is 413; 101 values of one attribute is 400, in a
    create, a replace, a PATCH operation or a user that would end up with them."""
    user = await create_user(scim, "limits")
    url = f"/Users/{user['id']}"
    too_many_ops = patch_body(
        *({"op": "replace", "path": "displayName", "value": str(i)} for i in range(101))
    )
    assert_error(await scim.patch(url, json=too_many_ops), 413, "tooLarge")
    emails = [{"value": f"x{i}@example.com"} for i in range(101)]
    assert_error(
        await scim.post("/Users", json=user_body("big", emails=emails)), 400, "invalidValue"
    )
    assert_error(await scim.put(url, json=user_body("limits", emails=emails)), 400, "invalidValue")
    one_op = patch_body({"op": "add", "path": "emails", "value": emails})
    assert_error(await scim.patch(url, json=one_op), 400, "invalidValue")
    two_ops = patch_body(
        {"op": "add", "path": "emails", "value": emails[:60]},
        {"op": "add", "path": "emails", "value": emails[60:]},
    )
    assert_error(await scim.patch(url, json=two_ops), 400, "invalidValue")
    stored = (await scim.get(url)).json()
    assert "emails" not in stored
    assert stored["meta"]["version"] == user["meta"]["version"]
    assert (await scim.get("/Users")).json()["totalResults"] == 1


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@pytest.fixture
def server(settings: Settings, engine: Any) -> Iterator[str]:
    """A real uvicorn process on loopback serving this backend's database."""
    port = _free_port()
    env = {**os.environ, "DATABASE_URL": settings.database_url, "IDSTORE_LOG_LEVEL": "warning"}
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "uvicorn",
            "--factory",
            "idstore.asgi:app_factory",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--log-level",
            "warning",
        ],
        env=env,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                if httpx.get(f"{base}/healthz", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert process.poll() is None, "the server exited"
            assert time.monotonic() < deadline, "the server did not start in 30 s"
            time.sleep(0.1)
        yield base
    finally:
        process.terminate()
        process.wait(timeout=10)


async def test_healthz_answers_within_100_ms_during_the_heaviest_patch(
    server: str, tokens_by_scope: dict[str, str]
) -> None:
    headers = {
        "Authorization": f"Bearer {tokens_by_scope['scim:write']}",
        "Content-Type": "application/scim+json",
    }
    async with httpx.AsyncClient(base_url=server, timeout=60) as client:
        created = await client.post("/scim/v2/Users", json=_full_user("heavy"), headers=headers)
        assert created.status_code == 201, created.text
        url = f"/scim/v2/Users/{created.json()['id']}"
        body = _heaviest_patch()

        async def heavy() -> tuple[httpx.Response, float]:
            started = time.perf_counter()
            response = await client.patch(url, json=body, headers=headers)
            return response, time.perf_counter() - started

        patching = asyncio.create_task(heavy())
        latencies: list[float] = []
        await asyncio.sleep(0.05)  # the PATCH is being served
        while not patching.done():
            started = time.perf_counter()
            health = await client.get("/healthz")
            latencies.append(time.perf_counter() - started)
            assert health.status_code == 200
            await asyncio.sleep(0.02)
        response, duration = await patching
    assert response.status_code == 200, response.text
    assert len(response.json()["emails"]) == 100
    # The check means something only if /healthz was asked while the PATCH ran.
    assert duration > 0.3, duration
    assert len(latencies) >= 10, (duration, latencies)
    # The PATCH's CPU work runs beside the event loop (worker threads), so
    # the loop answers: typically within 100 ms. The threads still share the
    # GIL, and this machine's cores with other processes, so some answers
    # wait longer (measured: up to 0.36 s on a 2-core machine at load 5,
    # when the whole suite runs), never for the PATCH to end (before: the
    # loop was blocked for the whole PATCH, minutes for 10,000 operations).
    ordered = sorted(latencies)
    assert ordered[len(ordered) // 2] < 0.1, (duration, ordered[-10:])
    assert ordered[-1] < 1.0, (duration, ordered[-10:])
