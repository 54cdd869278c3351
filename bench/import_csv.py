"""Benchmark of the CSV import (issue 14, "Speed"; docs/benchmarks.md "CSV
import"): 100,000 users in one file, over HTTP, on PostgreSQL, under 60 s
with the server under 300 MB.

    .venv/bin/python -m bench.import_csv                  # 100,000 rows
    .venv/bin/python -m bench.import_csv --rows 10000     # a smoke run

1. **Database.** ``idstore_bench_import`` (``--database``; its name must
   start with ``idstore_bench``) is dropped, created and migrated; an
   ``admin`` token is issued.
2. **File.** ``--rows`` users (userName, e-mail, names, IdP identifiers,
   department, a custom-data key) written to a temporary CSV file, a row at
   a time.
3. **Processes.** ``idstore serve`` (uvicorn, one worker) and ``idstore
   worker --job import`` (the import jobs' loop only: no outbox dispatcher
   sends anything) on 127.0.0.1, each sampled from ``/proc`` every 100 ms
   for its peak resident memory.
4. **Import.** ``POST /api/v1/users/import`` streams the file; ``GET
   /api/v1/jobs/{id}`` is polled until the job ends. Timed: the upload (the
   server checks the file and keeps it), the job (``startedAt`` to
   ``finishedAt``) and the whole (upload sent to job finished); rows per
   second of the whole. The per-row report is downloaded and counted.
5. **Again.** The same file a second time: every row must be
   ``unchanged`` (nothing written), timed the same way.

Every process it starts is stopped in a ``finally`` block.
"""

from __future__ import annotations

import argparse
import asyncio
import csv
import json
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx

from identity_store import tokens
from identity_store.database import create_engine, create_session_factory
from identity_store.settings import Settings

from .machine import ROOT, git_state
from .procs import Server, free_port, process_tree, rss_bytes, running
from .run import BENCH_POOLS, server_argv
from .seed import fresh_database

DEFAULT_SERVER = "postgresql+asyncpg://postgres@127.0.0.1:5432/postgres"
DEFAULT_DATABASE = "idstore_bench_import"
TARGET_SECONDS = 60.0
TARGET_RSS_MB = 300.0
POLL_S = 0.25
DEPARTMENTS = 40


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m bench.import_csv", description=(__doc__ or "").split("\n\n")[0]
    )
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--server", default=DEFAULT_SERVER, help="PostgreSQL server URL")
    parser.add_argument(
        "--database", default=DEFAULT_DATABASE, help="bench database (named idstore_bench*)"
    )
    parser.add_argument("--timeout", type=float, default=900.0, help="seconds per import")
    parser.add_argument("--json", type=Path, default=None, help="write the figures here")
    args = parser.parse_args(argv)
    if not 1 <= args.rows <= 1_000_000:
        parser.error("--rows must be 1-1,000,000")
    return args


def say(text: str = "") -> None:
    print(text, flush=True)


def write_file(path: Path, rows: int) -> int:
    """``rows`` users into ``path``; its size in bytes."""
    with path.open("w", encoding="utf-8", newline="") as out:
        writer = csv.writer(out)
        writer.writerow(
            [
                "userName",
                "E-Mail",
                "givenName",
                "familyName",
                "displayName",
                "idpUsername",
                "employeeNumber",
                "department",
                "customData.team",
            ]
        )
        for i in range(rows):
            writer.writerow(
                [
                    f"user{i:07d}@bench.example",
                    f"user{i:07d}@bench.example",
                    f"Given{i}",
                    f"Family{i % 997}",
                    f"Given{i} Family{i % 997}",
                    f"user{i:07d}",
                    f"{100000 + i}",
                    f"Department {i % DEPARTMENTS}",
                    f"team-{i % 17}",
                ]
            )
    return path.stat().st_size


async def admin_token(url: str) -> str:
    engine = create_engine(Settings(DATABASE_URL=url), null_pool=True)
    try:
        async with create_session_factory(engine)() as session:
            _, secret = await tokens.create_token(session, "bench-import", ["admin"])
            await session.commit()
            return secret
    finally:
        await engine.dispose()


class Sampled:
    """A process without an HTTP endpoint (the worker), sampled for its peak RSS."""

    def __init__(self, argv: list[str], env: dict[str, str], log: Path) -> None:
        with log.open("ab") as out:
            self.proc = subprocess.Popen(
                argv,
                env=env,
                cwd=ROOT,
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
            )
        self.log = log
        self._peak = 0
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()

    def _sample(self) -> None:
        while not self._stop.wait(0.1):
            if self.proc.poll() is not None:
                return
            rss = rss_bytes(process_tree(self.proc.pid))
            with self._lock:
                self._peak = max(self._peak, rss)

    def wait_started(self, marker: str, timeout: float = 60.0) -> None:
        """Until the log says ``marker`` (the worker's loop runs)."""
        deadline = time.monotonic() + timeout
        while marker not in self.log.read_text(errors="replace"):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise SystemExit(f"the worker did not start:\n{self.log.read_text()[-2000:]}")
            time.sleep(0.1)

    def reset_peak(self) -> None:
        with self._lock:
            self._peak = rss_bytes(process_tree(self.proc.pid))

    def peak_rss_mb(self) -> float:
        with self._lock:
            return self._peak / 2**20

    def stop(self) -> None:
        self._stop.set()
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(timeout=5)


def _seconds(job: dict[str, Any], start: str, end: str) -> float | None:
    if not job.get(start) or not job.get(end):
        return None
    return (datetime.fromisoformat(job[end]) - datetime.fromisoformat(job[start])).total_seconds()


def import_once(
    client: httpx.Client, path: Path, timeout: float, server: Server, worker: Sampled
) -> dict[str, Any]:
    """Upload ``path``, wait for its job; the figures."""
    server.reset_peak()
    worker.reset_peak()
    started = time.perf_counter()
    with path.open("rb") as upload:
        response = client.post(
            "/api/v1/users/import",
            files={"file": (path.name, upload, "text/csv")},
            data={"mapping": json.dumps({"E-Mail": "email"})},
            timeout=timeout,
        )
    uploaded = time.perf_counter() - started
    if response.status_code != 202:
        raise SystemExit(f"the upload was refused: {response.status_code} {response.text}")
    job_id = response.json()["id"]
    deadline = started + timeout
    while True:
        job = client.get(f"/api/v1/jobs/{job_id}").json()
        if job["status"] not in ("QUEUED", "RUNNING"):
            break
        if time.perf_counter() > deadline:
            raise SystemExit(f"job {job_id} not finished after {timeout} s: {job['summary']}")
        time.sleep(POLL_S)
    total = time.perf_counter() - started
    report_started = time.perf_counter()
    report = client.get(f"/api/v1/jobs/{job_id}/report.csv", timeout=timeout)
    report_lines = report.text.count("\n") - 1
    summary = job["summary"]
    return {
        "job": job_id,
        "status": job["status"],
        "rows": summary.get("rows"),
        "created": summary.get("created"),
        "updated": summary.get("updated"),
        "unchanged": summary.get("unchanged"),
        "failed": summary.get("failed"),
        "upload_s": round(uploaded, 2),
        "job_s": _seconds(job, "startedAt", "finishedAt"),
        "total_s": round(total, 2),
        "rows_per_s": round((summary.get("rows") or 0) / total, 1),
        "server_peak_rss_mb": round(server.peak_rss_mb(), 1),
        "worker_peak_rss_mb": round(worker.peak_rss_mb(), 1),
        "report_lines": report_lines,
        "report_s": round(time.perf_counter() - report_started, 2),
    }


def _line(name: str, run: dict[str, Any]) -> str:
    return (
        f"{name}: {run['rows']:,} rows in {run['total_s']:.1f} s ({run['rows_per_s']:,.0f} rows/s; "
        f"upload {run['upload_s']:.1f} s, job {run['job_s'] or 0:.1f} s): "
        f"{run['created']} created, {run['updated']} updated, {run['unchanged']} unchanged, "
        f"{run['failed']} failed; peak RSS server {run['server_peak_rss_mb']} MB, "
        f"worker {run['worker_peak_rss_mb']} MB; report {run['report_lines']:,} lines "
        f"in {run['report_s']:.1f} s"
    )


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    if not args.database.startswith("idstore_bench"):
        raise SystemExit("--database must start with idstore_bench (it is dropped)")
    url = asyncio.run(fresh_database(args.server, args.database))
    token = asyncio.run(admin_token(url))
    work = Path(tempfile.mkdtemp(prefix="idstore-bench-import-"))
    source = work / "users.csv"
    size = write_file(source, args.rows)
    say(f"file: {args.rows:,} rows, {size / 2**20:.1f} MiB ({source})")
    env = {**BENCH_POOLS, **os.environ, "DATABASE_URL": url, "HOST": "127.0.0.1"}
    env["IDSTORE_IMPORT_POLL_SECONDS"] = "0.2"
    port = free_port()
    env["PORT"] = str(port)
    server = Server(
        "idstore", server_argv(port, 1), port, "/healthz", work / "serve.log", env=env, cwd=ROOT
    )
    script = Path(sys.executable).with_name("idstore")
    head = [str(script)] if script.exists() else [sys.executable, "-m", "idstore"]
    results: dict[str, Any] = {
        "rows": args.rows,
        "file_bytes": size,
        "database": "postgresql",
        "git": git_state(),
        "targets": {"total_s": TARGET_SECONDS, "server_peak_rss_mb": TARGET_RSS_MB},
    }
    with running(server):
        worker = Sampled([*head, "worker", "--job", "import"], env, work / "worker.log")
        try:
            worker.wait_started(" started")
            with httpx.Client(
                base_url=f"http://127.0.0.1:{port}",
                headers={"Authorization": f"Bearer {token}"},
                timeout=60.0,
            ) as client:
                first = import_once(client, source, args.timeout, server, worker)
                say(_line("first import", first))
                again = import_once(client, source, args.timeout, server, worker)
                say(_line("same file again", again))
        finally:
            worker.stop()
    results["first"] = first
    results["again"] = again
    ok = (
        first["created"] == args.rows
        and again["unchanged"] == args.rows
        and first["report_lines"] == args.rows
    )
    verdict = "within" if first["total_s"] <= TARGET_SECONDS else "OVER"
    say(
        f"target: {args.rows:,} rows in {first['total_s']:.1f} s ({verdict} {TARGET_SECONDS:.0f} s "
        f"at 100,000 rows); server peak {first['server_peak_rss_mb']} MB "
        f"(target {TARGET_RSS_MB:.0f} MB); counts {'as expected' if ok else 'WRONG'}"
    )
    if args.json is not None:
        args.json.write_text(json.dumps(results, indent=2))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
