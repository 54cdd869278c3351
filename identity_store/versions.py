"""Resource versions: the one check every change makes (RFC 7644 §3.14)."""

from __future__ import annotations

from .errors import VersionMismatchError


def version_mismatch(current: int, expected: int) -> VersionMismatchError:
    """The refusal of a change based on version ``expected`` of a resource at ``current``."""
    return VersionMismatchError(f"the resource is at version {current}, not {expected}")


def check_version(current: int, expected: int | None) -> None:
    """A change based on another version than ``current`` is refused
    (``expected`` ``None``: the caller did not say, anything goes)."""
    if expected is not None and expected != current:
        raise version_mismatch(current, expected)
