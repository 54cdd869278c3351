"""``idstore user show|reset``: a user's lifecycle from the command line
(docs/operations.md, "Lifecycle"; SPEC §5 "CLI: show a user's state")."""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from datetime import datetime
from typing import Any

from identity_store import lifecycle_admin
from identity_store.errors import NotFoundError
from identity_store.lifecycle_admin import Transition, UserLifecycle
from identity_store.settings import Settings
from idstore.cli_common import cli_actor, term, user_id_arg
from idstore.opening import with_store


def _moment(value: Any) -> str:
    """A step's ``updated_at`` (ISO 8601 text) to the second, as the other times."""
    if isinstance(value, str):
        try:
            return term(datetime.fromisoformat(value))
        except ValueError:
            pass
    return term(value)


def _iso(value: datetime | None) -> str | None:
    return value.isoformat() if value else None


def _transition_json(t: Transition) -> dict[str, Any]:
    return {
        "time": t.occurred_at.isoformat(),
        "from": t.from_state,
        "to": t.to_state,
        "cause": t.cause,
        "actor": t.actor,
        "message": t.message,
        "request_id": t.request_id,
        "job_run_id": t.job_run_id,
    }


def _json(view: UserLifecycle) -> dict[str, Any]:
    return {
        "id": view.user_id,
        "stored": view.stored,
        "userName": view.user_name,
        "userType": view.user_type,
        "lifecycle": view.lifecycle,
        "lifecycle_changed_at": _iso(view.lifecycle_changed_at),
        "status": view.status,
        "profile_sync_attempts": view.profile_sync_attempts,
        "active": view.active,
        "blocked": view.blocked,
        "expiration_date": _iso(view.expiration_date),
        "deleted_at": _iso(view.deleted_at),
        "version": view.version,
        "history": [_transition_json(t) for t in view.history],
    }


def _lines(view: UserLifecycle) -> list[str]:
    lines = [f"user {view.user_id}  {term(view.user_name)}  {term(view.user_type)}"]
    if not view.stored:
        lines.append("removed by the deletion sync (hard delete): only its history is kept")
    else:
        lines += [
            f"lifecycle   {term(view.lifecycle)} since {term(view.lifecycle_changed_at)}",
            f"active      {term(view.active)}",
            f"blocked     {term(view.blocked)}",
            f"expires     {term(view.expiration_date)}",
            f"deleted     {term(view.deleted_at)}",
            f"profile sync attempts  {term(view.profile_sync_attempts)}",
            "status" if view.status else "status      (no steps yet)",
        ]
        for step in view.status:
            lines.append(
                f"  {term(step.get('name')):<14} {term(step.get('status')):<8} "
                f"{_moment(step.get('updated_at'))}  {term(step.get('message'))}"
            )
    lines.append("history (oldest first)")
    for t in view.history:
        run = f"  run #{t.job_run_id}" if t.job_run_id is not None else ""
        message = f"  {term(t.message)}" if t.message else ""
        lines.append(
            f"  {term(t.occurred_at)}  {term(t.from_state):>9} -> {term(t.to_state):<9} "
            f"{term(t.cause):<14} {term(t.actor)}  {term(t.request_id)}{run}{message}"
        )
    return lines


def _no_user(user_id: str) -> int:
    print(f"idstore: no user {user_id}", file=sys.stderr)
    return 2


def cmd_user(args: argparse.Namespace, settings: Settings) -> int:
    if args.user_command == "show":
        return _show(args, settings)
    return _reset(args, settings)


def _show(args: argparse.Namespace, settings: Settings) -> int:
    try:
        view = asyncio.run(
            with_store(settings, lambda store: lifecycle_admin.user_lifecycle(store, args.id))
        )
    except NotFoundError:
        return _no_user(args.id)
    if args.json:
        print(json.dumps(_json(view), indent=2))
    else:
        print("\n".join(_lines(view)))
    return 0


def _reset(args: argparse.Namespace, settings: Settings) -> int:
    actor = cli_actor()
    try:
        view = asyncio.run(
            with_store(settings, lambda store: lifecycle_admin.reset_user(store, args.id, actor))
        )
    except NotFoundError:
        return _no_user(args.id)
    # StateError (not in ERROR) is reported by idstore.cli.main: one line, exit 2.
    print(
        f"user {view.user_id} reset: ERROR -> {view.lifecycle}; "
        "the next profile sync looks it up again"
    )
    return 0


def add_parsers(sub: Any) -> None:
    user = sub.add_parser("user", help="a user's lifecycle: show it, reset a user in ERROR")
    user_sub = user.add_subparsers(dest="user_command", required=True)
    show = user_sub.add_parser(
        "show", help="state, status steps, lifecycle fields and history of a user"
    )
    show.add_argument("id", type=user_id_arg, help="the user's id (SCIM id)")
    show.add_argument("--json", action="store_true", help="print JSON")
    reset = user_sub.add_parser(
        "reset", help="move a user in ERROR back to CREATED for the profile sync"
    )
    reset.add_argument("id", type=user_id_arg, help="the user's id (SCIM id)")
    user.set_defaults(handler=cmd_user)
