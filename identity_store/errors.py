"""Errors the store raises; the HTTP layer maps each to a response in one place."""

from __future__ import annotations


class StoreError(Exception):
    """Base of every error the identity store raises on purpose."""

    def __init__(self, detail: str) -> None:
        super().__init__(detail)
        self.detail = detail


class NotFoundError(StoreError):
    """The resource does not exist (or is deleted)."""

    def __init__(self, resource_type: str, resource_id: str) -> None:
        super().__init__(f"{resource_type} {resource_id!r} not found")
        self.resource_type = resource_type
        self.resource_id = resource_id


class ConflictError(StoreError):
    """A value that must be unique is taken (``attribute`` names it)."""

    def __init__(self, attribute: str, detail: str) -> None:
        super().__init__(detail)
        self.attribute = attribute


class VersionMismatchError(StoreError):
    """The stored version is not the one the caller based its change on."""


class ValidationError(StoreError):
    """A value is not acceptable for the store."""


class InvalidFilterError(StoreError):
    """A filter names an attribute, or compares a value, the store cannot
    filter on (``password``, ``$ref``, a complex attribute as a whole...)."""


class InvalidSortError(StoreError):
    """``sortBy`` names an attribute the store cannot sort by."""
