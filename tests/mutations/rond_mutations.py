"""Hand mutation check of what Rönd's answers become (issue 13):
:func:`identity_sync.rond.outcome_of` and the ``Retry-After`` reading it
uses (:func:`identity_sync.remote_http.retry_after_at`).

Each mutation is one small, plausible mistake in one rule; the table test
(tests/sync/test_rond_answers.py, one row per status class) must fail for
every one of them.

    .venv/bin/python tests/mutations/rond_mutations.py        # all
    .venv/bin/python tests/mutations/rond_mutations.py -k 429

Same machinery as lifecycle_mutations.py: each mutation is applied to a
copy of the repository in a temporary directory; exit 1 when one survives
or no longer applies. Not part of the normal suite run.
"""

from __future__ import annotations

import argparse
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import lifecycle_mutations
from lifecycle_mutations import ROOT, Mutation, m

ROND = Path("identity_sync/rond.py")
REMOTE = Path("identity_sync/remote_http.py")
TESTS = ["tests/sync/test_rond_answers.py"]

MUTATIONS: list[tuple[Path, Mutation]] = [
    (
        ROND,
        m(
            "success-only-200",
            "a 204 is taken for a failure",
            ("    if 200 <= status < 300:\n", "    if status == 200:\n"),
        ),
    ),
    (
        ROND,
        m(
            "redirect-taken-for-success",
            "a 3xx (not followed) is taken for success",
            ("    if 200 <= status < 300:\n", "    if 200 <= status < 400:\n"),
        ),
    ),
    (
        ROND,
        m(
            "400-retried",
            "Rönd's 400 is retried instead of dead-lettered",
            (
                'return Permanent(f"Rönd refused the request (400 {described})", status=status)',
                'return Transient(f"Rönd refused the request (400 {described})", status=status)',
            ),
        ),
    ),
    (
        ROND,
        m(
            "400-reason-dropped",
            "Rönd's reason (its ``error``) is not kept",
            (
                'parts = [document.get("error"), document.get("message")]',
                'parts = [document.get("message")]',
            ),
        ),
    ),
    (
        ROND,
        m(
            "credentials-dead-lettered",
            "a 401/403 loses its status: dead letter instead of a wait",
            (
                '"IDSTORE_ROND_BASE_URL points at and the gateway\'s access rules",\n'
                "            status=status,\n",
                '"IDSTORE_ROND_BASE_URL points at and the gateway\'s access rules",\n',
            ),
        ),
    ),
    (
        ROND,
        m(
            "credentials-retried",
            "a 401/403 is a counted retry",
            (
                "    if status in (401, 403):\n        return Permanent(",
                "    if status in (401, 403):\n        return Transient(",
            ),
        ),
    ),
    (
        ROND,
        m(
            "429-counted",
            "a 429 counts as a failed attempt",
            ("            throttled=True,\n", "            throttled=False,\n"),
        ),
    ),
    (
        ROND,
        m(
            "429-retry-after-ignored",
            "a 429's Retry-After is not honoured",
            (
                'f"throttled by Rönd (429 {described})",\n            status=status,\n'
                "            retry_at=retry_after_at(headers, now, "
                "longest=MAX_RETRY_WAIT_SECONDS),\n",
                'f"throttled by Rönd (429 {described})",\n            status=status,\n'
                "            retry_at=None,\n",
            ),
        ),
    ),
    (
        ROND,
        m(
            "500-dead-lettered",
            "a 500 is permanent",
            (
                "    if status == 408 or status >= 500:\n",
                "    if status == 408 or status > 500:\n",
            ),
        ),
    ),
    (
        ROND,
        m(
            "408-dead-lettered",
            "a 408 is permanent",
            ("    if status == 408 or status >= 500:\n", "    if status >= 500:\n"),
        ),
    ),
    (
        ROND,
        m(
            "503-retry-after-ignored",
            "a 503's Retry-After is not honoured",
            (
                'f"Rönd failed (status {status}: {described})",\n            status=status,\n'
                "            retry_at=retry_after_at(headers, now, "
                "longest=MAX_RETRY_WAIT_SECONDS),\n",
                'f"Rönd failed (status {status}: {described})",\n            status=status,\n'
                "            retry_at=None,\n",
            ),
        ),
    ),
    (
        ROND,
        m(
            "404-retried",
            "a 404 (no Rönd there) is retried",
            (
                '        return Permanent(\n            f"no such endpoint',
                '        return Transient(\n            f"no such endpoint',
            ),
        ),
    ),
    (
        ROND,
        m(
            "other-4xx-retried",
            "any other status is retried",
            (
                '    return Permanent(f"Rönd refused the request ({status} {described})", '
                "status=status)",
                '    return Transient(f"Rönd refused the request ({status} {described})", '
                "status=status)",
            ),
        ),
    ),
    (
        REMOTE,
        m(
            "retry-after-uncapped",
            "a Retry-After of days parks the sync for days",
            (
                "return min(now + float(after), now + longest)",
                "return now + float(after)",
            ),
        ),
    ),
    (
        REMOTE,
        m(
            "retry-after-date-ignored",
            "a Retry-After given as an HTTP date is ignored",
            ("        when = parsedate_to_datetime(after)\n", "        return None\n"),
        ),
    ),
]


def check(target: Path, mutation: Mutation | None) -> tuple[str, str]:
    module = ".".join(target.with_suffix("").parts)
    return lifecycle_mutations.check(mutation, TESTS, target, module)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("-k", help="only mutations whose name contains this")
    parser.add_argument("--jobs", type=int, default=2)
    args = parser.parse_args()
    chosen = [(t, x) for t, x in MUTATIONS if not args.k or args.k in x.name]
    stale = []
    for target, mutation in chosen:
        try:
            lifecycle_mutations.mutated((ROOT / target).read_text(), mutation, target)
        except ValueError as exc:
            stale.append(str(exc))
    if stale:
        print("\n".join(stale), file=sys.stderr)
        return 1
    started = time.monotonic()
    baseline, detail = check(ROND, None)
    if baseline != "passed":
        print(f"the tests fail without any mutation: {detail}", file=sys.stderr)
        return 1
    print(f"unmutated: passed; {len(chosen)} mutations")
    survived = 0
    with ThreadPoolExecutor(max_workers=max(1, args.jobs)) as pool:
        for (_, mutation), (outcome, test) in pool.map(lambda tx: (tx, check(*tx)), chosen):
            result = "survived" if outcome == "passed" else "killed"
            survived += outcome == "passed"
            print(f"| {mutation.name:<28} | {result:<8} | {test} |", flush=True)
    print(
        f"{len(chosen) - survived} killed, {survived} survived, "
        f"in {time.monotonic() - started:.0f} s"
    )
    return 1 if survived else 0


if __name__ == "__main__":
    sys.exit(main())
