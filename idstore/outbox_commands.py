"""``idstore outbox status|retry|show``: the outbox's backlog, its dead
letters, and putting them back (docs/auth0.md, "Backlog and dead letters")."""

from __future__ import annotations

import argparse
import asyncio
import json
from datetime import UTC, datetime
from typing import Any

from identity_store import outbox
from identity_store.outbox import OutboxRow, TargetStatus
from identity_store.settings import Settings
from identity_store.store import Store
from idstore.cli_common import term, user_id_arg
from idstore.opening import with_store
from idstore.worker_commands import UsageError

MAX_IDS = 1000
"""Row ids one ``retry`` takes (more: ``--dead``)."""


MAX_ROW_ID = 2**63 - 1
"""Largest outbox row id (a PostgreSQL ``bigint``)."""


def _row_id(value: str) -> int:
    digits = value.isascii() and value.isdigit() and len(value) <= 19
    if not digits or not 1 <= int(value) <= MAX_ROW_ID:
        shown = value if len(value) <= 40 else f"{value[:40]}..."
        raise argparse.ArgumentTypeError(f"not an outbox row id: {shown!r}")
    return int(value)


def _iso(value: datetime | None) -> str | None:
    return value.isoformat() if value is not None else None


def _status_json(s: TargetStatus, now: datetime) -> dict[str, Any]:
    age = (now - s.oldest_due_at).total_seconds() if s.oldest_due_at else None
    return {
        "target": s.target,
        "pending": s.pending,
        "due": s.due,
        "usersPending": s.users_pending,
        "inFlight": s.in_flight,
        "oldestDueAgeSeconds": round(age, 1) if age is not None else None,
        "dead": s.dead,
        "done": s.done,
    }


def _row_json(r: OutboxRow) -> dict[str, Any]:
    return {
        "id": r.id,
        "target": r.target,
        "operation": r.operation,
        "aggregateType": r.aggregate_type,
        "aggregateId": r.aggregate_id,
        "status": r.status,
        "attempts": r.attempts,
        "nextAttemptAt": _iso(r.next_attempt_at),
        "createdAt": _iso(r.created_at),
        "processedAt": _iso(r.processed_at),
        "lastError": r.last_error,
        "outcome": r.outcome,
        "requestId": r.request_id,
    }


def _row_line(r: OutboxRow) -> str:
    text = (
        f"#{r.id} {r.target} {r.operation} {r.aggregate_type} {r.aggregate_id} "
        f"{r.status} attempts={r.attempts} created={term(r.created_at)}"
    )
    if r.request_id:
        text += f" request={term(r.request_id)}"
    if r.outcome:
        text += f"\n    outcome: {term(r.outcome)}"
    if r.last_error:
        text += f"\n    error: {term(r.last_error)}"
    return text


def _status(args: argparse.Namespace, settings: Settings) -> int:
    async def work(store: Store) -> tuple[list[TargetStatus], list[OutboxRow]]:
        now = datetime.now(UTC)
        statuses = await outbox.status(store, now=now)
        dead = await outbox.dead_letters(store, target=args.target, limit=args.limit)
        return statuses, dead

    now = datetime.now(UTC)
    statuses, dead = asyncio.run(with_store(settings, work))
    if args.target:
        statuses = [s for s in statuses if s.target == args.target]
    if args.json:
        print(
            json.dumps(
                {
                    "targets": [_status_json(s, now) for s in statuses],
                    "deadLetters": [_row_json(r) for r in dead],
                },
                indent=2,
            )
        )
        return 0
    if not statuses:
        print("the outbox is empty")
    for s in statuses:
        shown = _status_json(s, now)
        age = shown["oldestDueAgeSeconds"]
        print(
            f"{s.target}: {s.pending} pending ({s.users_pending} users, {s.due} due"
            f"{f', oldest due {age:.0f} s ago' if age is not None else ''}), "
            f"{s.in_flight} in flight, {s.dead} dead letters, {s.done} done"
        )
    if dead:
        print(f"\ndead letters (newest {len(dead)}):")
        for r in dead:
            print(_row_line(r))
    return 0


def _retry(args: argparse.Namespace, settings: Settings) -> int:
    if not args.dead and not args.ids:
        raise UsageError("name the rows to retry, or --dead for every dead letter")
    if len(args.ids) > MAX_IDS:
        raise UsageError(f"at most {MAX_IDS} ids; use --dead for more")

    async def work(store: Store) -> list[int]:
        return await outbox.retry(
            store, now=datetime.now(UTC), ids=args.ids, all_dead=args.dead, target=args.target
        )

    put_back = asyncio.run(with_store(settings, work))
    if args.json:
        print(json.dumps({"retried": put_back}))
    else:
        print(f"{len(put_back)} dead letters put back to pending")
    missing = sorted(set(args.ids) - set(put_back))
    if missing:
        print(f"not dead letters (left alone): {', '.join(map(str, missing))}")
        return 1
    return 0


def _show(args: argparse.Namespace, settings: Settings) -> int:
    async def work(store: Store) -> list[OutboxRow]:
        return await outbox.aggregate_rows(store, args.user_id, limit=args.limit)

    rows = asyncio.run(with_store(settings, work))
    if args.json:
        print(json.dumps([_row_json(r) for r in rows], indent=2))
        return 0
    if not rows:
        print("no outbox rows for this id")
    for r in rows:
        print(_row_line(r))
    return 0


def cmd_outbox(args: argparse.Namespace, settings: Settings) -> int:
    handler = {"status": _status, "retry": _retry, "show": _show}[args.outbox_command]
    return handler(args, settings)


def add_parsers(sub: Any) -> None:
    parser = sub.add_parser("outbox", help="the outbox: backlog, dead letters, replay")
    commands = parser.add_subparsers(dest="outbox_command", required=True)
    status = commands.add_parser("status", help="backlog per target, oldest due, dead letters")
    status.add_argument("--target", help="only this target (auth0, rond)")
    status.add_argument("--limit", type=int, default=20, help="dead letters shown")
    status.add_argument("--json", action="store_true")
    retry = commands.add_parser("retry", help="put dead letters back to pending")
    retry.add_argument("ids", nargs="*", type=_row_id, metavar="ID")
    retry.add_argument("--dead", action="store_true", help="every dead letter")
    retry.add_argument("--target", help="only this target's dead letters")
    retry.add_argument("--json", action="store_true")
    show = commands.add_parser("show", help="the outbox rows of one user or group")
    show.add_argument("user_id", type=user_id_arg, metavar="ID")
    show.add_argument("--limit", type=int, default=50)
    show.add_argument("--json", action="store_true")
    parser.set_defaults(handler=cmd_outbox)
