"""``idstore user show|reset``, run as a real process against real databases
(SQLite file and PostgreSQL); the limits on the id read from the command line."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from typing import Any

import pytest
from sqlalchemy import delete

from identity_store import lifecycle, lifecycle_admin, users
from identity_store.actor import Actor, job_actor
from identity_store.models import Lifecycle, User
from identity_store.store import Store
from identity_store.users import UserInput
from idstore import cli

IDSTORE = [sys.executable, "-m", "idstore"]
ENTRA = Actor(name="token:entra", request_id="req-create")
GAVE_UP = "idp_username still missing after 3 look-ups"
UNKNOWN = "01ZZZZZZZZZZZZZZZZZZZZZZZZ"
SQLITE_ONLY = pytest.mark.parametrize("backend", ["sqlite"], indirect=True, scope="session")
"""For what the command prints rather than what the store reads (both
databases are the use cases' tests, tests/test_lifecycle_admin.py): one
process start fewer on PostgreSQL."""


def _run(args: list[str], store: Store) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "DATABASE_URL": store.settings.database_url}
    return subprocess.run(
        [*IDSTORE, *args], env=env, capture_output=True, text=True, timeout=60, check=False
    )


async def _in_error(store: Store, name: str = "ada@corp.example") -> str:
    """A user the profile sync gave up on (its run #12)."""
    user_id = (await users.create_user(store, UserInput(user_name=name), ENTRA)).user.id

    async def work(session: Any) -> None:
        user = await session.get(User, user_id)
        user.profile_sync_attempts = 3
        user.status = [
            {
                "name": "PROFILE_SYNC",
                "status": "ERROR",
                "message": GAVE_UP,
                "updated_at": "2026-12-02T10:04:09.538751+00:00",
            }
        ]
        lifecycle.transition(
            session, user, Lifecycle.ERROR, "profile-sync", job_actor("profile-sync", 12), GAVE_UP
        )

    await store.transaction(work)
    return user_id


async def test_user_show_prints_the_state_its_steps_and_its_history(store: Store) -> None:
    user_id = await _in_error(store)
    result = _run(["user", "show", user_id], store)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0] == f"user {user_id}  ada@corp.example  PERSON"
    assert lines[1].startswith("lifecycle   ERROR since 20")
    assert "profile sync attempts  3" in lines
    assert f"  PROFILE_SYNC   ERROR    2026-12-02T10:04:09+00:00  {GAVE_UP}" in lines
    history = lines[lines.index("history (oldest first)") + 1 :]
    assert len(history) == 2
    assert "        - -> CREATED   created        token:entra  req-create" in history[0]
    assert (
        "  CREATED -> ERROR     profile-sync   job:profile-sync  job-run-12  run #12"
        in (history[1])
    )
    assert history[1].endswith(GAVE_UP)


async def test_user_show_json_is_the_lifecycle_the_store_reads(store: Store) -> None:
    user_id = await _in_error(store)
    result = _run(["user", "show", user_id, "--json"], store)
    assert result.returncode == 0, result.stderr
    shown = json.loads(result.stdout)
    view = await lifecycle_admin.user_lifecycle(store, user_id)
    assert shown["id"] == user_id
    assert (shown["lifecycle"], shown["stored"], shown["profile_sync_attempts"]) == (
        "ERROR",
        True,
        3,
    )
    assert shown["lifecycle_changed_at"] == view.lifecycle_changed_at.isoformat()  # type: ignore[union-attr]
    assert (shown["active"], shown["blocked"], shown["deleted_at"]) == (True, None, None)
    assert shown["status"] == view.status
    assert [(h["from"], h["to"], h["cause"], h["job_run_id"]) for h in shown["history"]] == [
        (None, "CREATED", "created", None),
        ("CREATED", "ERROR", "profile-sync", 12),
    ]


async def test_user_reset_says_so_in_one_line_and_a_second_reset_is_refused(
    store: Store,
) -> None:
    """Exit 0 and one line; the history names the operator and a request id.
    Again: exit 2, the reason on stderr, nothing on stdout, nothing written."""
    user_id = await _in_error(store)
    result = _run(["user", "reset", user_id], store)
    assert result.returncode == 0, result.stderr
    assert result.stdout == (
        f"user {user_id} reset: ERROR -> CREATED; the next profile sync looks it up again\n"
    )
    view = await lifecycle_admin.user_lifecycle(store, user_id)
    assert (view.lifecycle, view.profile_sync_attempts) == ("CREATED", 0)
    last = view.history[-1]
    assert (last.from_state, last.to_state, last.cause) == ("ERROR", "CREATED", "reset")
    assert last.actor.startswith("cli")
    assert last.request_id is not None
    assert last.request_id.startswith("cli-")

    again = _run(["user", "reset", user_id], store)
    assert again.returncode == 2
    assert again.stdout == ""
    assert again.stderr == (
        f"idstore: user {user_id} is CREATED, not ERROR: only a user in ERROR can be reset\n"
    )
    assert len((await lifecycle_admin.user_lifecycle(store, user_id)).history) == 3


@pytest.mark.parametrize("command", ["show", "reset"])
@SQLITE_ONLY
async def test_an_unknown_id_is_no_user(store: Store, command: str) -> None:
    result = _run(["user", command, UNKNOWN], store)
    assert result.returncode == 2
    assert result.stderr == f"idstore: no user {UNKNOWN}\n"
    assert result.stdout == ""


@SQLITE_ONLY
async def test_user_show_of_a_removed_user_prints_its_history(store: Store) -> None:
    """A user the deletion sync removed for good (hard delete): its history."""
    user_id = (
        await users.create_user(store, UserInput(user_name="gone@corp.example"), ENTRA)
    ).user.id
    await users.delete_user(store, user_id, ENTRA)

    async def remove(session: Any) -> None:
        await session.execute(delete(User).where(User.id == user_id))

    await store.transaction(remove)
    result = _run(["user", "show", user_id], store)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[:2] == [
        f"user {user_id}  -  -",
        "removed by the deletion sync (hard delete): only its history is kept",
    ]
    assert [line.split()[3] for line in lines[3:]] == ["CREATED", "SUSPENDED"]


@SQLITE_ONLY
async def test_user_show_escapes_control_characters_a_client_wrote(store: Store) -> None:
    """A userName with a terminal escape sequence is printed escaped, never sent
    to the operator's terminal as it is."""
    user_id = (await users.create_user(store, UserInput(user_name="eve\x1b[2J\x07"), ENTRA)).user.id
    result = _run(["user", "show", user_id], store)
    assert result.returncode == 0, result.stderr
    assert "\x1b" not in result.stdout
    assert "\x07" not in result.stdout
    assert f"user {user_id}  eve\\x1b[2J\\x07  PERSON" in result.stdout


@pytest.mark.parametrize(
    "value",
    [
        pytest.param("", id="empty"),
        pytest.param("01AB\x00CD", id="NUL"),
        pytest.param("A" * 65, id="65 characters"),
        pytest.param("A" * 100_000, id="100,000 characters"),
        pytest.param("../../etc/passwd", id="path"),
        pytest.param("x' OR '1'='1", id="quote"),
        pytest.param("01ÅB", id="non-ASCII letter"),
        pytest.param("-1", id="a number"),
    ],
)
@pytest.mark.parametrize("command", ["show", "reset"])
def test_a_user_id_that_cannot_be_one_is_refused_before_any_database(
    command: str, value: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """Exit 2 with argparse's usage line; the value shown is cut at 40 characters."""
    with pytest.raises(SystemExit) as exited:
        cli.build_parser().parse_args(["user", command, value])
    assert exited.value.code == 2
    err = capsys.readouterr().err
    assert "usage: idstore user" in err
    assert len(err) < 1000
    if value and not value.startswith("-"):
        assert "not a user id" in err


def test_the_longest_id_accepted_is_64_letters_and_digits() -> None:
    args = cli.build_parser().parse_args(["user", "show", "A" * 64, "--json"])
    assert (args.id, args.json) == ("A" * 64, True)
