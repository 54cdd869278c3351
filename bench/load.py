"""The load generator: K worker processes, each an asyncio (uvloop) event loop
driving its share of the connections with :mod:`bench.httpclient`.

A phase is bounded twice: by a request budget and by a deadline; each worker
stops by itself at whichever comes first, and the parent kills any worker that
outlives the deadline by more than the request timeout. Workers record every
request's latency and status per operation label; samples taken during the
warm-up (fixed-rate phases only) are dropped. Each worker also reports its
own CPU time (``getrusage``), so that the generator's cost is visible next to
the server's.
"""

from __future__ import annotations

import asyncio
import multiprocessing as mp
import queue
import resource
import statistics
import time
from array import array
from collections import Counter
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass, field
from typing import Any

from .httpclient import Connection, HttpError, RequestTemplate

ERROR_SAMPLES = 3
MAX_FAILURES_IN_A_ROW = 50
"""A connection that failed this many times in a row (server gone) stops."""
START_DELAY = 0.2
"""Seconds between the start signal and the common start instant."""


class Stop(Exception):
    """The budget or the deadline is exhausted: the connection stops."""


@dataclass(frozen=True, slots=True)
class Target:
    """A server under load: address, bearer token, base path (SCIM's or the
    JSON API's) and the media type of its bodies."""

    name: str
    host: str
    port: int
    token: str | None
    prefix: str
    media_type: str = "application/scim+json"


@dataclass(slots=True)
class PhaseSpec:
    """What one phase runs: a scenario of :mod:`bench.scenarios` with its
    parameters, at a concurrency, within a request budget and a deadline."""

    name: str
    scenario: str
    target: Target
    concurrency: int = 16
    procs: int = 2
    duration: float = 10.0
    max_requests: int = 1_000_000
    warmup: float = 1.0
    timeout: float = 30.0
    params: dict[str, Any] = field(default_factory=dict)


@dataclass(slots=True)
class LabelStats:
    """Samples of one operation label within one worker."""

    latencies_ms: array[float] = field(default_factory=lambda: array("d"))
    statuses: Counter[int] = field(default_factory=Counter)
    first_start: float = float("inf")
    last_end: float = 0.0
    errors: int = 0
    error_samples: list[str] = field(default_factory=list)


class Recorder:
    """Per-label latencies and statuses; drops samples started before ``measure_from``."""

    def __init__(self, measure_from: float) -> None:
        self.measure_from = measure_from
        self.labels: dict[str, LabelStats] = {}
        self.requests = 0
        self.last_end = measure_from

    def add(
        self, label: str, started: float, ended: float, status: int, ok: bool, detail: str
    ) -> None:
        self.requests += 1
        if started < self.measure_from:
            return
        self.last_end = max(self.last_end, ended)
        stats = self.labels.get(label)
        if stats is None:
            stats = self.labels[label] = LabelStats()
        stats.latencies_ms.append((ended - started) * 1000.0)
        stats.first_start = min(stats.first_start, started)
        stats.last_end = max(stats.last_end, ended)
        stats.statuses[status] += 1
        if not ok:
            stats.errors += 1
            if len(stats.error_samples) < ERROR_SAMPLES:
                stats.error_samples.append(f"{status}: {detail[:300]}")


class Budget:
    """Requests left and the deadline, shared by the connections of one worker."""

    def __init__(self, requests: int, deadline: float) -> None:
        self.remaining = requests
        self.deadline = deadline

    def take(self) -> None:
        if self.remaining <= 0 or time.monotonic() >= self.deadline:
            raise Stop
        self.remaining -= 1


class Client:
    """One connection of a worker, recording every request it sends."""

    def __init__(
        self,
        index: int,
        target: Target,
        recorder: Recorder,
        budget: Budget,
        timeout: float,
    ) -> None:
        self.index = index
        """Global connection index (0 .. concurrency-1) across workers."""
        self.target = target
        self.template = RequestTemplate(
            target.host, target.port, target.token, media_type=target.media_type
        )
        self.conn = Connection(target.host, target.port, timeout)
        self.recorder = recorder
        self.budget = budget
        self.failures_in_a_row = 0

    def build(self, method: str, path: str, body: bytes | None = None) -> bytes:
        """Request bytes for ``path`` under the target's SCIM prefix."""
        return self.template.build(method, self.target.prefix + path, body)

    async def send(
        self,
        label: str,
        data: bytes,
        expect: tuple[int, ...] = (200,),
        started: float | None = None,
    ) -> tuple[int, bytes]:
        """Send pre-built bytes; a connection failure is recorded as status 0
        and returned as such (the next request reconnects). ``started``: the
        instant the latency counts from, when earlier than now (a paced
        request sent late because the previous answer came late)."""
        self.budget.take()
        if started is None:
            started = time.monotonic()
        try:
            status, body = await self.conn.send(data)
        except HttpError as exc:
            self.recorder.add(label, started, time.monotonic(), 0, False, str(exc))
            self.failures_in_a_row += 1
            if self.failures_in_a_row >= MAX_FAILURES_IN_A_ROW:
                raise Stop from exc
            return 0, b""
        self.failures_in_a_row = 0
        ok = status in expect
        self.recorder.add(
            label,
            started,
            time.monotonic(),
            status,
            ok,
            "" if ok else body.decode("utf-8", "replace"),
        )
        return status, body

    async def call(
        self,
        label: str,
        method: str,
        path: str,
        body: bytes | None = None,
        expect: tuple[int, ...] = (200,),
    ) -> tuple[int, bytes]:
        return await self.send(label, self.build(method, path, body), expect)


@dataclass(slots=True)
class WorkerContext:
    """What a scenario sees in one worker process."""

    spec: PhaseSpec
    worker: int
    workers: int
    first_connection: int
    connections: int


Scenario = Callable[[list[Client], WorkerContext], Awaitable[dict[str, Any]]]


def _connections_of(worker: int, procs: int, concurrency: int) -> tuple[int, int]:
    """(first global connection index, number of connections) of ``worker``."""
    base, extra = divmod(concurrency, procs)
    first = worker * base + min(worker, extra)
    return first, base + (1 if worker < extra else 0)


@dataclass(slots=True)
class _Worker:
    """One generator process's state, built before the start signal."""

    spec: PhaseSpec
    ctx: WorkerContext
    scenario: Scenario
    recorder: Recorder
    budget: Budget
    clients: list[Client]


def _setup(spec: PhaseSpec, worker: int) -> _Worker:
    """Connections, budget and the scenario's prepared requests (before the
    start instant, so that preparing them costs nothing measured)."""
    from .scenarios import SCENARIOS

    scenario = SCENARIOS[spec.scenario]
    procs = max(1, min(spec.procs, spec.concurrency))
    first, count = _connections_of(worker, procs, spec.concurrency)
    recorder = Recorder(float("inf"))
    budget = Budget(spec.max_requests * count // spec.concurrency + 1, float("inf"))
    clients = [Client(first + j, spec.target, recorder, budget, spec.timeout) for j in range(count)]
    ctx = WorkerContext(spec, worker, procs, first, count)
    prepare = getattr(scenario, "prepare", None)
    if prepare is not None:
        prepare(clients, ctx)
    return _Worker(spec, ctx, scenario, recorder, budget, clients)


async def _worker_main(w: _Worker, start_at: float) -> dict[str, Any]:
    w.recorder.measure_from = start_at + w.spec.warmup
    w.recorder.last_end = w.recorder.measure_from
    w.budget.deadline = start_at + w.spec.warmup + w.spec.duration
    await asyncio.sleep(max(0.0, start_at - time.monotonic()))
    cpu0 = resource.getrusage(resource.RUSAGE_SELF)
    info: dict[str, Any] = {}
    error: str | None = None
    try:
        info = await w.scenario(w.clients, w.ctx)
    except Stop:
        pass
    except Exception as exc:  # reported, never hidden
        error = f"{type(exc).__name__}: {exc}"
    finally:
        for client in w.clients:
            client.conn.close()
    cpu1 = resource.getrusage(resource.RUSAGE_SELF)
    return {
        "worker": w.ctx.worker,
        "labels": w.recorder.labels,
        "requests": w.recorder.requests,
        "measure_from": w.recorder.measure_from,
        "last_end": w.recorder.last_end,
        "cpu_s": (cpu1.ru_utime - cpu0.ru_utime) + (cpu1.ru_stime - cpu0.ru_stime),
        "info": info,
        "error": error,
        "connects": sum(c.conn.connects for c in w.clients),
    }


def _worker_entry(spec: PhaseSpec, worker: int, start: Any, start_at: Any, results: Any) -> None:
    """Process entry point: prepare, wait for the start signal, run, report."""
    try:
        import uvloop

        runner: Callable[[Coroutine[Any, Any, dict[str, Any]]], dict[str, Any]] = uvloop.run
    except ImportError:  # pragma: no cover - uvloop comes with uvicorn[standard]
        runner = asyncio.run
    try:
        state = _setup(spec, worker)
    except BaseException as exc:
        results.put(("failed", worker, f"{type(exc).__name__}: {exc}"))
        raise
    results.put(("ready", worker, None))
    if not start.wait(120):
        return
    try:
        result = runner(_worker_main(state, start_at.value))
    except BaseException as exc:
        results.put(("failed", worker, f"{type(exc).__name__}: {exc}"))
        raise
    results.put(("done", worker, result))


@dataclass(slots=True)
class OpSummary:
    """Merged figures of one operation label over all workers."""

    label: str
    requests: int
    errors: int
    rps: float
    p50_ms: float
    p90_ms: float
    p99_ms: float
    max_ms: float
    mean_ms: float
    statuses: dict[str, int]
    error_samples: list[str]
    p95_ms: float = float("nan")


@dataclass(slots=True)
class PhaseResult:
    """A phase's outcome: per-operation summaries, overall figures, costs."""

    name: str
    wall_s: float
    requests: int
    errors: int
    rps: float
    p50_ms: float
    p99_ms: float
    ops: dict[str, OpSummary]
    generator_cpu_s: float
    info: dict[str, Any]
    worker_errors: list[str]
    connects: int
    server_cpu_s: float = 0.0
    db_cpu_s: float = 0.0
    server_peak_rss_mb: float = 0.0
    complete: bool = True
    generator: str = "python"
    p95_ms: float = float("nan")
    sent: int = 0
    """Requests sent, the warm-up's included (the CPU figures cover it too)."""


def percentile(sorted_values: list[float], q: float) -> float:
    """The ``q``-quantile (0..1) of already sorted values, nearest rank."""
    if not sorted_values:
        return float("nan")
    rank = min(len(sorted_values) - 1, max(0, round(q * len(sorted_values) + 0.5) - 1))
    return sorted_values[rank]


def _summarise(label: str, parts: list[LabelStats]) -> OpSummary:
    """Requests per second of an operation count over its own active window
    (first start to last end), so that an operation confined to one stage of a
    flow is not diluted by the other stages."""
    values = sorted(v for p in parts for v in p.latencies_ms)
    window = max(p.last_end for p in parts) - min(p.first_start for p in parts)
    statuses: Counter[int] = Counter()
    samples: list[str] = []
    for p in parts:
        statuses.update(p.statuses)
        samples.extend(p.error_samples)
    return OpSummary(
        label=label,
        requests=len(values),
        errors=sum(p.errors for p in parts),
        rps=len(values) / window if window > 0 else 0.0,
        p50_ms=percentile(values, 0.50),
        p90_ms=percentile(values, 0.90),
        p99_ms=percentile(values, 0.99),
        max_ms=values[-1] if values else float("nan"),
        mean_ms=statistics.fmean(values) if values else float("nan"),
        statuses={str(k): v for k, v in sorted(statuses.items())},
        error_samples=samples[:ERROR_SAMPLES],
        p95_ms=percentile(values, 0.95),
    )


def run_phase(
    spec: PhaseSpec,
    on_start: Callable[[], None] | None = None,
    on_end: Callable[[], None] | None = None,
) -> PhaseResult:
    """Run ``spec`` in worker processes and merge their figures.

    ``on_start`` runs just before the workers are released (the caller starts
    its server CPU and memory meters there), ``on_end`` once they are done.
    """
    ctx = mp.get_context("spawn")
    procs = max(1, min(spec.procs, spec.concurrency))
    start = ctx.Event()
    start_at = ctx.Value("d", 0.0)
    results = ctx.Queue()
    workers = [
        ctx.Process(target=_worker_entry, args=(spec, w, start, start_at, results), daemon=True)
        for w in range(procs)
    ]
    for p in workers:
        p.start()
    done: dict[int, dict[str, Any]] = {}
    failures: list[str] = []
    try:
        ready = 0
        ready_deadline = time.monotonic() + 60
        while ready < procs and time.monotonic() < ready_deadline:
            if not any(p.is_alive() for p in workers):
                break
            try:
                kind, worker, payload = results.get(timeout=1.0)
            except queue.Empty:
                continue
            if kind == "ready":
                ready += 1
            elif kind == "failed":
                failures.append(f"worker {worker}: {payload}")
        if ready < procs:
            raise RuntimeError(f"only {ready} of {procs} generator processes started")
        if on_start:
            on_start()
        start_at.value = time.monotonic() + START_DELAY
        start.set()
        hard_deadline = start_at.value + spec.warmup + spec.duration + spec.timeout + 30.0
        while len(done) + len(failures) < procs:
            remaining = hard_deadline - time.monotonic()
            if remaining <= 0:
                failures.append("generator killed at the hard deadline")
                break
            try:
                kind, worker, payload = results.get(timeout=min(remaining, 1.0))
            except queue.Empty:
                if not any(p.is_alive() for p in workers):
                    # Give the queue's feeder a moment, then give up.
                    time.sleep(0.5)
                    if results.empty():
                        failures.append("generator processes exited without a result")
                        break
                continue
            if kind == "done":
                done[worker] = payload
            elif kind == "failed":
                failures.append(f"worker {worker}: {payload}")
    finally:
        if on_end:
            on_end()
        for p in workers:
            p.join(timeout=5)
            if p.is_alive():
                p.kill()
                p.join(timeout=5)
    return _merge(spec, start_at.value, list(done.values()), failures)


def _merge(
    spec: PhaseSpec, start_at: float, parts: list[dict[str, Any]], failures: list[str]
) -> PhaseResult:
    measure_from = start_at + spec.warmup
    last_end = max((p["last_end"] for p in parts), default=measure_from)
    wall = max(1e-9, last_end - measure_from)
    by_label: dict[str, list[LabelStats]] = {}
    for p in parts:
        for label, stats in p["labels"].items():
            by_label.setdefault(label, []).append(stats)
    ops = {label: _summarise(label, stats) for label, stats in sorted(by_label.items())}
    all_values = sorted(v for stats in by_label.values() for s in stats for v in s.latencies_ms)
    info: dict[str, Any] = {}
    for p in parts:
        for key, value in p["info"].items():
            if isinstance(value, int | float) and not isinstance(value, bool):
                info[key] = info.get(key, 0) + value
            else:
                info.setdefault(key, value)
    errors = [f"worker {p['worker']}: {p['error']}" for p in parts if p["error"]]
    requests = len(all_values)
    return PhaseResult(
        name=spec.name,
        wall_s=wall,
        requests=requests,
        errors=sum(o.errors for o in ops.values()),
        rps=requests / wall,
        p50_ms=percentile(all_values, 0.5),
        p99_ms=percentile(all_values, 0.99),
        ops=ops,
        generator_cpu_s=sum(p["cpu_s"] for p in parts),
        info=info,
        worker_errors=failures + errors,
        connects=sum(p["connects"] for p in parts),
        complete=not failures
        and not errors
        and len(parts) == max(1, min(spec.procs, spec.concurrency)),
        p95_ms=percentile(all_values, 0.95),
        sent=sum(p["requests"] for p in parts),
    )
