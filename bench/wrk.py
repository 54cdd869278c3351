"""``wrk`` (the Debian package) as a second generator for the GET phases.

The Python generator of :mod:`bench.load` drives every phase, since the
flows need request sequences. ``wrk`` (C, with the Lua script
``bench/lua/paths.lua``) replays the same GET requests, built by the same
scenario code and written to a file, at a fraction of the CPU: a run measures
the ceiling and ``GET /Users/{id}`` with both, and when both agree the Python
generator was not what limited the figures (``--generator wrk`` uses it for
every GET phase instead).

``wrk`` is bounded by ``-d`` (time) and by a request budget that the Lua
script enforces per thread (``wrk.thread:stop()``); the process is killed if
it outlives its deadline.
"""

from __future__ import annotations

import itertools
import json
import math
import resource
import shutil
import subprocess
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from .load import Budget, Client, OpSummary, PhaseResult, PhaseSpec, Recorder, WorkerContext

SCRIPT = Path(__file__).resolve().parent / "lua" / "paths.lua"
PATHS_PER_CONNECTION = 8192


def wrk_executable() -> str | None:
    return shutil.which("wrk")


def _paths(spec: PhaseSpec) -> tuple[str, list[str]]:
    """The label and the request paths of a GET phase, from its scenario."""
    from .scenarios import SCENARIOS, Fixed

    scenario = SCENARIOS[spec.scenario]
    if not isinstance(scenario, Fixed):
        raise ValueError(f"{spec.scenario} is not a fixed-rate scenario")
    recorder, budget = Recorder(math.inf), Budget(0, math.inf)
    ctx = WorkerContext(spec, 0, 1, 0, spec.concurrency)
    label, paths = "", []
    for index in range(spec.concurrency):
        client = Client(index, spec.target, recorder, budget, spec.timeout)
        for request_label, data, _ in itertools.islice(
            scenario.source(client, ctx), PATHS_PER_CONNECTION
        ):
            label = request_label
            method, path, _ = data.split(b" ", 2)
            if method != b"GET":
                raise ValueError(f"wrk replays GET requests only, not {method!r}")
            paths.append(path.decode())
    return label, paths


def _run(argv: list[str], timeout: float) -> tuple[str, float]:
    """Run wrk; its output and the CPU seconds it used."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    done = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, check=False)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    if done.returncode != 0:
        raise RuntimeError(f"wrk failed ({done.returncode}): {done.stderr.strip()[:500]}")
    return done.stdout, cpu


def run_wrk_phase(
    spec: PhaseSpec,
    on_start: Callable[[], None] | None = None,
    on_end: Callable[[], None] | None = None,
) -> PhaseResult:
    """Run a GET phase with wrk: a warm-up run, then the measured run."""
    exe = wrk_executable()
    if exe is None:
        raise RuntimeError("wrk is not installed (apt-get install wrk)")
    label, paths = _paths(spec)
    threads = max(1, min(spec.procs, spec.concurrency))
    target = spec.target
    with tempfile.NamedTemporaryFile("w", suffix=".paths", delete=False) as fh:
        fh.write("\n".join(paths) + "\n")
        paths_file = fh.name
    try:
        headers = ["-H", "Accept: application/scim+json"]
        if target.token:
            headers += ["-H", f"Authorization: Bearer {target.token}"]

        def argv(seconds: int, budget: int) -> list[str]:
            return [
                exe, "-t", str(threads), "-c", str(spec.concurrency), "-d", f"{seconds}s",
                "--timeout", f"{int(spec.timeout)}s", "-s", str(SCRIPT), *headers,
                f"http://{target.host}:{target.port}", "--", paths_file,
                str(max(1, budget // threads)),
            ]  # fmt: skip

        if spec.warmup > 0:
            _run(argv(max(1, round(spec.warmup)), spec.max_requests), spec.warmup + 60)
        seconds = max(1, round(spec.duration))
        if on_start:
            on_start()
        started = time.monotonic()
        try:
            out, cpu = _run(argv(seconds, spec.max_requests), seconds + spec.timeout + 60)
        finally:
            if on_end:
                on_end()
        wall_fallback = time.monotonic() - started
    finally:
        Path(paths_file).unlink(missing_ok=True)
    line = next((x for x in out.splitlines() if x.startswith("BENCH_JSON ")), None)
    if line is None:
        raise RuntimeError(f"wrk printed no summary:\n{out[-1000:]}")
    figures = json.loads(line.removeprefix("BENCH_JSON "))
    wall = figures["duration_us"] / 1e6 or wall_fallback
    socket_errors = sum(figures[k] for k in ("connect", "read", "write", "timeout"))
    errors = figures["bad_status"] + socket_errors
    requests = int(figures["requests"])
    op = OpSummary(
        label=label,
        requests=requests,
        errors=errors,
        rps=requests / wall,
        p50_ms=figures["p50_us"] / 1000,
        p90_ms=figures["p90_us"] / 1000,
        p99_ms=figures["p99_us"] / 1000,
        max_ms=figures["max_us"] / 1000,
        mean_ms=figures["mean_us"] / 1000,
        statuses={"non-200": figures["bad_status"], "socket errors": socket_errors},
        error_samples=list(figures["samples"])[:3],
    )
    return PhaseResult(
        name=spec.name,
        wall_s=wall,
        requests=requests,
        errors=errors,
        rps=op.rps,
        p50_ms=op.p50_ms,
        p99_ms=op.p99_ms,
        ops={label: op},
        generator_cpu_s=cpu,
        info={},
        worker_errors=[],
        connects=spec.concurrency,
        generator="wrk",
    )
