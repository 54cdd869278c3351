"""Benchmark of the authorization checks (issue 13, "Speed"; docs/benchmarks.md
"Authorization checks").

    .venv/bin/python -m bench.authz                  # the issue's sizes (seeded once, then kept)
    .venv/bin/python -m bench.authz --users 2000 --groups 50 --roles 20 --bindings 300 \\
        --database idstore_bench_authz_small --duration 2   # a smoke run

1. **Seed** (:mod:`bench.authz_seed`, data set in :mod:`bench.authz_data`):
   1,000,000 users, 10,000 groups nested three levels deep, 1,000 roles,
   100,000 bindings on PostgreSQL, by ``COPY``; kept between runs of the
   same sizes (``--reseed`` starts again).
2. **The mix**: ``--checks`` distinct checks drawn by category (allowed
   through a direct binding, through a group nested two or three levels up,
   through a group -> role mapping, on a resource, denied: another resource,
   a random permission, a user not active), each with the answer the oracle
   of :mod:`bench.authz_data` expects.
3. **In process**: :func:`identity_store.resolver.check_many` answers every
   check of the mix, compared with the oracle; then single checks one after
   the other and batches of 1,000 through the resolver directly (no HTTP),
   and ``EXPLAIN (ANALYZE, BUFFERS)`` of the statements of one check of each
   category (``--explain``).
4. **Over HTTP**: one ``idstore serve`` process (uvicorn, one worker) on
   127.0.0.1; ``POST /api/v1/authz/check`` by the generator of
   :mod:`bench.load`: first as fast as ``--concurrency`` connections go
   (capacity), then paced at ``--rate`` checks/s (the latency at the
   issue's rate, late requests counted from when they were due); server
   CPU, database CPU (the backends of the bench database only) and generator
   CPU per check. Then ``POST /api/v1/authz/check-batch`` with 1,000 checks,
   ``--batch-runs`` times one after the other; then the role change: ``PUT
   /api/v1/roles/{id}`` takes the probe role's permission away, the very next
   check (another connection) must be denied at the new revision; put back,
   it must be allowed again.
5. **Summary**: every figure next to its target, with the ratio.

Every process it starts is stopped in a ``finally`` block; every phase is
bounded in requests and time. ``--json PATH`` writes the figures.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from . import authz_data
from .authz_data import PROBE_PERMISSION, PROBE_ROLE, AuthzData, Check, Oracle, Sizes, mix
from .authz_seed import issue_tokens, prepare
from .httpclient import Connection, RequestTemplate
from .load import PhaseResult, PhaseSpec, Target, percentile, run_phase
from .machine import ROOT, git_state
from .procs import Server, cpu_seconds, free_port, running
from .run import BENCH_POOLS, Meter, server_argv

DEFAULT_SERVER = "postgresql+asyncpg://postgres@127.0.0.1:5432/postgres"
DEFAULT_DATABASE = "idstore_bench_authz"
API_PREFIX = "/api/v1"
JSON = "application/json"
BATCH = 1_000

TARGET_P99_MS = 5.0
TARGET_RATE = 1_000.0
TARGET_BATCH_MS = 100.0


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m bench.authz", description=(__doc__ or "").split("\n\n")[0]
    )
    sizes = Sizes()
    parser.add_argument("--users", type=int, default=sizes.users)
    parser.add_argument("--groups", type=int, default=sizes.groups)
    parser.add_argument("--roles", type=int, default=sizes.roles)
    parser.add_argument("--bindings", type=int, default=sizes.bindings)
    parser.add_argument("--server", default=DEFAULT_SERVER, help="PostgreSQL server URL")
    parser.add_argument(
        "--database", default=DEFAULT_DATABASE, help="bench database (named idstore_bench*)"
    )
    parser.add_argument("--reseed", action="store_true", help="seed even when the kept one fits")
    parser.add_argument("--checks", type=int, default=4_000, help="distinct checks of the mix")
    parser.add_argument("--duration", type=float, default=20.0, help="seconds per HTTP phase")
    parser.add_argument("--warmup", type=float, default=2.0, help="warm-up seconds per phase")
    parser.add_argument(
        "--concurrency", type=int, default=8, help="connections of the capacity phase"
    )
    parser.add_argument("--rate", type=float, default=TARGET_RATE, help="paced checks/s")
    parser.add_argument(
        "--paced-concurrency", type=int, default=8, help="connections of the paced phase"
    )
    parser.add_argument("--gen-procs", type=int, default=1, help="generator processes")
    parser.add_argument("--batch-runs", type=int, default=30)
    parser.add_argument("--role-changes", type=int, default=10, help="rounds of the role change")
    parser.add_argument("--inprocess", action=argparse.BooleanOptionalAction, default=True)
    parser.add_argument("--http", action=argparse.BooleanOptionalAction, default=True)
    parser.add_argument("--explain", action=argparse.BooleanOptionalAction, default=True)
    parser.add_argument("--json", type=Path, default=None, help="write the figures here")
    args = parser.parse_args(argv)
    args.sizes = Sizes(args.users, args.groups, args.roles, args.bindings)
    try:
        args.sizes.check()
    except ValueError as exc:
        parser.error(str(exc))
    args.duration = max(0.5, min(args.duration, 300.0))
    return args


def say(text: str = "") -> None:
    print(text, flush=True)


def _ms(values: list[float]) -> dict[str, float]:
    ordered = sorted(values)
    return {
        "n": len(ordered),
        "p50_ms": percentile(ordered, 0.50),
        "p95_ms": percentile(ordered, 0.95),
        "p99_ms": percentile(ordered, 0.99),
        "max_ms": ordered[-1] if ordered else float("nan"),
        "mean_ms": statistics.fmean(ordered) if ordered else float("nan"),
    }


def _fmt(figures: dict[str, float]) -> str:
    return (
        f"p50 {figures['p50_ms']:.2f} ms, p95 {figures['p95_ms']:.2f} ms, "
        f"p99 {figures['p99_ms']:.2f} ms, max {figures['max_ms']:.2f} ms (n={figures['n']})"
    )


@dataclass(slots=True)
class Results:
    """Everything measured, for the summary and ``--json``."""

    sizes: dict[str, int]
    seed_timings_s: dict[str, float] | None = None
    mix: dict[str, dict[str, int]] = field(default_factory=dict)
    inprocess: dict[str, Any] = field(default_factory=dict)
    explain: list[dict[str, Any]] = field(default_factory=list)
    http: dict[str, Any] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)


# In process -------------------------------------------------------------------


def _request(data: AuthzData, check: Check) -> Any:
    from identity_store.rbac import Resource
    from identity_store.resolver import CheckRequest

    resource = Resource(*check.resource) if check.resource is not None else None
    return CheckRequest(data.user_id(check.user), check.permission, resource)


async def _inprocess(
    url: str, data: AuthzData, checks: list[Check], results: Results, explain: bool
) -> None:
    from identity_store import resolver
    from identity_store.settings import Settings
    from identity_store.store import Store

    store = await Store.open(Settings(DATABASE_URL=url))
    try:
        requests = [_request(data, c) for c in checks]
        try:
            await resolver.check(store, requests[0])
        except NotImplementedError:
            results.notes.append("identity_store.resolver is not implemented on this commit")
            say("  identity_store.resolver.check is not implemented on this commit: skipped")
            return

        # Every check of the mix against the oracle, in batches.
        mismatches: list[dict[str, Any]] = []
        t0 = time.perf_counter()
        for start in range(0, len(requests), BATCH):
            decisions = await resolver.check_many(store, requests[start : start + BATCH])
            for check, decision in zip(checks[start : start + BATCH], decisions, strict=True):
                if decision.allowed != check.allowed:
                    mismatches.append(
                        {
                            "category": check.category,
                            "user": check.user,
                            "user_id": data.user_id(check.user),
                            "permission": check.permission,
                            "resource": check.resource,
                            "expected": check.allowed,
                            "reasons": [r.code for r in decision.reasons],
                        }
                    )
        verify_s = time.perf_counter() - t0
        results.inprocess["mismatches"] = len(mismatches)
        results.inprocess["mismatch_samples"] = mismatches[:5]
        say(
            f"  answers: {len(checks) - len(mismatches):,} of {len(checks):,} as the oracle "
            f"expects ({verify_s:.1f} s)"
        )
        for m in mismatches[:5]:
            say(f"    ! {m}")

        # Single checks, one after the other.
        singles: list[float] = []
        by_category: dict[str, list[float]] = {}
        for check, request in zip(checks, requests, strict=True):
            t = time.perf_counter()
            await resolver.check(store, request)
            elapsed = (time.perf_counter() - t) * 1000
            singles.append(elapsed)
            by_category.setdefault(check.category, []).append(elapsed)
        results.inprocess["single"] = _ms(singles)
        results.inprocess["single_by_category"] = {k: _ms(v) for k, v in by_category.items()}
        say(f"  check(), one after the other: {_fmt(results.inprocess['single'])}")
        for category, values in sorted(by_category.items()):
            say(f"    {category:<20} {_fmt(_ms(values))}")

        # Batches of 1,000.
        batches: list[float] = []
        for k in range(10):
            chunk = [requests[(k * 397 + j) % len(requests)] for j in range(BATCH)]
            t = time.perf_counter()
            await resolver.check_many(store, chunk)
            batches.append((time.perf_counter() - t) * 1000)
        results.inprocess["batch_1000"] = _ms(batches)
        say(f"  check_many() of {BATCH:,}: {_fmt(results.inprocess['batch_1000'])}")

        if explain:
            await _explain(url, store, data, checks, results)
    finally:
        await store.close()


async def _explain(
    url: str, store: Any, data: AuthzData, checks: list[Check], results: Results
) -> None:
    """``EXPLAIN (ANALYZE, BUFFERS)`` of what one check of each category sends."""
    import asyncpg  # type: ignore[import-untyped]

    from identity_store import resolver

    from .explain import captured_statements, explain_statements
    from .seed import _asyncpg_dsn

    conn = await asyncpg.connect(_asyncpg_dsn(url))
    try:
        seen: set[str] = set()
        for check in checks:
            if check.category in seen:
                continue
            seen.add(check.category)
            request = _request(data, check)
            await resolver.check(store, request)  # warm: pool, prepared statements
            with captured_statements() as captured:
                await resolver.check(store, request)
            title = f"check ({check.category}, expected {'allowed' if check.allowed else 'denied'})"
            for plan in await explain_statements(conn, title, list(captured)):
                results.explain.append(
                    {"title": plan.title, "sql": plan.sql, "params": plan.params, "plan": plan.plan}
                )
    finally:
        await conn.close()
    for item in results.explain:
        timing = [line for line in item["plan"].splitlines() if "Execution Time" in line]
        say(f"  {item['title']}: {timing[0].strip() if timing else '?'}")


# Over HTTP --------------------------------------------------------------------


class BenchDbMeter(Meter):
    """:class:`bench.run.Meter` with the database's CPU read from the backends
    connected to the bench database only (this machine's PostgreSQL serves
    other databases too)."""

    def __init__(self, server: Server, url: str) -> None:
        super().__init__(server, database=True)
        self.url = url
        self.span_s = 0.0

    def _db_cpu(self) -> dict[int, float]:  # type: ignore[override]
        return {pid: cpu_seconds([pid]) for pid in asyncio.run(_backends(self.url))}

    def start(self) -> None:
        super().start()
        self._t0 = time.monotonic()

    def stop(self) -> None:
        self.span_s = time.monotonic() - self._t0
        super().stop()


async def _backends(url: str) -> list[int]:
    import asyncpg

    from .seed import _asyncpg_dsn

    conn = await asyncpg.connect(_asyncpg_dsn(url))
    try:
        rows = await conn.fetch(
            "SELECT pid FROM pg_stat_activity"
            " WHERE datname = current_database() AND pid <> pg_backend_pid()"
        )
        return [int(r["pid"]) for r in rows]
    finally:
        await conn.close()


def _measured(spec: PhaseSpec, server: Server, url: str) -> tuple[PhaseResult, float]:
    """The phase's result, and the seconds its meters ran (warm-up included)."""
    meter = BenchDbMeter(server, url)
    result = meter.apply(run_phase(spec, meter.start, meter.stop))
    if not server.alive():
        result.worker_errors.append(f"the server exited during the phase: {server.log_tail(4)}")
        result.complete = False
    return result, meter.span_s


def _phase_figures(measured: tuple[PhaseResult, float]) -> dict[str, Any]:
    """Latencies of the measured window; CPU per check over every check sent
    (the meters run from the start of the warm-up), shares of one core over
    the same span."""
    result, span = measured
    sent = max(1, result.sent)
    span = max(span, 1e-9)
    return {
        "requests": result.requests,
        "sent": result.sent,
        "sent_per_s": result.sent / span,
        "errors": result.errors,
        "checks_per_s": result.rps,
        "p50_ms": result.p50_ms,
        "p95_ms": result.p95_ms,
        "p99_ms": result.p99_ms,
        "server_cpu_ms_per_check": 1000 * result.server_cpu_s / sent,
        "db_cpu_ms_per_check": 1000 * result.db_cpu_s / sent,
        "generator_cpu_ms_per_check": 1000 * result.generator_cpu_s / sent,
        "server_cpu_share": result.server_cpu_s / span,
        "db_cpu_share": result.db_cpu_s / span,
        "generator_cpu_share": result.generator_cpu_s / span,
        "wall_s": result.wall_s,
        "by_category": {
            label: {"p50_ms": op.p50_ms, "p95_ms": op.p95_ms, "p99_ms": op.p99_ms, "n": op.requests}
            for label, op in result.ops.items()
        },
        "statuses": dict(sum((Counter(op.statuses) for op in result.ops.values()), Counter[str]())),
        "error_samples": [s for op in result.ops.values() for s in op.error_samples][:3],
        "worker_errors": result.worker_errors,
        "info": result.info,
    }


def _show_phase(name: str, figures: dict[str, Any]) -> None:
    say(
        f"  {name}: {figures['checks_per_s']:,.0f} checks/s, p50 {figures['p50_ms']:.2f} ms,"
        f" p95 {figures['p95_ms']:.2f} ms, p99 {figures['p99_ms']:.2f} ms"
        f" ({figures['requests']:,} checks, {figures['errors']:,} errors)"
    )
    say(
        f"    CPU per check: server {figures['server_cpu_ms_per_check']:.3f} ms,"
        f" database {figures['db_cpu_ms_per_check']:.3f} ms,"
        f" generator {figures['generator_cpu_ms_per_check']:.3f} ms"
        f" (share of one core: server {100 * figures['server_cpu_share']:.0f} %,"
        f" database {100 * figures['db_cpu_share']:.0f} %,"
        f" generator {100 * figures['generator_cpu_share']:.0f} %)"
    )
    for label, op in sorted(figures["by_category"].items()):
        say(f"    {label:<28} p50 {op['p50_ms']:.2f} ms, p99 {op['p99_ms']:.2f} ms (n={op['n']:,})")
    for sample in figures["error_samples"]:
        say(f"    ! {sample}")
    for message in figures["worker_errors"]:
        say(f"    ! {message}")


class Api:
    """Sequential requests to the server (outside the load), each connection
    kept alive; bodies parsed as JSON."""

    def __init__(self, port: int, token: str) -> None:
        self.template = RequestTemplate("127.0.0.1", port, token, media_type=JSON)
        self.port = port

    def connection(self) -> Connection:
        return Connection("127.0.0.1", self.port, timeout=60.0)

    async def call(
        self, conn: Connection, method: str, path: str, body: Any = None
    ) -> tuple[int, Any, float]:
        raw = None if body is None else json.dumps(body).encode()
        data = self.template.build(method, API_PREFIX + path, raw)
        t = time.perf_counter()
        status, answer = await conn.send(data)
        elapsed = (time.perf_counter() - t) * 1000
        try:
            parsed = json.loads(answer) if answer else None
        except ValueError:
            parsed = answer.decode("utf-8", "replace")
        return status, parsed, elapsed


def _decisions(answer: Any) -> list[Any]:
    """The decisions of a batch answer (``results``, in the order of the checks)."""
    found = answer.get("results") if isinstance(answer, dict) else None
    return found if isinstance(found, list) else []


def _one_user_batch(data: AuthzData, oracle: Oracle) -> list[Check]:
    """1,000 permissions of one user (a user interface asking what to show):
    the first 1,000 of the vocabulary, the user of the first direct binding."""
    user = data.binding(0).subjects[0]
    return [
        Check("one user", user, perm, None, oracle.decide(user, perm, None))
        for perm in authz_data.ALL_PERMISSIONS[:BATCH]
    ]


async def _batches(
    port: int, token: str, data: AuthzData, checks: list[Check], runs: int, server: Server
) -> dict[str, Any]:
    """``runs`` batches of :data:`BATCH` checks (two more first, as warm-up),
    each a different slice of ``checks`` (cycled), one after the other."""
    api = Api(port, token)
    conn = api.connection()
    times: list[float] = []
    wrong = 0
    problems: list[str] = []
    cpu0 = server.cpu_seconds()
    try:
        for k in range(runs + 2):
            chunk = [checks[(k * 397 + j) % len(checks)] for j in range(BATCH)]
            status, answer, elapsed = await api.call(
                conn, "POST", "/authz/check-batch", {"checks": [c.body(data) for c in chunk]}
            )
            if status != 200:
                problems.append(f"{status}: {str(answer)[:300]}")
                if len(problems) >= 3:
                    break
                continue
            decisions = _decisions(answer)
            got = [bool(d.get("allowed")) for d in decisions if isinstance(d, dict)]
            if len(got) != BATCH:
                problems.append(f"{len(got)} decisions for {BATCH} checks")
            wrong += sum(g != c.allowed for g, c in zip(got, chunk, strict=False))
            if k >= 2:
                times.append(elapsed)
    finally:
        conn.close()
    cpu = server.cpu_seconds() - cpu0
    found: dict[str, Any] = _ms(times) if times else {"n": 0}
    found.update(
        {"wrong_answers": wrong, "problems": problems, "server_cpu_s": cpu, "batch": BATCH}
    )
    return found


async def _role_change(
    port: int, admin: str, checker: str, data: AuthzData, rounds: int
) -> dict[str, Any]:
    """The probe role loses and regains its only permission; the check right
    after each change, on another connection, must see it: the other answer,
    at a revision at least the change's (its ``RBAC-Revision`` header)."""
    import httpx

    base = f"http://127.0.0.1:{port}{API_PREFIX}"
    probe = authz_data.probe_check(data).body(data)
    log: list[dict[str, Any]] = []
    problems: list[str] = []
    ok = True
    async with (
        httpx.AsyncClient(base_url=base, headers={"Authorization": f"Bearer {admin}"}) as writer,
        httpx.AsyncClient(base_url=base, headers={"Authorization": f"Bearer {checker}"}) as reader,
    ):
        before = await reader.post("/authz/check", json=probe)
        if before.status_code != 200:
            return {"ok": False, "problems": [f"check: {before.status_code}: {before.text[:300]}"]}
        first = before.json()
        log.append({"step": "before", "allowed": first["allowed"], "revision": first["revision"]})
        if first["allowed"] is not True:
            ok = False
            problems.append("the probe user does not hold the probe permission before the change")
        for _ in range(rounds):
            for permissions, expected in (([], False), ([PROBE_PERMISSION], True)):
                role = {
                    "name": "Probe",
                    "description": "the role-change step of bench.authz",
                    "permissions": permissions,
                }
                t = time.perf_counter()
                put = await writer.put(f"/roles/{PROBE_ROLE}", json=role)
                put_ms = (time.perf_counter() - t) * 1000
                if put.status_code != 200:
                    problems.append(f"PUT /roles/{PROBE_ROLE}: {put.status_code}: {put.text[:300]}")
                    return {"ok": False, "problems": problems, "log": log}
                put_revision = int(put.headers.get("RBAC-Revision", "-1"))
                t = time.perf_counter()
                answer = await reader.post("/authz/check", json=probe)
                check_ms = (time.perf_counter() - t) * 1000
                decision = answer.json() if answer.status_code == 200 else {}
                seen, allowed = decision.get("revision"), decision.get("allowed")
                if allowed is not expected or seen is None or seen < put_revision:
                    ok = False
                    problems.append(
                        f"after PUT permissions={permissions} (revision {put_revision}): check"
                        f" {answer.status_code} allowed={allowed} at revision {seen}"
                    )
                log.append(
                    {
                        "permissions": permissions,
                        "put_revision": put_revision,
                        "check_revision": seen,
                        "allowed": allowed,
                        "put_ms": round(put_ms, 2),
                        "check_ms": round(check_ms, 2),
                    }
                )
    return {"ok": ok, "problems": problems, "log": log}


def _http(
    args: argparse.Namespace,
    url: str,
    data: AuthzData,
    oracle: Oracle,
    checks: list[Check],
    results: Results,
) -> None:
    checker, admin, scope = asyncio.run(issue_tokens(url))
    if scope != "authz:check":
        results.notes.append(f"the checks ran with an {scope} token (no authz:check scope yet)")
    logs = Path(tempfile.mkdtemp(prefix="idstore-bench-authz-"))
    port = free_port()
    env = {**BENCH_POOLS, **os.environ, "DATABASE_URL": url, "HOST": "127.0.0.1", "PORT": str(port)}
    env.setdefault("IDSTORE_LOG_LEVEL", "WARNING")
    server = Server(
        "idstore", server_argv(port, 1), port, "/healthz", logs / "idstore.log", env=env, cwd=ROOT
    )
    say(
        f"starting idstore serve --no-migrate on 127.0.0.1:{port}"
        f" (1 worker; log {logs / 'idstore.log'})"
    )
    with running(server):
        probe = Api(port, checker)

        async def first() -> tuple[int, Any, float]:
            conn = probe.connection()
            try:
                return await probe.call(conn, "POST", "/authz/check", checks[0].body(data))
            finally:
                conn.close()

        status, answer, _ = asyncio.run(first())
        if status != 200:
            message = f"POST {API_PREFIX}/authz/check answered {status}: {str(answer)[:300]}"
            results.notes.append(message)
            say(f"  ! {message}: no HTTP figures")
            return
        bodies = [[f"check: {c.category}", json.dumps(c.body(data))] for c in checks]
        target = Target("idstore", "127.0.0.1", port, checker, API_PREFIX, media_type=JSON)
        common = {
            "procs": args.gen_procs,
            "duration": args.duration,
            "warmup": args.warmup,
            "timeout": 30.0,
        }
        say("phases:")
        capacity = PhaseSpec(
            name="check (capacity)",
            scenario="authz_check",
            target=target,
            concurrency=args.concurrency,
            max_requests=int(20_000 * (args.duration + args.warmup)),
            params={"checks": bodies},
            **common,
        )
        figures = _phase_figures(_measured(capacity, server, url))
        results.http["capacity"] = {"concurrency": args.concurrency, **figures}
        _show_phase(f"as fast as {args.concurrency} connections go", figures)

        paced = PhaseSpec(
            name="check (paced)",
            scenario="authz_check_paced",
            target=target,
            concurrency=args.paced_concurrency,
            max_requests=int(args.rate * (args.duration + args.warmup) * 1.1) + 10,
            params={"checks": bodies, "rate": args.rate},
            **common,
        )
        figures = _phase_figures(_measured(paced, server, url))
        results.http["paced"] = {
            "rate": args.rate,
            "concurrency": args.paced_concurrency,
            **figures,
        }
        _show_phase(f"paced at {args.rate:,.0f} checks/s", figures)
        late = int(figures["info"].get("sent_late", 0))
        if late > 0.05 * max(1, figures["sent"]):
            message = (
                f"the server did not keep up with {args.rate:,.0f} checks/s: {late:,} of"
                f" {figures['sent']:,} checks sent late ({figures['sent_per_s']:,.0f}/s sent);"
                " the latencies count from when each was due"
            )
            results.notes.append(message)
            say(f"    ! {message}")

        say(f"batches of {BATCH:,} (POST {API_PREFIX}/authz/check-batch), {args.batch_runs} runs:")
        one_user = _one_user_batch(data, oracle)
        for key, title, source in (
            ("batch", "the mix", checks),
            ("batch_one_user", "1,000 permissions of one user", one_user),
        ):
            batch = asyncio.run(_batches(port, checker, data, source, args.batch_runs, server))
            results.http[key] = batch
            if batch.get("n"):
                say(
                    f"  {title}: {_fmt(batch)}; {batch['wrong_answers']} answers unlike the"
                    f" oracle; server CPU {1000 * batch['server_cpu_s'] / (batch['n'] + 2):.1f} ms"
                    " per batch"
                )
            for problem in batch["problems"]:
                say(f"  ! {problem}")

        say(f"role change (PUT {API_PREFIX}/roles/{PROBE_ROLE}), {args.role_changes} rounds:")
        change = asyncio.run(_role_change(port, admin, checker, data, args.role_changes))
        results.http["role_change"] = change
        for entry in change.get("log", [])[:5]:
            say(f"  {entry}")
        if len(change.get("log", [])) > 5:
            say(f"  ... {len(change['log']) - 5} more")
        for problem in change.get("problems", []):
            say(f"  ! {problem}")
        say(f"  visible to the very next check every time: {'yes' if change.get('ok') else 'NO'}")


# Summary ------------------------------------------------------------------------


def _ratio(value: float, target: float, lower_is_better: bool = True) -> str:
    if value != value:  # NaN
        return "not measured"
    ratio = value / target
    met = ratio < 1 if lower_is_better else ratio >= 1
    return f"{ratio:.2f} of the target ({'met' if met else 'MISSED'})"


def summary(results: Results) -> None:
    say("\nsummary against issue 13's targets:")
    http = results.http
    paced, capacity, batch = http.get("paced"), http.get("capacity"), http.get("batch")
    if paced and paced["requests"]:
        say(
            f"  single check p99 at {paced['rate']:,.0f} checks/s: {paced['p99_ms']:.2f} ms"
            f" (target < {TARGET_P99_MS} ms): {_ratio(paced['p99_ms'], TARGET_P99_MS)}"
        )
    if paced and not paced["requests"]:
        say(
            f"  single check p99 at {paced['rate']:,.0f} checks/s: not reached"
            f" ({paced['sent_per_s']:,.0f} checks/s sent): MISSED"
        )
    if capacity:
        say(
            f"  checks/s of one server process: {capacity['checks_per_s']:,.0f}"
            f" (target >= {TARGET_RATE:,.0f}):"
            f" {_ratio(capacity['checks_per_s'], TARGET_RATE, lower_is_better=False)};"
            f" p99 at that load {capacity['p99_ms']:.2f} ms"
        )
    if batch and batch.get("n"):
        say(
            f"  batch of {BATCH:,} p99: {batch['p99_ms']:.1f} ms"
            f" (target < {TARGET_BATCH_MS:.0f} ms):"
            f" {_ratio(batch['p99_ms'], TARGET_BATCH_MS)}; p50 {batch['p50_ms']:.1f} ms"
        )
    one = http.get("batch_one_user")
    if one and one.get("n"):
        say(
            f"  batch of {BATCH:,} permissions of one user p99: {one['p99_ms']:.1f} ms:"
            f" {_ratio(one['p99_ms'], TARGET_BATCH_MS)}; p50 {one['p50_ms']:.1f} ms"
        )
    change = http.get("role_change")
    if change:
        say(f"  role change visible to the very next check: {'yes' if change.get('ok') else 'NO'}")
    inproc = results.inprocess
    if "single" in inproc:
        say(
            f"  in process: check() p99 {inproc['single']['p99_ms']:.2f} ms,"
            f" check_many(1,000) p99 {inproc['batch_1000']['p99_ms']:.1f} ms;"
            f" {inproc['mismatches']} answers unlike the oracle"
        )
    for note in results.notes:
        say(f"  note: {note}")


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    state = git_state()
    dirty = f" (changed since: {', '.join(state['changed'])})" if state["changed"] else ""
    load = ", ".join(f"{x:.2f}" for x in os.getloadavg())
    say(f"commit {state['head']}{dirty}, {os.cpu_count()} CPUs, load average {load}")
    results = Results(sizes=args.sizes.to_json())
    url, timings = asyncio.run(prepare(args.server, args.database, args.sizes, args.reseed, say))
    results.seed_timings_s = timings
    if timings:
        say("  seeded: " + ", ".join(f"{k} {v:.1f}" for k, v in timings.items()))
    t0 = time.perf_counter()
    data = AuthzData(args.sizes)
    oracle = Oracle(data)
    checks = mix(oracle, args.checks)
    counted = Counter((c.category, c.allowed) for c in checks)
    for category, _ in authz_data.MIX:
        results.mix[category] = {
            "allowed": counted[(category, True)],
            "denied": counted[(category, False)],
        }
    say(
        f"mix of {len(checks):,} checks ({time.perf_counter() - t0:.1f} s): "
        + "; ".join(f"{k} {v['allowed']}/{v['denied']}" for k, v in results.mix.items())
        + " (allowed/denied by the oracle)"
    )
    status = 0
    try:
        if args.inprocess:
            say("in process (identity_store.resolver, no HTTP):")
            asyncio.run(_inprocess(url, data, checks, results, args.explain))
        if args.http:
            _http(args, url, data, oracle, checks, results)
    finally:
        summary(results)
        if args.json:
            args.json.write_text(json.dumps(_plain(results), indent=2, default=str))
            say(f"figures written to {args.json}")
    if (
        results.inprocess.get("mismatches")
        or not results.http.get("role_change", {"ok": True})["ok"]
    ):
        status = 1
    return status


def _plain(results: Results) -> dict[str, Any]:
    return {
        "sizes": results.sizes,
        "seed_timings_s": results.seed_timings_s,
        "mix": results.mix,
        "inprocess": results.inprocess,
        "explain": results.explain,
        "http": results.http,
        "notes": results.notes,
    }


if __name__ == "__main__":
    sys.exit(main())
