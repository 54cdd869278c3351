"""What the server's logs may show: :mod:`idstore.logs` keeps credentials and
personal data out of every line."""

from __future__ import annotations

import pytest

from idstore.logs import redact, redact_target


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        (
            "auth failed for idst_01M8TQ92A1TAZRW2AE1RHX5M0F_sJWs5-Mzzqyv1kFW8_36lxNX",
            "auth failed for idst_01M8TQ92A1TAZRW2AE1RHX5M0F_[redacted]",
        ),
        ("got idst_not-a-real-format", "got idst_[redacted]"),
        (
            "headers: [(b'authorization', b'Bearer abc.def-ghi')]",
            "headers: [(b'authorization', b'Bearer [redacted]')]",
        ),
        ("url /x?a=1&access_token=s3cr3t&b=2", "url /x?a=1&access_token=[redacted]&b=2"),
        ("password: hunter2, next", "password: [redacted], next"),
        (
            "duplicate key value\nDETAIL:  Key (user_name)=(pat@example.com) already exists.\nnext",
            "duplicate key value\nDETAIL:  [redacted]\nnext",
        ),
        (
            "[SQL: INSERT ...]\n[parameters: ('pat@example.com', 1)]",
            "[SQL: INSERT ...]\n[parameters: [redacted]]",
        ),
        (
            'invalid input syntax for type integer: "pat@example.com"',
            "invalid input syntax for type integer: [redacted]",
        ),
        (
            "invalid input for query argument $1: 'pat@example.com' (expected int)",
            "invalid input for query argument $1: [redacted] (expected int)",
        ),
        (
            "nothing to hide in 01M8TQ92A1TAZRW2AE1RHX5M0F",
            "nothing to hide in 01M8TQ92A1TAZRW2AE1RHX5M0F",
        ),
    ],
)
def test_redact_removes_credentials_and_quoted_values(line: str, expected: str) -> None:
    """Each kind of secret or personal value a log line could carry is replaced;
    ids and the rest of the line stay."""
    assert redact(line) == expected


@pytest.mark.parametrize(
    ("target", "expected"),
    [
        ("/scim/v2/Users/01M8TQ", "/scim/v2/Users/01M8TQ"),
        (
            "/scim/v2/Users?startIndex=1&count=10&attributes=userName,emails",
            "/scim/v2/Users?startIndex=1&count=10&attributes=userName,emails",
        ),
        (
            "/scim/v2/Users?access_token=idst_x&TOKEN=y&other=z",
            "/scim/v2/Users?access_token=[redacted]&TOKEN=[redacted]&other=[redacted]",
        ),
        (
            "/scim/v2/Users?filter=userName+eq+%22p%5C%22at%40x.com%22+and+active+eq+true",
            "/scim/v2/Users?filter=userName%20eq%20%22[redacted]%22%20and%20active%20eq%20true",
        ),
        (
            "/scim/v2/Users?filter=userName%20eq%20%22unclosed@x.com",
            "/scim/v2/Users?filter=userName%20eq%20%22[redacted]%22",
        ),
    ],
)
def test_access_log_targets_keep_only_harmless_query_values(target: str, expected: str) -> None:
    """Paging and projection parameters stay; a filter keeps its attributes and
    operators; any other value is replaced."""
    assert redact_target(target) == expected
