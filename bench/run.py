"""The benchmark, end to end, in one command (issue 5; docs/benchmarks.md)::

    python -m bench.run --users 10000 [--db postgresql|sqlite] [--workers 1]
        [--concurrency 16] [--duration 10] [--phases get_user,...] [--no-peer] [--quick]

It recreates and seeds the store, starts ``idstore serve --no-migrate`` as
production would, starts the bare-Starlette ceiling with the same uvicorn
settings, runs the phases with the multi-process generator of
:mod:`bench.load`, runs the Entra-like mixed load against the server and
against the ``scim2-server`` peer, prints the tables, and writes
``bench/results/<timestamp>.json``. Every process it starts is stopped in a
``finally`` block; every phase is bounded in requests and in time.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Sequence
from contextlib import ExitStack
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sqlalchemy.engine import make_url

from . import report, summary
from .dataset import Dataset
from .load import PhaseResult, PhaseSpec, Target, run_phase
from .machine import ROOT, machine_info
from .peer import PEER_PREFIX, ensure_peer, peer_server, peer_version
from .phases import (
    ALL_PHASES,
    DEEP_PAGE,
    PAGE,
    SCIM_PREFIX,
    WRK_SCENARIOS,
    deep_cursor,
    fixed_specs,
    flow_spec,
    http_get,
)
from .procs import Server, cpu_seconds, free_port, postgres_pids, running
from .report import say
from .seed import SeedResult, _asyncpg_dsn, seed
from .summary import Run, print_report
from .wrk import run_wrk_phase, wrk_executable

RESULTS = Path(__file__).resolve().parent / "results"
DEFAULT_PG_URL = "postgresql+asyncpg://postgres@127.0.0.1:5432/idstore_bench"
MAX_DURATION = 300.0


# Measuring one phase ----------------------------------------------------------


class Meter:
    """Server CPU, database CPU and server peak RSS around one phase."""

    def __init__(self, server: Server, database: bool) -> None:
        self.server = server
        self.database = database
        self._cpu0 = 0.0
        self._db0: dict[int, float] = {}
        self.server_cpu = 0.0
        self.db_cpu = 0.0
        self.peak_mb = 0.0

    @staticmethod
    def _db_cpu() -> dict[int, float]:
        return {pid: cpu_seconds([pid]) for pid in postgres_pids()}

    def start(self) -> None:
        self.server.reset_peak()
        self._cpu0 = self.server.cpu_seconds()
        self._db0 = self._db_cpu() if self.database else {}

    def stop(self) -> None:
        self.server_cpu = self.server.cpu_seconds() - self._cpu0
        self.peak_mb = self.server.peak_rss_mb()
        if self.database:
            now = self._db_cpu()
            self.db_cpu = sum(v - self._db0.get(pid, 0.0) for pid, v in now.items())

    def apply(self, result: PhaseResult) -> PhaseResult:
        result.server_cpu_s = self.server_cpu
        result.db_cpu_s = self.db_cpu
        result.server_peak_rss_mb = self.peak_mb
        return result


def measured(
    spec: PhaseSpec,
    server: Server,
    database: bool,
    run: Run | None = None,
    wrk: bool = False,
) -> PhaseResult:
    """Run ``spec`` with ``server``'s CPU and memory measured over it.

    A server found dead before the phase (this machine is shared: something
    outside the run may stop it) is started again, and the run says so; a
    server that dies during the phase makes the phase incomplete, its CPU
    figure unknown."""
    if not server.alive():
        message = (
            f"{server.name} had exited before phase {spec.name} and was restarted; "
            f"its last log lines: {' / '.join(server.log_tail(4).splitlines())}"
        )
        say(f"  ! {message}")
        if run is not None:
            run.notes.append(message)
        server.restart()
    meter = Meter(server, database)
    runner = run_wrk_phase if wrk else run_phase
    result = meter.apply(runner(spec, meter.start, meter.stop))
    if not server.alive():
        tail = " / ".join(server.log_tail(4).splitlines())
        result.worker_errors.append(f"{server.name} exited during the phase (log: {tail})")
        result.complete = False
        result.server_cpu_s = float("nan")
        result.server_peak_rss_mb = float("nan")
    return result


def show(result: PhaseResult) -> None:
    errors = f", {result.errors:,} errors" if result.errors else ""
    say(
        f"  {result.name:<28} {result.rps:>9,.0f} req/s  p50 {result.p50_ms:7.2f} ms  "
        f"p99 {result.p99_ms:8.2f} ms{errors}  (server CPU {result.server_cpu_s:.1f} s, "
        f"generator CPU {result.generator_cpu_s:.1f} s)"
    )
    for message in result.worker_errors:
        say(f"    ! {message}")


# Talking to the server outside the load --------------------------------------


# The run -----------------------------------------------------------------------


BENCH_POOLS = {
    "IDSTORE_DB_POOL_SIZE": "32",
    "IDSTORE_DB_MAX_OVERFLOW": "32",
    "IDSTORE_DB_READ_POOL_SIZE": "16",
}
"""Connection pools of the server under test: one process with the database
to itself (the product's defaults leave room for several replicas)."""


def server_argv(port: int, workers: int) -> list[str]:
    """``idstore serve --no-migrate`` as installed next to this interpreter."""
    script = Path(sys.executable).with_name("idstore")
    head = [str(script)] if script.exists() else [sys.executable, "-m", "idstore"]
    return [*head, "serve", "--no-migrate", "--port", str(port), "--workers", str(workers)]


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m bench.run", description=__doc__.split("\n\n")[0] if __doc__ else None
    )
    parser.add_argument("--users", type=int, default=10_000, help="users to seed (default 10000)")
    parser.add_argument("--db", choices=("postgresql", "sqlite"), default="postgresql")
    parser.add_argument(
        "--pg-url",
        default=DEFAULT_PG_URL,
        help="PostgreSQL URL; the database (named idstore_bench*) is dropped and recreated",
    )
    parser.add_argument("--workers", type=int, default=1, help="server worker processes")
    parser.add_argument("--concurrency", type=int, default=16, help="connections (default 16)")
    parser.add_argument("--duration", type=float, default=10.0, help="seconds per phase")
    parser.add_argument("--warmup", type=float, default=None, help="warm-up seconds per phase")
    parser.add_argument(
        "--max-requests", type=int, default=500_000, help="request budget of each phase"
    )
    parser.add_argument(
        "--gen-procs", type=int, default=2, help="generator processes (wrk: threads)"
    )
    parser.add_argument(
        "--generator",
        choices=("python", "wrk"),
        default="python",
        help="generator of the GET phases (flows and writes always use the Python one)",
    )
    parser.add_argument(
        "--wrk-check",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="also measure the ceiling and GET /Users/{id} with wrk (default: when installed)",
    )
    parser.add_argument(
        "--phases",
        default="all",
        help=f"comma-separated subset of: {', '.join(ALL_PHASES)}, peer (default all)",
    )
    parser.add_argument("--peer", action=argparse.BooleanOptionalAction, default=True)
    parser.add_argument("--peer-users", type=int, default=2_000, help="N of the peer comparison")
    parser.add_argument(
        "--cycle-users",
        type=int,
        default=None,
        help="users of the Entra initial cycle (default: --users, at most 100000)",
    )
    parser.add_argument("--cycle-timeout", type=float, default=900.0, help="seconds")
    parser.add_argument(
        "--peer-timeout", type=float, default=600.0, help="seconds per side of the comparison"
    )
    parser.add_argument("--explain", action=argparse.BooleanOptionalAction, default=True)
    parser.add_argument("--quick", action="store_true", help="small smoke run (~1 minute)")
    parser.add_argument("--keep-logs", action="store_true", help="keep the servers' logs")
    parser.add_argument("--out", type=Path, default=None, help="result JSON path")
    args = parser.parse_args(argv)
    if args.quick:
        args.users = min(args.users, 2_000)
        args.duration = min(args.duration, 2.0)
        args.peer_users = min(args.peer_users, 200)
        args.cycle_users = min(args.cycle_users or 300, 300)
        args.cycle_timeout = min(args.cycle_timeout, 120.0)
        args.peer_timeout = min(args.peer_timeout, 120.0)
    args.duration = max(0.5, min(args.duration, MAX_DURATION))
    has_wrk = wrk_executable() is not None
    if args.generator == "wrk" and not has_wrk:
        parser.error("--generator wrk needs wrk (apt-get install wrk)")
    if args.wrk_check is None:
        args.wrk_check = has_wrk and args.generator == "python"
    elif args.wrk_check and not has_wrk:
        parser.error("--wrk-check needs wrk (apt-get install wrk)")
    if args.warmup is None:
        args.warmup = min(1.0, args.duration / 5)
    if args.cycle_users is None:
        args.cycle_users = min(args.users, 100_000)
    wanted = (*ALL_PHASES, "peer") if args.phases == "all" else tuple(args.phases.split(","))
    unknown = sorted(set(wanted) - set(ALL_PHASES) - {"peer"})
    if unknown:
        parser.error(f"unknown phase(s): {', '.join(unknown)}")
    args.selected = set(wanted)
    if not args.peer:
        args.selected.discard("peer")
    if args.users < 4 * max(16, args.concurrency):
        parser.error("--users must be at least 4 * max(16, --concurrency)")
    return args


def run_server_side(
    run: Run, result: SeedResult, url: str, logs: Path, ports: tuple[int, int, int]
) -> None:
    """Ceilings, phases, Entra cycle and our half of the peer comparison
    (``ports``: the server's, the bare ceiling's, the database-backed
    ceiling's)."""
    args = run.args
    data, token = result.dataset, result.token
    is_pg = make_url(url).get_backend_name() == "postgresql"
    # The pool sizes the figures of docs/benchmarks.md were measured with: one
    # process alone on its database, so larger than the product's defaults
    # (sized for several replicas). An IDSTORE_DB_* variable set by the caller wins.
    env = {**BENCH_POOLS, **os.environ, "DATABASE_URL": url, "HOST": "127.0.0.1"}
    port, ceiling_port, db_ceiling_port = ports
    env["PORT"] = str(port)
    server = Server(
        "idstore",
        server_argv(port, args.workers),
        port,
        "/healthz",
        logs / "idstore.log",
        env=env,
        cwd=ROOT,
    )
    with ExitStack() as stack:
        say(f"starting idstore serve --no-migrate on 127.0.0.1:{port} ({args.workers} worker(s))")
        stack.enter_context(running(server))
        status, sample = http_get(port, f"{SCIM_PREFIX}/Users/{data.user_id(0)}", token)
        if status != 200:
            raise SystemExit(f"GET /Users/{{id}} answered {status}: {sample[:500]!r}")
        body_file = logs / "ceiling-body.json"
        body_file.write_bytes(sample)

        def ceiling_server(name: str, ceiling_port: int, extra: dict[str, str]) -> Server:
            return Server(
                name,
                [
                    sys.executable,
                    "-m",
                    "bench.ceiling",
                    "--port",
                    str(ceiling_port),
                    "--workers",
                    str(args.workers),
                    "--log-level",
                    os.environ.get("IDSTORE_LOG_LEVEL", "info"),
                ],
                ceiling_port,
                "/healthz",
                logs / f"{name}.log",
                env={**os.environ, **extra},
                cwd=ROOT,
            )

        ceiling = ceiling_server("ceiling", ceiling_port, {"BENCH_CEILING_BODY": str(body_file)})
        say(f"starting the ceiling on 127.0.0.1:{ceiling_port} (body: {len(sample)} bytes)")
        stack.enter_context(running(ceiling))
        ceiling_target = Target("ceiling", "127.0.0.1", ceiling_port, None, SCIM_PREFIX)
        db_ceiling: Server | None = None
        if is_pg and "ceiling" in args.selected:
            db_ceiling = ceiling_server(
                "db_ceiling",
                db_ceiling_port,
                {
                    "BENCH_CEILING_DSN": _asyncpg_dsn(url),
                    "BENCH_CEILING_POOL_SIZE": env["IDSTORE_DB_READ_POOL_SIZE"],
                },
            )
            stack.enter_context(running(db_ceiling))
            _, stored = http_get(db_ceiling_port, f"{SCIM_PREFIX}/Users/{data.user_id(0)}", None)
            same = "the same bytes" if stored == sample else "NOT the same bytes"
            say(
                f"starting the database-backed ceiling on 127.0.0.1:{db_ceiling_port} "
                f"(user 0: {len(stored)} bytes, {same} as the server's)"
            )
            if stored != sample:
                run.notes.append(
                    f"the database-backed ceiling's document of user 0 ({len(stored)} bytes) "
                    f"differs from the server's ({len(sample)} bytes)"
                )
        db_ceiling_target = Target("db_ceiling", "127.0.0.1", db_ceiling_port, None, SCIM_PREFIX)
        ours = Target("idstore", "127.0.0.1", port, token, SCIM_PREFIX)

        def ceiling_phase(name: str, wrk: bool = False, database: bool = False) -> None:
            spec = PhaseSpec(
                name=name,
                scenario="get_user",
                target=db_ceiling_target if database else ceiling_target,
                concurrency=args.concurrency,
                procs=args.gen_procs,
                duration=args.duration,
                warmup=args.warmup,
                max_requests=args.max_requests,
                params={"dataset": data.to_json()},
            )
            measured_server = db_ceiling if database and db_ceiling is not None else ceiling
            res = measured(spec, measured_server, database=database, run=run, wrk=wrk)
            (run.db_ceiling if database else run.ceiling).append(res)
            show(res)

        def ceilings(suffix: str = "") -> None:
            by_wrk = args.wrk_check or args.generator == "wrk"
            ceiling_phase(f"ceiling{suffix}")
            if by_wrk:
                ceiling_phase(f"ceiling [wrk]{suffix}", wrk=True)
            if db_ceiling is not None:
                ceiling_phase(f"db_ceiling{suffix}", database=True)
                if by_wrk:
                    ceiling_phase(f"db_ceiling [wrk]{suffix}", wrk=True, database=True)

        say("phases:")
        if "ceiling" in args.selected:
            ceilings()

        cursor: dict[str, Any] = {}
        if args.selected & {"list_cursor_deep", "list_index_deep"}:
            page = max(1, min(DEEP_PAGE, data.users // PAGE))
            cursor = deep_cursor(port, token, data, page, budget_s=120.0)
            run.deep_page = {k: v for k, v in cursor.items() if k != "cursor"}
        for spec in fixed_specs(args, ours, data, cursor):
            by_wrk = args.generator == "wrk" and spec.scenario in WRK_SCENARIOS
            res = measured(spec, server, database=is_pg, run=run, wrk=by_wrk)
            run.phases.append(res)
            show(res)
            if spec.name == "get_user" and args.wrk_check and not by_wrk:
                spec.name = "get_user [wrk]"
                res = measured(spec, server, database=is_pg, run=run, wrk=True)
                run.phases.append(res)
                show(res)

        if "entra_cycle" in args.selected:
            spec = flow_spec(
                "entra_cycle",
                "entra_cycle",
                ours,
                args,
                args.cycle_users,
                f"cycle{int(time.time())}",
                True,
                args.cycle_timeout,
            )
            groups = spec.params["groups"]
            say(f"  entra_cycle: {args.cycle_users:,} users, {groups:,} groups of 100 ...")
            res = measured(spec, server, database=is_pg, run=run)
            res.complete = res.complete and res.info.get("finished_workers") == min(
                spec.procs, spec.concurrency
            )
            run.cycle = res
            show(res)

        if "peer" in args.selected:
            spec = flow_spec(
                "peer_mix (idstore)",
                "peer_mix",
                ours,
                args,
                args.peer_users,
                f"peer{int(time.time())}",
                False,
                args.peer_timeout,
            )
            say(f"  peer comparison, idstore side: N={args.peer_users:,} ...")
            run.peer_ours = measured(spec, server, database=is_pg, run=run)
            run.peer_ours.complete = run.peer_ours.complete and run.peer_ours.info.get(
                "finished_workers"
            ) == min(spec.procs, spec.concurrency)
            show(run.peer_ours)

        if "ceiling" in args.selected:
            ceilings(" (end of run)")
        run.server_overall_peak_rss_mb = server.overall_peak_rss_mb()


def run_peer_side(run: Run, logs: Path) -> None:
    args = run.args
    exe = ensure_peer(say)
    if exe is None:
        run.peer_note = "scim2-server could not be installed; no peer figures"
        return
    port = free_port()
    peer, token = peer_server(exe, port, logs / "peer.log")
    run.peer_note = peer_version()
    say(f"starting {run.peer_note} on 127.0.0.1:{port}")
    with running(peer):
        target = Target("scim2-server", "127.0.0.1", port, token, PEER_PREFIX)
        spec = flow_spec(
            "peer_mix (scim2-server)",
            "peer_mix",
            target,
            args,
            args.peer_users,
            f"peer{int(time.time())}",
            False,
            args.peer_timeout,
        )
        run.peer_theirs = measured(spec, peer, database=False)
        run.peer_theirs.complete = run.peer_theirs.complete and run.peer_theirs.info.get(
            "finished_workers"
        ) == min(spec.procs, spec.concurrency)
        show(run.peer_theirs)


def explain(run: Run, url: str, data: Dataset, token: str) -> None:
    from .explain import explain_filters

    plans, problem = asyncio.run(explain_filters(url, data, token))
    run.explain = [
        {"title": p.title, "sql": p.sql, "params": p.params, "plan": p.plan} for p in plans
    ]
    run.explain_problem = problem


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    started = datetime.now(UTC)
    run = Run(args=args, started=started.strftime("%Y-%m-%d %H:%M:%S UTC"))
    workdir = Path(tempfile.mkdtemp(prefix="idstore-bench-"))
    if args.db == "sqlite":
        url = f"sqlite+aiosqlite:///{workdir / 'idstore_bench.db'}"
    else:
        url = args.pg_url
    out = args.out or RESULTS / f"{started.strftime('%Y%m%dT%H%M%SZ')}.json"
    status = 0
    try:
        run.machine = machine_info(url)
        spares = max(64, 2 * args.concurrency)
        # Chosen before seeding: the database-backed ceiling's documents carry
        # the server's base URL (meta.location), so both send the same bytes.
        ports = (free_port(), free_port(), free_port())
        t0 = time.perf_counter()
        seeded = seed(
            url,
            args.users,
            spares,
            progress=say,
            ceiling_base_url=f"http://127.0.0.1:{ports[0]}{SCIM_PREFIX}"
            if "ceiling" in args.selected
            else None,
        )
        run.seed = {"timings_s": seeded.timings_s, "dataset": seeded.dataset.to_json()}
        run.notes.extend(seeded.notes)
        say(f"seeded in {time.perf_counter() - t0:.1f} s")
        server_phases = args.selected - {"peer"}
        if server_phases or "peer" in args.selected:
            run_server_side(run, seeded, url, workdir, ports)
        if args.explain and args.db == "postgresql":
            explain(run, url, seeded.dataset, seeded.token)
        if "peer" in args.selected:
            run_peer_side(run, workdir)
    except KeyboardInterrupt:
        say("interrupted")
        status = 130
    except Exception as exc:
        say(f"benchmark failed: {type(exc).__name__}: {exc}")
        status = 1
        raise
    finally:
        print_report(run)
        report.write_json(out, summary.document(run, list(argv or sys.argv[1:]), status))
        say(f"\nresults: {out}")
        troubled = status != 0 or any(
            not r.complete for r in [*run.ceiling, *run.db_ceiling, *run.phases] if r is not None
        )
        if args.keep_logs or troubled:
            say(f"server logs kept in {workdir}")
        else:
            shutil.rmtree(workdir, ignore_errors=True)
    return status


if __name__ == "__main__":
    sys.exit(main())
