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


class StateError(StoreError):
    """The resource is not in a state the operation applies to (an admin's
    reset of a user that is not in ``ERROR``); nothing was written."""


class ValidationError(StoreError):
    """A value is not acceptable for the store. ``location`` says where, when
    the value is inside a document (``("customData", "address", "zip")``)."""

    def __init__(self, detail: str, *, location: tuple[str | int, ...] = ()) -> None:
        super().__init__(detail)
        self.location = location


class ConcurrentUpdateError(StoreError):
    """Concurrent writers kept changing the resource; the change was not made."""


class UnavailableError(StoreError):
    """The database cannot be reached now; the change was not made."""


class DatabaseConnectionError(UnavailableError):
    """No connection to the database could be opened: it does not exist, its
    server does not answer, or it refused the credentials. ``detail`` is one
    line naming the database (without its password) and the reason."""


class ValueRefusedError(StoreError):
    """The database refused a value (out of range, too long) the store's own
    checks let through; the change was not made."""


class InvalidCursorError(StoreError):
    """A pagination cursor this store did not issue, or for another query."""


class InvalidFilterError(StoreError):
    """A filter names an attribute, or compares a value, the store cannot
    filter on (``password``, ``$ref``, a complex attribute as a whole...)."""


class InvalidSortError(StoreError):
    """A sort this store cannot apply: ``sortBy`` names an attribute it cannot
    sort by, or a cursor page is sorted by a key cursors do not support."""
