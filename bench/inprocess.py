"""CPU per request of the real application, without an HTTP server.

``python -m bench.inprocess --kind get --requests 3000`` builds the
application with ``create_app`` (lifespan included), against a store a
``bench.run`` left behind (``idstore_bench`` by default), and calls it as an
ASGI application one request at a time: no network, no generator, no
uvicorn, so ``time.process_time`` around the loop is the application's own
CPU (plus the asyncpg client's). The CPU of the PostgreSQL backends
serving the application's connections (read from ``/proc``: a local
server) is reported per request too, so that other databases' work on a
shared server does not count. ``--breakdown`` also times the store's and
the handlers' main steps by wrapping them (a few microseconds each);
``--profile FILE`` writes cProfile's statistics of the measured requests
(``python -m pstats FILE``), slower but whole. ``--instructions`` runs the
same again under valgrind's callgrind and prints the instructions per
request of the measured loop alone (:func:`instructions`): slow (about
35 s for 200 requests) but steady to a few tenths of a percent, where the
timings move by a quarter between minutes.

This is how the per-optimisation figures of docs/benchmarks.md were taken.
The machine drifts by ±25 % between minutes: compare two versions side by
side, alternating, not with a figure from another hour.

Kinds: ``get`` (``GET /Users/{id}``), ``filter`` (``userName eq``), ``post``
(Entra's ``POST /Users``), ``patch`` (Entra's three replaces), ``disable``
(Entra's ``active`` "False", a distinct user each, active again after the
run), ``delete`` (``DELETE /Users/{id}`` of users created before;
``delete_members``: of users put in groups of 100 before, deleted in order,
as the Entra mix deletes them), ``members``
(``PATCH /Groups/{id}`` adding 10 members to one of 50 new groups),
``group_member`` (``PATCH /Groups/{id}`` of one new group adding a member and
removing the one added before, as the ``group_member`` phases do: run it
with ``--concurrency 16`` for their batches), ``groups`` (Entra's
``displayName eq`` group look-up without members). ``--concurrency N``: N
clients at once, each sending every N-th request.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import cProfile
import functools
import inspect
import json
import os
import re
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from typing import Any
from urllib.parse import urlencode

import asyncpg  # type: ignore[import-untyped]
from sqlalchemy.engine import make_url

from identity_store import tokens
from identity_store.database import create_engine, create_session_factory
from identity_store.settings import Settings
from scim_server.app import create_app

from . import payloads
from .seed import BENCH_DB_PREFIX

DEFAULT_URL = f"postgresql+asyncpg://postgres@127.0.0.1:5432/{BENCH_DB_PREFIX}"
Request = tuple[str, str, bytes, bytes]


def _scope(token: str, method: str, path: str, query: bytes, body: bytes) -> dict[str, Any]:
    headers = [(b"host", b"bench"), (b"authorization", f"Bearer {token}".encode())]
    if body:
        headers += [
            (b"content-type", b"application/scim+json"),
            (b"content-length", str(len(body)).encode()),
        ]
    return {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": method,
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "query_string": query,
        "root_path": "",
        "headers": headers,
        "client": ("127.0.0.1", 1),
        "server": ("127.0.0.1", 80),
        "state": {},
    }


async def _call(app: Any, token: str, request: Request) -> tuple[int, bytes]:
    method, path, query, body = request
    sent = False
    status = 0
    chunks: list[bytes] = []

    async def receive() -> dict[str, Any]:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        await asyncio.Event().wait()  # the client never disconnects
        raise AssertionError("unreachable")

    async def send(message: dict[str, Any]) -> None:
        nonlocal status
        if message["type"] == "http.response.start":
            status = message["status"]
        elif message["type"] == "http.response.body":
            chunks.append(message.get("body", b""))

    await app(_scope(token, method, path, query, body), receive, send)
    return status, b"".join(chunks)


class Breakdown:
    """CPU time of wrapped functions, per request."""

    def __init__(self) -> None:
        self.cpu: collections.defaultdict[str, float] = collections.defaultdict(float)
        self.calls: collections.Counter[str] = collections.Counter()

    def wrap(self, module: Any, name: str) -> None:
        function = getattr(module, name)
        label = f"{module.__name__}.{name}"
        if inspect.iscoroutinefunction(function):

            @functools.wraps(function)
            async def timed_async(*args: Any, **kwargs: Any) -> Any:
                start = time.process_time()
                try:
                    return await function(*args, **kwargs)
                finally:
                    self.cpu[label] += time.process_time() - start
                    self.calls[label] += 1

            setattr(module, name, timed_async)
        else:

            @functools.wraps(function)
            def timed(*args: Any, **kwargs: Any) -> Any:
                start = time.process_time()
                try:
                    return function(*args, **kwargs)
                finally:
                    self.cpu[label] += time.process_time() - start
                    self.calls[label] += 1

            setattr(module, name, timed)

    def install(self) -> None:
        from identity_store import group_changes, read_models, user_changes
        from scim_server import mapping, user_patch, users_api

        steps: list[tuple[Any, list[str]]] = [
            (users_api, ["validate_user", "dump"]),
            (mapping, ["user_document", "group_document", "user_input"]),
            (user_changes, ["insert_user", "write_replacement", "load_user", "_insert"]),
            (group_changes, ["write_changes", "resolve_members", "load_group"]),
            (read_models, ["user_records"]),
            (user_patch, ["apply_simple"]),
        ]
        for module, names in steps:
            for name in names:
                if hasattr(module, name):
                    self.wrap(module, name)

    def report(self, requests: int, say: Callable[[str], None]) -> None:
        for label, seconds in sorted(self.cpu.items(), key=lambda item: -item[1]):
            say(
                f"  {1000 * seconds / requests:7.3f} ms CPU/request  {label}"
                f" (x{self.calls[label] / requests:.1f})"
            )


def _dsn(url: str) -> str:
    return make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)


async def _sample(url: str) -> tuple[list[str], list[str], list[str]]:
    connection = await asyncpg.connect(_dsn(url))
    try:
        rows = await connection.fetch(
            "SELECT id, user_name FROM users WHERE deleted_at IS NULL"
            " AND user_name LIKE 'user%' ORDER BY random() LIMIT 5000"
        )
        groups = await connection.fetch("SELECT display_name FROM groups ORDER BY id LIMIT 200")
    finally:
        await connection.close()
    return [r["id"] for r in rows], [r["user_name"] for r in rows], [g[0] for g in groups]


async def _token(settings: Settings) -> str:
    engine = create_engine(settings, null_pool=True)
    try:
        async with create_session_factory(engine)() as session:
            name = f"inprocess-{uuid.uuid4().hex[:8]}"
            _, secret = await tokens.create_token(session, name, ["scim:write"])
            await session.commit()
            return secret
    finally:
        await engine.dispose()


def _requests(
    kind: str, count: int, ids: list[str], names: list[str], groups: list[str]
) -> list[Request]:
    tag = uuid.uuid4().hex[:8]
    if kind == "get":
        return [("GET", f"/scim/v2/Users/{ids[i % len(ids)]}", b"", b"") for i in range(count)]
    if kind == "filter":
        return [
            (
                "GET",
                "/scim/v2/Users",
                urlencode({"filter": f'userName eq "{names[i % len(names)]}"'}).encode(),
                b"",
            )
            for i in range(count)
        ]
    if kind == "groups":
        return [
            (
                "GET",
                "/scim/v2/Groups",
                urlencode(
                    {
                        "filter": f'displayName eq "{groups[i % len(groups)]}"',
                        "excludedAttributes": "members",
                    }
                ).encode(),
                b"",
            )
            for i in range(count)
        ]
    if kind == "post":
        return [
            (
                "POST",
                "/scim/v2/Users",
                b"",
                payloads.dumps(
                    payloads.create_user(
                        f"{tag}-{i}@bench.example.com", str(uuid.uuid4()), f"G{i}", "F"
                    )
                ),
            )
            for i in range(count)
        ]
    if kind == "patch":
        return [
            (
                "PATCH",
                f"/scim/v2/Users/{ids[i % len(ids)]}",
                b"",
                payloads.dumps(payloads.replace_three(f"P{i} {tag}", f"F{tag}", f"D{i % 50}")),
            )
            for i in range(count)
        ]
    if kind in ("disable", "enable"):  # Entra's disable: one distinct user each
        body = payloads.dumps(payloads.set_active(kind == "enable"))
        return [("PATCH", f"/scim/v2/Users/{ids[i % len(ids)]}", b"", body) for i in range(count)]
    raise SystemExit(f"unknown kind {kind!r}")


def _cpu_seconds(pid: int) -> float:
    try:
        with open(f"/proc/{pid}/stat") as stat:
            fields = stat.read().rsplit(")", 1)[1].split()
    except FileNotFoundError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def _backends(monitor: asyncpg.Connection) -> dict[int, float]:
    """CPU seconds of the PostgreSQL backends connected to the store's
    database, but the monitor's own (a local server: /proc)."""
    rows = await monitor.fetch(
        "SELECT pid FROM pg_stat_activity"
        " WHERE datname = current_database() AND pid <> pg_backend_pid()"
    )
    return {r["pid"]: _cpu_seconds(r["pid"]) for r in rows}


async def run(args: argparse.Namespace, say: Callable[[str], None] = print) -> None:
    settings = Settings(DATABASE_URL=args.url)
    ids, names, group_names = await _sample(args.url)
    token = await _token(settings)
    app = create_app(settings)
    async with app.router.lifespan_context(app):
        total = args.requests + args.warmup
        if args.kind == "members":
            groups = []
            for g in range(50):
                body = payloads.dumps(
                    payloads.create_group(f"inprocess-{uuid.uuid4().hex}-{g}", "x")
                )
                status, answer = await _call(app, token, ("POST", "/scim/v2/Groups", b"", body))
                assert status == 201, answer
                groups.append(json.loads(answer)["id"])
            requests: list[Request] = [
                (
                    "PATCH",
                    f"/scim/v2/Groups/{groups[i % 50]}",
                    b"",
                    payloads.dumps(
                        payloads.add_members(ids[(i * 10) % 4990 : (i * 10) % 4990 + 10])
                    ),
                )
                for i in range(total)
            ]
        elif args.kind == "group_member":  # one group, each client its own pair of users
            body = payloads.dumps(payloads.create_group(f"inprocess-{uuid.uuid4().hex}", "x"))
            status, answer = await _call(app, token, ("POST", "/scim/v2/Groups", b"", body))
            assert status == 201, answer
            group = json.loads(answer)["id"]
            clients = args.concurrency
            requests = []
            for i in range(total):
                pair = ids[2 * (i % clients)], ids[2 * (i % clients) + 1]
                turn = (i // clients) % 2
                body = payloads.dumps(payloads.add_and_remove_member(pair[turn], pair[1 - turn]))
                requests.append(("PATCH", f"/scim/v2/Groups/{group}", b"", body))
        elif args.kind in ("delete", "delete_members"):  # users created first, not measured
            requests = []
            for request in _requests("post", total, ids, names, group_names):
                status, answer = await _call(app, token, request)
                assert status == 201, answer
                requests.append(("DELETE", f"/scim/v2/Users/{json.loads(answer)['id']}", b"", b""))
            if args.kind == "delete_members":  # in groups of 100, as the Entra mix leaves them
                for start in range(0, total, 100):
                    name = f"inprocess-{uuid.uuid4().hex}"
                    body = payloads.dumps(payloads.create_group(name, "x"))
                    status, answer = await _call(app, token, ("POST", "/scim/v2/Groups", b"", body))
                    assert status == 201, answer
                    group = json.loads(answer)["id"]
                    members = [r[1].rsplit("/", 1)[1] for r in requests[start : start + 100]]
                    for k in range(0, len(members), 10):
                        body = payloads.dumps(payloads.add_members(members[k : k + 10]))
                        patch = ("PATCH", f"/scim/v2/Groups/{group}", b"", body)
                        status, answer = await _call(app, token, patch)
                        assert status < 300, answer
        else:
            requests = _requests(args.kind, total, ids, names, group_names)
        for request in requests[: args.warmup]:
            status, answer = await _call(app, token, request)
            assert status < 300, (status, answer[:300])
        breakdown = Breakdown()
        if args.breakdown:
            breakdown.install()
        monitor = await asyncpg.connect(_dsn(args.url))
        try:
            backends = await _backends(monitor)
            measured = requests[args.warmup :]

            latencies: list[tuple[float, float]] = []  # (start, seconds), per request

            async def client(mine: list[Request]) -> None:
                for request in mine:
                    start = time.perf_counter()
                    status, answer = await _call(app, token, request)
                    latencies.append((start, time.perf_counter() - start))
                    if status >= 300:
                        raise SystemExit(
                            f"{request[0]} {request[1]} answered {status}: {answer[:300]!r}"
                        )

            profiler = cProfile.Profile() if args.profile else None
            cpu, wall = time.process_time(), time.perf_counter()
            if profiler is not None:
                profiler.enable()
            if args.under_callgrind:
                _callgrind("on")
            n_clients = args.concurrency
            await asyncio.gather(*(client(measured[c::n_clients]) for c in range(n_clients)))
            if args.under_callgrind:
                _callgrind("off")
            if profiler is not None:
                profiler.disable()
                profiler.dump_stats(args.profile)
            cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
            after = await _backends(monitor)
        finally:
            await monitor.close()
        if args.kind == "disable":  # the users active again for the next run
            for request in _requests("enable", total, ids, names, group_names):
                await _call(app, token, request)
    n = args.requests
    per_cpu, per_wall = 1000 * cpu / n, 1000 * wall / n
    db = sum(seconds - backends.get(pid, 0.0) for pid, seconds in after.items())
    say(
        f"{args.kind}: {n} requests ({args.concurrency} at once), CPU {per_cpu:.3f} ms/request,"
        f" wall {per_wall:.3f}"
        f" ms/request, database backends' CPU {1000 * db / n:.3f} ms/request"
    )
    say(_latency_line(latencies))
    breakdown.report(n, say)


def _latency_line(latencies: list[tuple[float, float]]) -> str:
    """Each request's time from its call to its answer: p50, p99 and the
    slowest, over all and over the first tenth by start (new connections,
    statements prepared and planned for the first time)."""

    def q(values: list[float], p: float) -> float:
        ordered = sorted(values)
        return 1000 * ordered[min(len(ordered) - 1, int(p * len(ordered)))]

    by_start = sorted(latencies)
    first = [s for _, s in by_start[: max(1, len(by_start) // 10)]]
    rest = [s for _, s in by_start[len(first) :]] or first
    every = [s for _, s in by_start]
    return (
        f"latency ms: p50 {q(every, 0.5):.1f}, p99 {q(every, 0.99):.1f}, max {q(every, 1):.1f};"
        f" first tenth p99 {q(first, 0.99):.1f}, the rest p99 {q(rest, 0.99):.1f}"
    )


def _callgrind(state: str) -> None:
    """Switch callgrind's counting on or off in this process (run under
    ``valgrind --tool=callgrind --instr-atstart=no``)."""
    subprocess.run(
        ["callgrind_control", "--instr", state, str(os.getpid())],
        check=True,
        capture_output=True,
    )


_COLLECTED = re.compile(rb"Collected : (\d+)")


def instructions(argv: list[str], requests: int, say: Callable[[str], None] = print) -> int:
    """Run this benchmark again under callgrind, counting the instructions
    of the measured requests only (the imports, the app's startup and the
    warm-up run uninstrumented), and report them per request.

    An instruction count is the same for the same code, inputs and
    interpreter whatever else the machine does (docs/benchmarks.md, "A
    steady measure"): two versions compared this way differ by their code,
    not by the minute they ran in. It counts this process only (the
    application and the asyncpg client), not PostgreSQL's backends."""
    with tempfile.TemporaryDirectory() as directory:
        command = [
            "valgrind",
            "--tool=callgrind",
            "--instr-atstart=no",
            f"--callgrind-out-file={directory}/callgrind.out",
            sys.executable,
            "-m",
            "bench.inprocess",
            *argv,
            "--under-callgrind",
        ]
        done = subprocess.run(command, capture_output=True, check=False)
    found = _COLLECTED.search(done.stderr)
    if done.returncode != 0 or found is None:
        say(done.stdout.decode(errors="replace") + done.stderr.decode(errors="replace")[-2000:])
        raise SystemExit("the run under callgrind failed")
    total = int(found.group(1))
    say(f"instructions: {total / requests:,.0f} per request ({total:,} over {requests} requests)")
    return total


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--url", default=DEFAULT_URL, help="a store seeded by bench.run")
    parser.add_argument(
        "--kind",
        choices=(
            "get",
            "filter",
            "groups",
            "post",
            "patch",
            "disable",
            "delete",
            "delete_members",
            "members",
            "group_member",
        ),
        default="get",
    )
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument("--warmup", type=int, default=50)
    parser.add_argument("--concurrency", type=int, default=1, help="clients at once")
    parser.add_argument("--breakdown", action="store_true", help="time the main steps")
    parser.add_argument(
        "--profile", default=None, help="write cProfile statistics of the measured loop here"
    )
    parser.add_argument(
        "--instructions",
        action="store_true",
        help="count the instructions per request under valgrind's callgrind (slow, steady)",
    )
    parser.add_argument("--under-callgrind", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.instructions:
        forwarded = [a for a in (sys.argv[1:] if argv is None else argv) if a != "--instructions"]
        instructions(forwarded, args.requests)
        return 0
    try:
        import uvloop

        uvloop.install()
    except ImportError:
        pass
    asyncio.run(run(args))
    return 0


if __name__ == "__main__":
    sys.exit(main())
