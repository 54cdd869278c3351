"""Printing the tables and writing the JSON result file."""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from dataclasses import asdict, is_dataclass
from pathlib import Path
from typing import Any

from .load import OpSummary, PhaseResult


def say(message: str) -> None:
    """Print a progress or report line at once."""
    print(message, flush=True)


def _num(value: float, digits: int = 1) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    return f"{value:,.{digits}f}"


def table(headers: list[str], rows: list[list[str]], first_left: bool = True) -> str:
    """A plain-text table (also valid Markdown)."""
    widths = [
        max(len(h), *(len(r[k]) for r in rows)) if rows else len(h) for k, h in enumerate(headers)
    ]

    def line(cells: list[str]) -> str:
        out = []
        for k, cell in enumerate(cells):
            out.append(cell.ljust(widths[k]) if k == 0 and first_left else cell.rjust(widths[k]))
        return "| " + " | ".join(out) + " |"

    sep = (
        "|"
        + "|".join(
            ("-" * (w + 2)) if (k == 0 and first_left) else ("-" * (w + 1) + ":")
            for k, w in enumerate(widths)
        )
        + "|"
    )
    return "\n".join([line(headers), sep, *(line(r) for r in rows)])


def _ratio(rps: float, ceiling: float | None) -> float:
    return rps / ceiling if ceiling else float("nan")


def phase_table(
    phases: list[PhaseResult],
    ceiling_rps: Callable[[str], float | None],
    db_ceiling_rps: Callable[[str], float | None] = lambda generator: None,
) -> str:
    """One row per phase; the ratios are to the bare ceiling and to the
    database-backed one measured with the same generator
    (``ceiling_rps(generator)``, ``db_ceiling_rps(generator)``). CPU per
    request divides a phase's CPU seconds (warm-up included) by the requests
    sent, warm-up included."""
    headers = [
        "phase", "gen", "req/s", "p50 ms", "p99 ms", "errors", "x ceiling", "x db ceiling",
        "srv CPU s", "db CPU s", "srv ms/req", "db ms/req", "gen CPU s", "gen µs/req",
        "srv peak RSS MB",
    ]  # fmt: skip
    rows = []
    for p in phases:
        sent = p.sent or p.requests
        per_req = p.generator_cpu_s / p.requests * 1e6 if p.requests else float("nan")
        srv_ms = p.server_cpu_s / sent * 1e3 if sent else float("nan")
        db_ms = p.db_cpu_s / sent * 1e3 if sent else float("nan")
        rows.append([
            p.name + ("" if p.complete else " (incomplete)"), p.generator,
            _num(p.rps, 0), _num(p.p50_ms, 2), _num(p.p99_ms, 2), f"{p.errors:,}",
            _num(_ratio(p.rps, ceiling_rps(p.generator)), 3),
            _num(_ratio(p.rps, db_ceiling_rps(p.generator)), 3),
            _num(p.server_cpu_s, 1), _num(p.db_cpu_s, 1), _num(srv_ms, 3), _num(db_ms, 3),
            _num(p.generator_cpu_s, 1), _num(per_req, 0), _num(p.server_peak_rss_mb, 0),
        ])  # fmt: skip
    return table(headers, rows)


def ops_table(ops: dict[str, OpSummary]) -> str:
    headers = ["operation", "requests", "req/s", "p50 ms", "p99 ms", "max ms", "errors"]
    rows = [
        [
            o.label,
            f"{o.requests:,}",
            _num(o.rps, 0),
            _num(o.p50_ms, 2),
            _num(o.p99_ms, 2),
            _num(o.max_ms, 1),
            f"{o.errors:,}",
        ]
        for o in ops.values()
    ]
    return table(headers, rows)


def peer_table(ours: PhaseResult, peer: PhaseResult) -> str:
    """Per operation, side by side, with the ratio of requests/s (ours / peer)
    and of p99 (peer / ours: above 1 means ours is lower)."""
    headers = [
        "operation",
        "ours req/s",
        "ours p50",
        "ours p99",
        "ours err",
        "peer req/s",
        "peer p50",
        "peer p99",
        "peer err",
        "req/s ratio",
        "p99 ratio (peer/ours)",
    ]
    rows = []
    labels = list(dict.fromkeys([*ours.ops, *peer.ops]))
    for label in labels:
        a, b = ours.ops.get(label), peer.ops.get(label)
        rows.append(
            [
                label,
                _num(a.rps, 0) if a else "-",
                _num(a.p50_ms, 1) if a else "-",
                _num(a.p99_ms, 1) if a else "-",
                f"{a.errors:,}" if a else "-",
                _num(b.rps, 0) if b else "-",
                _num(b.p50_ms, 1) if b else "-",
                _num(b.p99_ms, 1) if b else "-",
                f"{b.errors:,}" if b else "-",
                _num(a.rps / b.rps, 2) if a and b and b.rps else "-",
                _num(b.p99_ms / a.p99_ms, 2) if a and b and a.p99_ms else "-",
            ]
        )
    rows.append(
        [
            "overall",
            _num(ours.rps, 0),
            _num(ours.p50_ms, 1),
            _num(ours.p99_ms, 1),
            f"{ours.errors:,}",
            _num(peer.rps, 0),
            _num(peer.p50_ms, 1),
            _num(peer.p99_ms, 1),
            f"{peer.errors:,}",
            _num(ours.rps / peer.rps, 2) if peer.rps else "-",
            _num(peer.p99_ms / ours.p99_ms, 2) if ours.p99_ms else "-",
        ]
    )
    return table(headers, rows)


def error_details(phases: list[PhaseResult]) -> str:
    lines = []
    for p in phases:
        for message in p.worker_errors:
            lines.append(f"  {p.name}: generator: {message}")
        for op in p.ops.values():
            if op.errors:
                statuses = ", ".join(f"{k} x{v}" for k, v in op.statuses.items())
                lines.append(f"  {p.name} / {op.label}: {op.errors:,} errors (statuses {statuses})")
                lines.extend(f"      {s}" for s in op.error_samples)
    return "\n".join(lines)


def _plain(value: Any) -> Any:
    if is_dataclass(value) and not isinstance(value, type):
        return _plain(asdict(value))
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    if isinstance(value, float) and math.isnan(value):
        return None
    return value


def write_json(path: Path, document: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(_plain(document), indent=2, default=str) + "\n")


def load_phase(raw: dict[str, Any]) -> PhaseResult:
    """A :class:`PhaseResult` read back from a result file."""
    fields = dict(raw)
    fields["ops"] = {k: OpSummary(**v) for k, v in raw["ops"].items()}
    for key in ("rps", "p50_ms", "p99_ms", "server_cpu_s", "db_cpu_s", "server_peak_rss_mb"):
        if fields.get(key) is None:
            fields[key] = float("nan")
    for op in fields["ops"].values():
        for key in ("p50_ms", "p90_ms", "p99_ms", "max_ms", "mean_ms"):
            if getattr(op, key) is None:
                setattr(op, key, float("nan"))
    return PhaseResult(**fields)


def markdown(document: dict[str, Any]) -> str:
    """The tables of a result file, as Markdown (for docs/benchmarks.md)."""
    out: list[str] = []
    ceilings = document.get("ceiling_rps") or {}
    db_ceilings = document.get("db_ceiling_rps") or {}
    phases = [
        load_phase(p)
        for p in [*document["ceiling"], *document.get("db_ceiling", []), *document["phases"]]
    ]
    if phases:
        out.append(phase_table(phases, ceilings.get, db_ceilings.get))
    cycle = document.get("entra_cycle")
    if cycle:
        c = load_phase(cycle)
        objects = c.info.get("users_created", 0) + c.info.get("groups_created", 0)
        out.append(
            f"\nEntra initial cycle: {c.info.get('users_created', 0):,} users, "
            f"{c.info.get('groups_created', 0):,} groups, {c.info.get('member_patches', 0):,} "
            f"membership PATCHes in {c.wall_s:,.1f} s, {c.requests:,} requests = "
            f"{c.rps:,.0f} req/s, {objects / c.wall_s * 3600:,.0f} objects/hour"
            + ("" if c.complete else " (incomplete: stopped at the timeout)")
            + "\n"
        )
        out.append(ops_table(c.ops))
    peer = document.get("peer") or {}
    if peer.get("ours") and peer.get("theirs"):
        out.append(f"\nSide by side with {peer.get('peer')}:\n")
        out.append(peer_table(load_phase(peer["ours"]), load_phase(peer["theirs"])))
    return "\n".join(out)


def main(argv: list[str] | None = None) -> None:
    """``python -m bench.report bench/results/<file>.json``: its tables in Markdown."""
    import sys

    for name in argv if argv is not None else sys.argv[1:]:
        print(markdown(json.loads(Path(name).read_text())))


if __name__ == "__main__":
    main()
