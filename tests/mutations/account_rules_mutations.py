"""Hand mutation check of identity_sync/account_rules.py (issue 12): the
Auth0 sync's rules (what the service should hold for a user, the fields an
update sends, the random password, backoff, and what a failed delivery
becomes).

Each mutation is one small, plausible mistake in one rule; the rules' table
tests (tests/sync/test_account_rules.py) must fail for every one of them.

    .venv/bin/python tests/mutations/account_rules_mutations.py        # all
    .venv/bin/python tests/mutations/account_rules_mutations.py -k decide

Same machinery as lifecycle_mutations.py: each mutation is applied to a
copy of the repository in a temporary directory; exit 1 when one survives
or no longer applies. Not part of the normal suite run.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import lifecycle_mutations
from lifecycle_mutations import Mutation, m

TARGET = Path("identity_sync/account_rules.py")
TESTS = ["tests/sync/test_account_rules.py"]

MUTATIONS = [
    m(
        "plan-inactive-forgotten",
        "an INACTIVE user is kept as if live",
        ("if not subject.present or subject.lifecycle == INACTIVE:", "if not subject.present:"),
    ),
    m(
        "plan-hard-delete-swapped",
        "hard delete blocks, soft deletes",
        (
            "gone = Action.DELETE if hard_delete else Action.BLOCK",
            "gone = Action.BLOCK if hard_delete else Action.DELETE",
        ),
    ),
    m(
        "plan-gone-without-account-acts",
        "a gone user without account is acted on",
        (
            '            return Plan(Action.SKIP, f"{why}; no account")\n',
            "            return Plan(gone, why, remote_id=remote)\n",
        ),
    ),
    m(
        "plan-deleted-ignored",
        "a SCIM-deleted user is treated as live",
        ("    if subject.deleted:\n", "    if False:\n"),
    ),
    m(
        "plan-creation-disabled-ignored",
        "authUserCreationDisabled is not honoured",
        ("        if subject.creation_disabled:\n", "        if False:\n"),
    ),
    m(
        "plan-suspended-created",
        "an account is created for a suspended user",
        ("        if subject.lifecycle == SUSPENDED:\n", "        if False:\n"),
    ),
    m(
        "plan-no-email-sent",
        "a user without e-mail is sent anyway",
        ("        if not subject.email:\n", "        if False:\n"),
    ),
    m(
        "plan-blocked-ignores-lifecycle",
        "a CREATED user is created unblocked",
        (
            "blocked = subject.lifecycle != ACTIVE or subject.active is False",
            "blocked = subject.active is False",
        ),
    ),
    m(
        "plan-blocked-ignores-active",
        "active=false does not block",
        ("or subject.active is False or", "or subject.active is None or"),
    ),
    m(
        "plan-blocked-ignores-flag",
        "the blocked flag does not block",
        (" or subject.blocked is True", ""),
    ),
    m(
        "plan-email-case-kept",
        "the e-mail is sent as typed",
        ('email=(subject.email or "").lower(),', 'email=(subject.email or ""),'),
    ),
    m(
        "plan-names-not-cut",
        "names longer than Auth0 takes are sent whole",
        ("    return value[: NAME_LIMITS[field]]", "    return value"),
    ),
    m(
        "changes-empty-sent",
        "an emptied name is sent as empty",
        (
            'if value in (None, "") and name != "blocked":',
            'if value is None and name != "blocked":',
        ),
    ),
    m(
        "changes-blocked-skipped-when-false",
        "unblocking is never sent",
        ('if value in (None, "") and name != "blocked":', 'if value in (None, "", False):'),
    ),
    m(
        "changes-only-new-fields",
        "a changed value is not sent",
        (
            "if synced is None or name not in synced or synced[name] != value:",
            "if synced is None or name not in synced:",
        ),
    ),
    m(
        "changes-all-sent",
        "every field is sent on every update",
        ("if synced is None or name not in synced or synced[name] != value:", "if True:"),
    ),
    m(
        "password-classes-not-guaranteed",
        "a password may lack a class",
        ("chars = [secrets.choice(c) for c in _PASSWORD_CLASSES]", "chars: list[str] = []"),
    ),
    m(
        "password-not-shuffled",
        "the guaranteed classes stay in front",
        ("for i in range(len(chars) - 1, 0, -1):", "for i in range(0):"),
    ),
    m(
        "backoff-one-step-ahead",
        "the first retry waits twice as long",
        ("2.0 ** max(attempt - 1, 0)", "2.0 ** attempt"),
    ),
    m(
        "backoff-uncapped",
        "backoff grows without its cap",
        ("ceiling = min(policy.max_seconds, policy.base_seconds", "ceiling = (policy.base_seconds"),
    ),
    m(
        "backoff-full-jitter",
        "no floor under the jitter",
        ("return ceiling / 2 + rng.uniform(0, ceiling / 2)", "return rng.uniform(0, ceiling)"),
    ),
    m(
        "backoff-no-jitter",
        "every worker retries at the same moment",
        ("return ceiling / 2 + rng.uniform(0, ceiling / 2)", "return ceiling"),
    ),
    m(
        "decide-throttle-counted",
        "a 429 spends an attempt",
        (
            'return Decision(max(at, now), counts=False, error=f"throttled:',
            'return Decision(max(at, now), counts=True, error=f"throttled:',
        ),
    ),
    m(
        "decide-throttle-past-reset",
        "a reset in the past is kept as is",
        ("return Decision(max(at, now), counts=False", "return Decision(at, counts=False"),
    ),
    m(
        "decide-throttle-ignores-reset",
        "a 429's reset is not honoured",
        (
            "at = error.retry_at if error.retry_at is not None else now + backoff(1, policy, rng)",
            "at = now + backoff(1, policy, rng)",
        ),
    ),
    m(
        "decide-credentials-dead-lettered",
        "401/403 dead-letter every change",
        ("if isinstance(error, Permanent) and error.status in CREDENTIALS_REFUSED:", "if False:"),
    ),
    m(
        "decide-credentials-counted",
        "401/403 spend attempts",
        (
            'return Decision(at, counts=False, error=f"credentials refused:',
            'return Decision(at, counts=True, error=f"credentials refused:',
        ),
    ),
    m(
        "decide-permanent-retried",
        "a 400 is retried",
        (
            "        return Decision(None, counts=True, error=error.message)\n",
            "        return Decision(now + 1, counts=True, error=error.message)\n",
        ),
    ),
    m(
        "decide-not-found-retried",
        "a NotFound left over is retried",
        (
            "isinstance(error, Permanent | NotFound | Exists)",
            "isinstance(error, Permanent | Exists)",
        ),
    ),
    m(
        "decide-exists-retried",
        "an Exists left over is retried",
        (
            "isinstance(error, Permanent | NotFound | Exists)",
            "isinstance(error, Permanent | NotFound)",
        ),
    ),
    m(
        "decide-attempt-not-counted",
        "the failure at hand is not counted",
        ("    failed = attempts + 1\n", "    failed = attempts\n"),
    ),
    m(
        "decide-one-attempt-more",
        "one attempt more than allowed",
        ("if failed >= policy.max_attempts:", "if failed > policy.max_attempts:"),
    ),
    m(
        "decide-retry-after-ignored",
        "a 503's Retry-After is not honoured",
        ("        at = max(at, error.retry_at)\n", "        pass\n"),
    ),
]


def check(mutation: Mutation | None) -> tuple[str, str]:
    return lifecycle_mutations.check(mutation, TESTS, TARGET, "identity_sync.account_rules")


def main() -> int:
    return lifecycle_mutations.run_mutations(__doc__.split("\n\n")[0], MUTATIONS, TARGET, check)


if __name__ == "__main__":
    sys.exit(main())
