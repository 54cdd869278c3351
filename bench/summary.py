"""What a run measured (:class:`Run`), printed as tables and kept as JSON."""

from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from . import report
from .load import PhaseResult
from .phases import PAGE
from .report import say


@dataclass(slots=True)
class Run:
    """Everything one run measured, in the order it was measured."""

    args: argparse.Namespace
    started: str
    machine: dict[str, Any] = field(default_factory=dict)
    seed: dict[str, Any] = field(default_factory=dict)
    ceiling: list[PhaseResult] = field(default_factory=list)
    db_ceiling: list[PhaseResult] = field(default_factory=list)
    """The database-backed ceiling (bench.ceiling), PostgreSQL only."""
    phases: list[PhaseResult] = field(default_factory=list)
    cycle: PhaseResult | None = None
    peer_ours: PhaseResult | None = None
    peer_theirs: PhaseResult | None = None
    peer_note: str = ""
    deep_page: dict[str, Any] = field(default_factory=dict)
    explain: list[dict[str, Any]] = field(default_factory=list)
    explain_problem: str | None = None
    notes: list[str] = field(default_factory=list)
    server_overall_peak_rss_mb: float = 0.0

    def ceiling_rps(self, generator: str = "python") -> float | None:
        """Mean requests/s of the ceiling measured with ``generator``."""
        values = [c.rps for c in self.ceiling if c.requests and c.generator == generator]
        return sum(values) / len(values) if values else None

    def db_ceiling_rps(self, generator: str = "python") -> float | None:
        """Mean requests/s of the database-backed ceiling measured with ``generator``."""
        values = [c.rps for c in self.db_ceiling if c.requests and c.generator == generator]
        return sum(values) / len(values) if values else None


def print_report(run: Run) -> None:
    args = run.args
    say("")
    say(
        f"== idstore benchmark, {run.started}, {args.users:,} users on {args.db}, "
        f"{args.workers} server worker(s), concurrency {args.concurrency}, "
        f"{args.duration:g} s per phase =="
    )
    say(
        f"machine: {run.machine.get('nproc')} CPUs ({run.machine.get('cpu', '?')}), "
        f"{run.machine.get('memory_gib')} GiB, PostgreSQL {run.machine.get('postgresql', '-')}"
    )
    if run.machine.get("python_build"):
        say(f"python: {run.machine.get('python')} ({run.machine['python_build']})")
    git = run.machine.get("git") or {}
    if git.get("head"):
        changed = git.get("changed") or []
        say(
            f"code: commit {git['head']}"
            + (f" with uncommitted changes to {', '.join(changed)}" if changed else "")
        )
    seed_t = run.seed.get("timings_s", {})
    say(
        f"seeding: {seed_t.get('total_s', 0):.1f} s "
        + ", ".join(f"{k[:-2]} {v:.1f} s" for k, v in seed_t.items() if k != "total_s")
    )
    for note in run.notes:
        say(f"note: {note}")
    for label, results, mean in (
        ("ceiling", run.ceiling, run.ceiling_rps),
        ("database-backed ceiling", run.db_ceiling, run.db_ceiling_rps),
    ):
        for generator in ("python", "wrk"):
            measured_by = [c for c in results if c.generator == generator]
            ceiling = mean(generator)
            if measured_by and ceiling:
                spread = ", ".join(f"{c.rps:,.0f}" for c in measured_by)
                say(f"{label} ({generator} generator): {ceiling:,.0f} req/s (mean of {spread})")
    rows = [*run.ceiling, *run.db_ceiling, *run.phases]
    if rows:
        say("")
        say(report.phase_table(rows, run.ceiling_rps, run.db_ceiling_rps))
    if run.deep_page:
        say(f"deep page: page {run.deep_page['page']:,} of {PAGE} ({run.deep_page['how']})")
    if run.cycle:
        c = run.cycle
        objects = c.info.get("users_created", 0) + c.info.get("groups_created", 0)
        say("")
        planned_groups = max(1, args.cycle_users // 100)
        say(
            f"Entra initial cycle: {c.info.get('users_created', 0):,} of {args.cycle_users:,} "
            f"users, {c.info.get('groups_created', 0):,} of {planned_groups:,} groups, "
            f"{c.info.get('member_patches', 0):,} membership PATCHes in {c.wall_s:.1f} s = "
            f"{c.rps:,.0f} req/s, {objects / c.wall_s * 3600 if c.wall_s else 0:,.0f} "
            "objects/hour"
            + (
                ""
                if c.complete
                else f" (INCOMPLETE: stopped at the {args.cycle_timeout:g} s timeout or failed)"
            )
        )
        planned = 2 * args.cycle_users + 2 * planned_groups + args.cycle_users // 10
        if not c.complete and c.requests:
            say(
                f"  at that pace the whole cycle ({planned:,} requests) would take "
                f"{c.wall_s * planned / c.requests / 60:,.1f} min"
            )
        say(report.ops_table(c.ops))
    if run.peer_ours and run.peer_theirs:
        say("")
        say(
            f"side by side with {run.peer_note}, N={args.peer_users:,}, concurrency "
            f"{args.concurrency} (ours on {args.db}, the peer in memory):"
        )
        say(report.peer_table(run.peer_ours, run.peer_theirs))
        for r in (run.peer_ours, run.peer_theirs):
            say(
                f"  {r.name}: {r.requests:,} requests in {r.wall_s:.1f} s, server CPU "
                f"{r.server_cpu_s:.1f} s, generator CPU {r.generator_cpu_s:.1f} s, peak RSS "
                f"{r.server_peak_rss_mb:.0f} MB, {r.connects:,} connections opened"
                + ("" if r.complete else " (INCOMPLETE: timeout or failure)")
            )
    elif run.peer_note and not run.peer_theirs:
        say(f"peer: {run.peer_note}")
    everything = [*rows, *(x for x in (run.cycle, run.peer_ours, run.peer_theirs) if x)]
    details = report.error_details(everything)
    if details:
        say("")
        say("errors:")
        say(details)
    for plan in run.explain:
        say("")
        say(f"EXPLAIN (ANALYZE, BUFFERS) — {plan['title']}:")
        sql = " ".join(plan["sql"].split())
        if len(sql) > 400:
            sql = f"{sql[:200]} … {sql[-200:]}  (whole statement in the JSON)"
        say(f"  {sql}   -- {plan['params']}")
        say("\n".join("    " + line for line in plan["plan"].splitlines()))
    if run.explain_problem:
        say(f"(explain: {run.explain_problem})")
    if run.server_overall_peak_rss_mb:
        say(f"\nserver peak RSS over the whole run: {run.server_overall_peak_rss_mb:.0f} MB")


def document(run: Run, argv: list[str], status: int) -> dict[str, Any]:
    """The result file's content."""
    args = run.args
    return {
        "started": run.started,
        "command": " ".join([Path(sys.executable).name, "-m", "bench.run", *argv]),
        "args": {k: (sorted(v) if isinstance(v, set) else v) for k, v in vars(args).items()},
        "machine": run.machine,
        "seed": run.seed,
        "notes": run.notes,
        "ceiling_rps": {g: run.ceiling_rps(g) for g in ("python", "wrk")},
        "ceiling": run.ceiling,
        "db_ceiling_rps": {g: run.db_ceiling_rps(g) for g in ("python", "wrk")},
        "db_ceiling": run.db_ceiling,
        "phases": run.phases,
        "deep_page": run.deep_page,
        "entra_cycle": run.cycle,
        "peer": {"peer": run.peer_note, "ours": run.peer_ours, "theirs": run.peer_theirs},
        "explain": run.explain,
        "server_overall_peak_rss_mb": run.server_overall_peak_rss_mb,
        "exit_status": status,
    }
