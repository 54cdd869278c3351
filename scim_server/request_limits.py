"""Size limits of a request's content, checked on the parsed JSON before any
costly work (scim2-models' validation, ``PatchOp.patch``): how many
operations a user PATCH carries and how many values a request gives one
multi-valued attribute. The store checks the values a user ends up with
(``IDSTORE_MAX_MULTI_VALUES``) at every write as well."""

from __future__ import annotations

from typing import Any

from identity_store.settings import Settings

from .errors import ScimError

USER_MULTI_VALUED = frozenset(
    {
        "emails",
        "phonenumbers",
        "ims",
        "photos",
        "entitlements",
        "roles",
        "x509certificates",
        "addresses",
    }
)
"""A user's multi-valued attributes, lower-cased (RFC 7643 §4.1.2)."""


def _too_many(name: str, count: int, limit: int) -> ScimError:
    return ScimError(400, f"{name} has {count} values; at most {limit} are allowed", "invalidValue")


def _count_values(counts: dict[str, int], body: dict[str, Any]) -> None:
    for key, value in body.items():
        if key.lower() in USER_MULTI_VALUED and isinstance(value, list):
            counts[key.lower()] = counts.get(key.lower(), 0) + len(value)


def _check_counts(counts: dict[str, int], limit: int) -> None:
    for name, count in counts.items():
        if count > limit:
            raise ScimError(
                400, f"{name} is given {count} values; at most {limit} are allowed", "invalidValue"
            )


def check_user_values(body: dict[str, Any], settings: Settings) -> None:
    """400 ``invalidValue`` when a user body gives a multi-valued attribute
    more than ``IDSTORE_MAX_MULTI_VALUES`` values."""
    counts: dict[str, int] = {}
    _count_values(counts, body)
    _check_counts(counts, settings.max_multi_values)


def _attribute(path: Any) -> str:
    """The top-level attribute a PATCH path names, lower-cased
    (``emails[type eq "work"].value`` → ``emails``)."""
    name = str(path or "").split("[", 1)[0].split(".", 1)[0]
    return name.rsplit(":", 1)[-1].lower()


OFFLOAD_WEIGHT = 20
"""A PATCH of more operations and values than this is validated and applied
in a worker thread (see :func:`check_user_patch`); below it, inline."""


def check_user_patch(body: dict[str, Any], settings: Settings) -> int:
    """413 ``tooLarge`` past ``IDSTORE_MAX_PATCH_OPERATIONS`` operations (RFC
    7644 has no PATCH limit of its own; §3.7.4 answers 413 past Bulk's
    ``maxOperations``, and so does this), 400 ``invalidValue`` when the
    operations together give one multi-valued attribute more than
    ``IDSTORE_MAX_MULTI_VALUES`` values. Together they bound the work of the
    heaviest PATCH.

    Returns the request's weight, its operations plus the values they give
    multi-valued attributes: the caller hands a PATCH heavier than
    :data:`OFFLOAD_WEIGHT` to a worker thread, and runs the Entra-sized ones
    (a few replaces) inline, where they cost less than the hand-off."""
    operations = body.get("Operations")
    if not isinstance(operations, list):
        return 0  # scim2-models says what is wrong with it
    if len(operations) > settings.max_patch_operations:
        raise ScimError(
            413,
            f"{len(operations)} operations exceed the {settings.max_patch_operations} "
            "a PATCH may carry",
            "tooLarge",
        )
    counts: dict[str, int] = {}
    for operation in operations:
        if not isinstance(operation, dict):
            continue
        value = operation.get("value")
        name = _attribute(operation.get("path"))
        if isinstance(value, list) and name in USER_MULTI_VALUED:
            counts[name] = counts.get(name, 0) + len(value)
        elif isinstance(value, dict):
            _count_values(counts, value)
    _check_counts(counts, settings.max_multi_values)
    return len(operations) + sum(counts.values())
