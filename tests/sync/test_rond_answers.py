"""What each of Rönd's answers becomes for a delivery (one row per status
class): :func:`identity_sync.rond.outcome_of` translates the answer, and
:func:`identity_sync.account_rules.decide` makes it a success, a counted
retry (at the ``Retry-After`` when named), an uncounted wait, or a dead
letter. Hand mutations of both: tests/mutations/rond_mutations.py."""

from __future__ import annotations

import random
from email.utils import formatdate

import httpx
import pytest

from identity_sync.account_rules import RetryPolicy, decide
from identity_sync.auth_service import Transient
from identity_sync.rond import outcome_of

NOW = 1_800_000_000.0
POLICY = RetryPolicy(max_attempts=5, base_seconds=2.0, max_seconds=900.0)

ANSWERS = [
    # status, headers, body, what the delivery becomes, (earliest, latest) retry after now
    (200, {}, b'{"bindingId":"b"}', "ok", None),
    (204, {}, b"", "ok", None),
    (302, {"location": "https://elsewhere"}, b"", "dead", None),
    (400, {}, b'{"error":"missing resource id","message":"m","statusCode":400}', "dead", None),
    (401, {}, b"", "wait", (900.0, 900.0)),
    (403, {}, b'{"message":"Forbidden"}', "wait", (900.0, 900.0)),
    (404, {}, b"404 page not found\n", "dead", None),
    (405, {}, b"", "dead", None),
    (408, {}, b"", "retry", (1.0, 2.0)),
    (413, {}, b"", "dead", None),
    (429, {"retry-after": "30"}, b"", "throttled", (30.0, 30.0)),
    (429, {"retry-after": "999999"}, b"", "throttled", (300.0, 300.0)),
    (429, {}, b"", "throttled", (1.0, 2.0)),
    (429, {"retry-after": "soon"}, b"", "throttled", (1.0, 2.0)),
    (500, {}, b'{"error":"failed crud request","statusCode":500}', "retry", (1.0, 2.0)),
    (502, {}, b"bad gateway", "retry", (1.0, 2.0)),
    (503, {"retry-after": "60"}, b"", "retry", (60.0, 60.0)),
    (503, {"retry-after": formatdate(NOW + 120, usegmt=True)}, b"", "retry", (120.0, 120.0)),
    (504, {}, b"", "retry", (1.0, 2.0)),
]


def _becomes(status: int, headers: dict[str, str], body: bytes) -> tuple[str, float | None, str]:
    error = outcome_of(status, httpx.Headers(headers), body, NOW)
    if error is None:
        return "ok", None, ""
    decision = decide(error, attempts=0, now=NOW, policy=POLICY, rng=random.Random(1))
    if decision.retry_at is None:
        kind = "dead"
    elif not decision.counts:
        kind = "throttled" if isinstance(error, Transient) else "wait"
    else:
        kind = "retry"
    after = None if decision.retry_at is None else decision.retry_at - NOW
    return kind, after, decision.error


@pytest.mark.parametrize(("status", "headers", "body", "kind", "window"), ANSWERS)
def test_what_each_answer_of_rond_becomes(
    status: int,
    headers: dict[str, str],
    body: bytes,
    kind: str,
    window: tuple[float, float] | None,
) -> None:
    """Each class of Rönd's answers becomes success, a counted retry (at
    the ``Retry-After`` when named), an uncounted wait, or a dead letter."""
    became, after, error = _becomes(status, headers, body)
    assert became == kind
    if window is None:
        assert after is None
    else:
        assert after is not None
        assert window[0] <= after <= window[1]
    if kind != "ok":
        assert str(status) in error
    if status == 400:
        assert "missing resource id" in error
