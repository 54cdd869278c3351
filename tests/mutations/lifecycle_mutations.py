"""Hand mutation check of identity_store/lifecycle.py (issue 11).

Each mutation below is one small, plausible mistake in a lifecycle rule (a
boundary, a state forgotten, a field of the history dropped). The lifecycle
tests must fail for every one of them ("killed"); a mutation they survive is
a rule no test holds, and a row is missing from the tables.

    .venv/bin/python tests/mutations/lifecycle_mutations.py           # all, 2 at a time
    .venv/bin/python tests/mutations/lifecycle_mutations.py -k cutoff # names with "cutoff"
    .venv/bin/python tests/mutations/lifecycle_mutations.py --suite   # whole suite for each
    .venv/bin/python tests/mutations/lifecycle_mutations.py --without-tables  # suite before

Every mutation is applied to a copy of the repository's files in a
temporary directory (the working tree is never touched), where pytest
runs the lifecycle tests (both databases, as conftest.py decides), stopping
at the first failure, which is reported as the test that killed it. Exit 1
when a mutation survives, or when a mutation no longer applies (its text is
not in lifecycle.py exactly once: update the list with the code).

Not part of the normal suite run (pytest collects ``test_*.py`` only).
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
TARGET = Path("identity_store/lifecycle.py")
LIFECYCLE_TESTS = (
    "tests/test_lifecycle_rules.py",
    "tests/test_lifecycle_writes.py",
    "tests/test_lifecycle_admin.py",
)
TABLES = (*LIFECYCLE_TESTS, "tests/test_user_commands.py", "tests/scim/test_lifecycle.py")
"""The tests written with this check (issue 11); ``--without-tables`` leaves them out."""
TIMEOUT = 900


@dataclass(frozen=True)
class Mutation:
    name: str
    what: str
    edits: tuple[tuple[str, str], ...]
    """(text of lifecycle.py, what it becomes); each text must occur exactly once."""


def m(name: str, what: str, *edits: tuple[str, str]) -> Mutation:
    return Mutation(name, what, edits)


TIMEDELTA = (
    "from datetime import UTC, datetime, time\n",
    "from datetime import UTC, datetime, time, timedelta\n",
)

MUTATIONS = [
    # -- What suspends a user (is_suspended, expired)
    m(
        "blocked-ignored",
        "is_suspended ignores blocked",
        (
            "user.active is False or user.blocked or user.deleted_at",
            "user.active is False or user.deleted_at",
        ),
    ),
    m(
        "active-falsy",
        "active=None (unassigned) read as false",
        ("if user.active is False or", "if not user.active or"),
    ),
    m(
        "deleted-not-suspended",
        "is_suspended ignores a SCIM delete",
        (" or user.deleted_at is not None:\n        return True", ":\n        return True"),
    ),
    m(
        "expiry-backwards",
        "expired reads the date backwards",
        ("user.expiration_date <= now", "user.expiration_date >= now"),
    ),
    m(
        "expiry-strict",
        "expired: < instead of <= (a date equal to now not passed)",
        ("user.expiration_date <= now", "user.expiration_date < now"),
    ),
    # -- target_state
    m(
        "inactive-not-sticky",
        "INACTIVE no longer sticky (back to SUSPENDED on a write)",
        (
            "    if suspended and current is Lifecycle.INACTIVE:\n"
            "        return Lifecycle.INACTIVE  # a person's or a service account's\n",
            "",
        ),
    ),
    m(
        "error-not-sticky",
        "ERROR no longer sticky (a write moves it to ACTIVE/CREATED)",
        ("    if current is Lifecycle.ERROR:\n        return Lifecycle.ERROR\n", ""),
    ),
    m(
        "error-beats-suspension",
        "an ERROR user with active=false stays ERROR",
        (
            "    if suspended:\n        return Lifecycle.SUSPENDED\n"
            "    if current is Lifecycle.ERROR:\n        return Lifecycle.ERROR\n",
            "    if current is Lifecycle.ERROR:\n        return Lifecycle.ERROR\n"
            "    if suspended:\n        return Lifecycle.SUSPENDED\n",
        ),
    ),
    m(
        "required-any",
        "one required attribute is enough (any instead of all)",
        (
            "return all(getattr(user, name, None) for name in required)",
            "return any(getattr(user, name, None) for name in required)",
        ),
    ),
    m(
        "required-empty-counts",
        "an empty string counts as present",
        (
            "return all(getattr(user, name, None) for name in required)",
            "return all(getattr(user, name, None) is not None for name in required)",
        ),
    ),
    m(
        "deleted-service-account-active-write",
        "target_state leaves a deleted service account ACTIVE",
        (
            "        if user.deleted_at is not None:\n            return Lifecycle.INACTIVE\n",
            "        if user.deleted_at is not None:\n            return Lifecycle.ACTIVE\n",
        ),
    ),
    m(
        "service-account-never-suspended",
        "a service account ignores active=false, blocked, expiry",
        (
            "return Lifecycle.SUSPENDED if suspended else Lifecycle.ACTIVE",
            "return Lifecycle.ACTIVE",
        ),
    ),
    # -- after_delete
    m(
        "deleted-service-account-active",
        "after_delete leaves a service account ACTIVE",
        (
            "    if user.user_type == UserType.SERVICE_ACCOUNT.value:\n"
            "        return Lifecycle.INACTIVE\n    return Lifecycle.SUSPENDED",
            "    if user.user_type == UserType.SERVICE_ACCOUNT.value:\n"
            "        return Lifecycle.ACTIVE\n    return Lifecycle.SUSPENDED",
        ),
    ),
    m(
        "deleted-person-inactive",
        "after_delete makes a person INACTIVE at once",
        (
            "        return Lifecycle.INACTIVE\n    return Lifecycle.SUSPENDED\n\n\n"
            "def after_delete_clause",
            "        return Lifecycle.INACTIVE\n    return Lifecycle.INACTIVE\n\n\n"
            "def after_delete_clause",
        ),
    ),
    m(
        "deleted-service-account-active-in-sql",
        "after_delete_clause leaves a service account ACTIVE",
        (
            "(User.user_type == UserType.SERVICE_ACCOUNT.value, Lifecycle.INACTIVE.value)",
            "(User.user_type == UserType.SERVICE_ACCOUNT.value, Lifecycle.ACTIVE.value)",
        ),
    ),
    m(
        "deleted-person-inactive-in-sql",
        "after_delete_clause makes a person INACTIVE at once",
        (
            "        else_=Lifecycle.SUSPENDED.value,",
            "        else_=Lifecycle.INACTIVE.value,",
        ),
    ),
    m(
        "deleted-in-sql-by-another-type",
        "after_delete_clause tells service accounts by another type",
        (
            "(User.user_type == UserType.SERVICE_ACCOUNT.value, Lifecycle.INACTIVE.value)",
            "(User.user_type == UserType.PERSON.value, Lifecycle.INACTIVE.value)",
        ),
    ),
    # -- after_profile_sync
    m(
        "profile-sync-threshold-late",
        "ERROR one run late (> instead of >=)",
        ("attempts >= max_attempts", "attempts > max_attempts"),
    ),
    m(
        "profile-sync-threshold-early",
        "ERROR one run early",
        ("attempts >= max_attempts", "attempts >= max_attempts - 1"),
    ),
    m(
        "profile-sync-any-state",
        "the profile sync moves users in any state",
        (
            "    if user.lifecycle != Lifecycle.CREATED.value:\n"
            "        return Lifecycle(user.lifecycle)\n",
            "",
        ),
    ),
    m(
        "profile-sync-gives-up-when-filled",
        "at the last run, ERROR even when the attributes were filled",
        (
            "    if has_required_attributes(user, required):\n        return Lifecycle.ACTIVE\n"
            "    return Lifecycle.ERROR if attempts >= max_attempts else Lifecycle.CREATED",
            "    if attempts >= max_attempts:\n        return Lifecycle.ERROR\n"
            "    return Lifecycle.ACTIVE if has_required_attributes(user, required)"
            " else Lifecycle.CREATED",
        ),
    ),
    # -- after_reset
    m(
        "reset-does-nothing",
        "after_reset leaves ERROR as it is",
        (
            "    if user.lifecycle == Lifecycle.ERROR.value:\n        return Lifecycle.CREATED\n",
            "    if user.lifecycle == Lifecycle.ERROR.value:\n        return Lifecycle.ERROR\n",
        ),
    ),
    m(
        "reset-to-active",
        "after_reset makes an ERROR user ACTIVE",
        (
            "    if user.lifecycle == Lifecycle.ERROR.value:\n        return Lifecycle.CREATED\n",
            "    if user.lifecycle == Lifecycle.ERROR.value:\n        return Lifecycle.ACTIVE\n",
        ),
    ),
    m(
        "reset-any-state",
        "after_reset makes any user CREATED",
        (
            "    return Lifecycle(user.lifecycle)\n\n\nEXPIRY_CANDIDATES",
            "    return Lifecycle.CREATED\n\n\nEXPIRY_CANDIDATES",
        ),
    ),
    # -- expiry_due and its SQL twin
    m(
        "expirable-without-error",
        "an ERROR user never expires",
        (
            "EXPIRABLE = (Lifecycle.CREATED, Lifecycle.ACTIVE, Lifecycle.ERROR)",
            "EXPIRABLE = (Lifecycle.CREATED, Lifecycle.ACTIVE)",
        ),
    ),
    m(
        "expirable-with-suspended",
        "the expiry job takes SUSPENDED users again",
        (
            "EXPIRABLE = (Lifecycle.CREATED, Lifecycle.ACTIVE, Lifecycle.ERROR)",
            "EXPIRABLE = (Lifecycle.CREATED, Lifecycle.ACTIVE, Lifecycle.ERROR,"
            " Lifecycle.SUSPENDED)",
        ),
    ),
    m(
        "expiry-due-deleted",
        "expiry_due takes SCIM-deleted users",
        (
            "        user.deleted_at is None\n        and user.lifecycle in",
            "        user.lifecycle in",
        ),
    ),
    m(
        "expiry-clause-strict",
        "expiry_due_clause: < instead of <=",
        ("User.expiration_date <= now)", "User.expiration_date < now)"),
    ),
    m(
        "expiry-clause-backwards",
        "expiry_due_clause reads the date backwards",
        ("User.expiration_date <= now)", "User.expiration_date >= now)"),
    ),
    m(
        "expiry-clause-states",
        "expiry_due_clause forgets ERROR users (its literal states)",
        ("IN ('CREATED', 'ACTIVE', 'ERROR')", "IN ('CREATED', 'ACTIVE')"),
    ),
    m(
        "expiry-clause-deleted",
        "expiry_due_clause takes SCIM-deleted users",
        ("    User.deleted_at.is_(None),\n    # Literal", "    # Literal"),
    ),
    # -- deletion_cutoff, deletion_due and its SQL twin
    m(
        "cutoff-a-day-early",
        "the grace period is a day longer",
        TIMEDELTA,
        (
            "datetime.combine(local.date(), time(0)",
            "datetime.combine(local.date() - timedelta(days=1), time(0)",
        ),
    ),
    m(
        "cutoff-a-day-late",
        "no grace period: users suspended today are taken",
        TIMEDELTA,
        (
            "datetime.combine(local.date(), time(0)",
            "datetime.combine(local.date() + timedelta(days=1), time(0)",
        ),
    ),
    m(
        "cutoff-in-utc",
        "the day is UTC's, not the jobs' time zone",
        ("local = now.astimezone(ZoneInfo(zone))", 'local = now.astimezone(ZoneInfo("UTC"))'),
    ),
    m(
        "cutoff-in-the-gap",
        "a day without midnight starts at a time that never was",
        ("return midnight.astimezone(UTC).astimezone(local.tzinfo)", "return midnight"),
    ),
    m(
        "deletion-due-inclusive",
        "deletion_due: <= instead of < (suspended at today's start taken)",
        ("user.lifecycle_changed_at < cutoff", "user.lifecycle_changed_at <= cutoff"),
    ),
    m(
        "deletion-due-any-state",
        "deletion_due takes users in any state",
        (
            "return user.lifecycle == Lifecycle.SUSPENDED.value and user.lifecycle_changed_at",
            "return user.lifecycle_changed_at",
        ),
    ),
    m(
        "deletion-clause-inclusive",
        "deletion_due_clause: <= instead of <",
        ("User.lifecycle_changed_at < cutoff,", "User.lifecycle_changed_at <= cutoff,"),
    ),
    m(
        "deletion-clause-not-inactive",
        "deletion_due_clause takes every state but INACTIVE",
        (
            "User.lifecycle == Lifecycle.SUSPENDED.value,",
            "User.lifecycle != Lifecycle.INACTIVE.value,",
        ),
    ),
    # -- history_row and transition
    m(
        "history-from-state",
        "history_row records the new state as 'from'",
        ('"from_state": from_state or None,', '"from_state": to.value,'),
    ),
    m("history-cause", "history_row drops the cause", ('"cause": cause,', '"cause": "updated",')),
    m(
        "history-actor",
        "history_row names no actor",
        ('"actor": actor.name,', '"actor": "system",'),
    ),
    m(
        "history-message",
        "history_row drops the message",
        ('"message": message,', '"message": None,'),
    ),
    m(
        "history-request-id",
        "history_row drops the request id",
        ('"request_id": actor.request_id,', '"request_id": None,'),
    ),
    m(
        "history-job-run",
        "history_row drops the job run",
        ('"job_run_id": actor.job_run_id,', '"job_run_id": None,'),
    ),
    m(
        "transition-records-no-change",
        "transition records a row when the state does not change",
        ("    if user.lifecycle == to.value:\n        return False\n", ""),
    ),
    m(
        "transition-keeps-the-time",
        "transition does not stamp lifecycle_changed_at",
        ("    user.lifecycle_changed_at = at\n", ""),
    ),
]


def mutated(source: str, mutation: Mutation, target: Path = TARGET) -> str:
    for old, new in mutation.edits:
        found = source.count(old)
        if found != 1:
            raise ValueError(f"{mutation.name}: {old!r} occurs {found} times in {target}")
        source = source.replace(old, new)
    return source


def copy_tree(into: Path) -> None:
    """The repository's files as they are in the working tree (tracked, and
    new ones git does not ignore): some tests read README.md, docs/, the
    Dockerfile."""
    git = shutil.which("git")
    if git is None:
        raise RuntimeError("git is needed to list the repository's files")
    listed = subprocess.run(
        [git, "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        cwd=ROOT,
        capture_output=True,
        check=True,
    ).stdout.decode()
    for name in filter(None, listed.split("\0")):
        source = ROOT / name
        if source.is_file():
            (into / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, into / name)


def pytest_in(copy: Path, tests: list[str]) -> tuple[str, str]:
    """Run pytest in ``copy``: ("passed" | "failed" | "timeout", first failing test)."""
    env = {**os.environ, "PYTHONPATH": str(copy), "PYTHONDONTWRITEBYTECODE": "1"}
    command = [sys.executable, "-m", "pytest", "-x", "-q", "-p", "no:cacheprovider", *tests]
    try:
        run = subprocess.run(
            command, cwd=copy, env=env, capture_output=True, text=True, timeout=TIMEOUT, check=False
        )
    except subprocess.TimeoutExpired:
        return "timeout", "-"
    if run.returncode == 0:
        return "passed", "-"
    failed = re.search(r"^(?:FAILED|ERROR) (.+?)(?: - .*)?$", run.stdout, re.MULTILINE)
    return "failed", failed.group(1) if failed else (run.stdout + run.stderr)[-300:]


def check(
    mutation: Mutation | None,
    tests: list[str],
    target: Path = TARGET,
    module: str = "identity_store.lifecycle",
) -> tuple[str, str]:
    """Apply ``mutation`` (``None``: none) to ``target`` in a fresh copy and
    run ``tests`` there (``module`` must be imported from the copy)."""
    with tempfile.TemporaryDirectory(prefix="mutation-") as tmp:
        copy = Path(tmp)
        copy_tree(copy)
        if mutation is not None:
            path = copy / target
            path.write_text(mutated(path.read_text(), mutation, target))
        probe = subprocess.run(
            [sys.executable, "-c", f"import {module} as m; print(m.__file__)"],
            cwd=copy,
            env={**os.environ, "PYTHONPATH": str(copy)},
            capture_output=True,
            text=True,
            check=True,
        )
        if not probe.stdout.strip().startswith(str(copy)):
            raise RuntimeError(f"the copy's package is not the one imported: {probe.stdout}")
        return pytest_in(copy, tests)


def run_mutations(
    description: str,
    mutations: list[Mutation],
    target: Path,
    check: Callable[[Mutation | None], tuple[str, str]],
) -> int:
    """The command of a mutation script: apply each of ``mutations`` (or
    those ``-k`` names) to ``target`` with ``check``; 1 when one survives or
    no longer applies."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("-k", help="only mutations whose name contains this")
    parser.add_argument("--jobs", type=int, default=2)
    args = parser.parse_args()
    chosen = [x for x in mutations if not args.k or args.k in x.name]
    source = (ROOT / target).read_text()
    stale = []
    for mutation in chosen:
        try:
            mutated(source, mutation, target)
        except ValueError as exc:
            stale.append(str(exc))
    if stale:
        print("\n".join(stale), file=sys.stderr)
        return 1
    started = time.monotonic()
    baseline, detail = check(None)
    if baseline != "passed":
        print(f"the tests fail without any mutation: {detail}", file=sys.stderr)
        return 1
    print(f"unmutated: passed; {len(chosen)} mutations")
    survived = 0
    with ThreadPoolExecutor(max_workers=max(1, args.jobs)) as pool:
        for mutation, (outcome, test) in pool.map(lambda x: (x, check(x)), chosen):
            result = "survived" if outcome == "passed" else "killed"
            survived += outcome == "passed"
            print(f"| {mutation.name:<36} | {result:<8} | {test} |", flush=True)
    print(
        f"{len(chosen) - survived} killed, {survived} survived, "
        f"in {time.monotonic() - started:.0f} s"
    )
    return 1 if survived else 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("-k", help="only mutations whose name contains this")
    parser.add_argument("--suite", action="store_true", help="run the whole suite per mutation")
    parser.add_argument(
        "--without-tables",
        action="store_true",
        help="the whole suite but the tests written with this check (what it caught before)",
    )
    parser.add_argument("--jobs", type=int, default=2, help="mutations checked at once (2)")
    parser.add_argument("pytest_args", nargs="*", help="more arguments of pytest (after --)")
    args = parser.parse_args()
    tests = [] if args.suite else list(LIFECYCLE_TESTS)
    if args.without_tables:
        tests = [f"--ignore={path}" for path in TABLES]
    tests += args.pytest_args
    chosen = [x for x in MUTATIONS if not args.k or args.k in x.name]
    source = (ROOT / TARGET).read_text()
    stale = []
    for mutation in chosen:
        try:
            mutated(source, mutation)
        except ValueError as exc:
            stale.append(str(exc))
    if stale:
        print("\n".join(stale), file=sys.stderr)
        return 1

    started = time.monotonic()
    baseline, detail = check(None, tests)
    if baseline != "passed":
        print(f"the tests fail without any mutation: {detail}", file=sys.stderr)
        return 1
    print(f"unmutated: passed ({time.monotonic() - started:.0f} s); {len(chosen)} mutations")
    print(f"| {'mutation':<36} | result   | first failing test |")
    print(f"|{'-' * 38}|----------|--------------------|")
    survived = 0
    with ThreadPoolExecutor(max_workers=max(1, args.jobs)) as pool:
        results = pool.map(lambda x: (x, check(x, tests)), chosen)
        for mutation, (outcome, test) in results:
            result = "survived" if outcome == "passed" else "killed"
            survived += outcome == "passed"
            if outcome == "timeout":
                test = "(timed out)"
            print(f"| {mutation.name:<36} | {result:<8} | {test} |", flush=True)
    print(
        f"{len(chosen) - survived} killed, {survived} survived, "
        f"in {time.monotonic() - started:.0f} s"
    )
    return 1 if survived else 0


if __name__ == "__main__":
    sys.exit(main())
