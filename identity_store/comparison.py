"""The comparison key of case-insensitive strings (RFC 7643 §2.2), stored in
the ``*_normalized`` columns and compared by filters: one definition."""

from __future__ import annotations

import unicodedata


def normalize(value: str) -> str:
    """NFC, then lower case, then NFC (scim2-models' ``default_comparison_key``)."""
    return unicodedata.normalize("NFC", unicodedata.normalize("NFC", value).lower())
