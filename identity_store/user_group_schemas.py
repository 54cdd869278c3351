"""The JSON schemas of user groups (Mia-Platform's ``crudSchema``) and the
check of a user's ``customData`` against its group's schema, which every
user write that sets or changes ``userGroup`` or ``customData`` makes
(SCIM, the management API, imports alike: :mod:`identity_store.user_changes`).

The schemas are JSON Schema draft 2020-12, checked and applied with the
``jsonschema`` library, with these limits of our own:

- a schema is a JSON object of at most :data:`~identity_store.limits.MAX_FREE_FORM_DEPTH`
  levels and :data:`~identity_store.limits.MAX_FREE_FORM_BYTES` bytes, as
  ``customData`` itself; its ``$schema``, if any, names draft 2020-12;
- nothing is ever fetched: references resolve inside the schema (and to the
  specification's own meta-schemas) through a :class:`referencing.Registry`
  without retrieval. The library's default registry would fetch an
  ``http(s)`` ``$ref`` with ``urlopen``; a schema whose references do not
  all resolve is refused when it is stored;
- ``uniqueItems`` is checked in linear time (the library compares unhashable
  items pairwise: 20,000 objects in 64 KiB of ``customData`` took minutes);
- references that loop without consuming the instance (``{"$ref": "#"}``)
  are a validation error, not a crash;
- ``format`` is asserted for the formats the library checks without extra
  packages (``email``, ``date``, ``ipv4``, ``ipv6``, ``uuid``, ``regex``...).

A schema's ``pattern`` runs on Python's ``re``, which backtracks: an
administrator who writes ``(a+)+$`` makes writes of long strings slow. The
schemas are an administrator's (``admin`` scope), not a client's.

Validators are compiled once per schema version, keyed by the group
configuration's id and ``updated_at`` (:func:`validator_of`), and kept for
the process (:data:`CACHE_SIZE` of them).
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterator, Mapping
from datetime import datetime
from typing import Any, cast
from urllib.parse import urljoin

import referencing
import referencing.exceptions
import referencing.jsonschema
from jsonschema import Draft202012Validator, validators
from jsonschema.exceptions import ValidationError as SchemaViolation
from jsonschema.exceptions import best_match
from jsonschema.protocols import Validator
from jsonschema_specifications import REGISTRY  # type: ignore[import-untyped]
from sqlalchemy import Table, select
from sqlalchemy.ext.asyncio import AsyncSession

from .errors import ValidationError
from .limits import check_free_form
from .models import UserGroupConfig

__all__ = [
    "DIALECT",
    "check_custom_data",
    "check_schema",
    "check_user_group",
    "compile_schema",
    "group_exists",
    "validator_of",
]

DIALECT = "https://json-schema.org/draft/2020-12/schema"
"""The one ``$schema`` a crudSchema may name (or name none)."""

CACHE_SIZE = 256
"""Compiled validators kept per process (one per group schema version)."""

MESSAGE_LENGTH = 300
"""Longest validator message repeated in an error: the library's messages
quote the failing value, which may be 64 KiB long."""

_CONFIGS = cast(Table, UserGroupConfig.__table__)
_FORMATS = Draft202012Validator.FORMAT_CHECKER
_NOT_SUBSCHEMAS = frozenset({"enum", "const", "default", "examples"})
"""Keywords whose values are data, not schemas: a ``$ref`` key in them is
not a reference."""


# -- Equality of JSON values, as JSON Schema defines it (linear uniqueItems) ---


def _canonical(value: Any) -> Any:
    """A hashable key equal for JSON values JSON Schema calls equal: ``1``
    and ``1.0`` are, ``1`` and ``true`` are not, objects ignore key order.
    Recursive: only called on values within the free-form depth limit."""
    if isinstance(value, bool) or value is None:
        return ("literal", value)
    if isinstance(value, int | float):
        if isinstance(value, float) and value.is_integer():
            return ("number", int(value))
        return ("number", value)
    if isinstance(value, str):
        return ("string", value)
    if isinstance(value, list):
        return ("array", tuple(_canonical(item) for item in value))
    if isinstance(value, dict):
        return ("object", frozenset((key, _canonical(item)) for key, item in value.items()))
    return ("other", repr(value))


def _unique_items(
    validator: Validator, unique: Any, instance: Any, schema: Mapping[str, Any]
) -> Iterator[SchemaViolation]:
    """``uniqueItems`` in linear time, with the library's message."""
    if not unique or not validator.is_type(instance, "array"):
        return
    seen: set[Any] = set()
    for item in instance:
        key = _canonical(item)
        if key in seen:
            yield SchemaViolation(f"{_shortened(repr(instance))} has non-unique elements")
            return
        seen.add(key)


_Validator = validators.extend(  # type: ignore[no-untyped-call]
    Draft202012Validator, {"uniqueItems": _unique_items}
)
"""Draft 2020-12 with the linear ``uniqueItems``."""

_REGISTRY: referencing.jsonschema.SchemaRegistry = referencing.Registry()
"""No resources and no retrieval: the library adds its meta-schemas to it,
and a reference to anything else is unresolvable."""

_SPECIFICATIONS: referencing.jsonschema.SchemaRegistry = REGISTRY
"""The specification's meta-schemas, as the library's validators see them."""

_META = _Validator(Draft202012Validator.META_SCHEMA, registry=_REGISTRY, format_checker=_FORMATS)
"""Checks schemas against the draft 2020-12 meta-schema (what
``Draft202012Validator.check_schema`` does, with the linear ``uniqueItems``:
``{"required": [{...}, {...}, ...]}`` would be quadratic otherwise)."""


# -- Messages and locations ------------------------------------------------------


def _shortened(text: str) -> str:
    return text if len(text) <= MESSAGE_LENGTH else text[: MESSAGE_LENGTH - 1] + "…"


def dotted(location: tuple[str | int, ...]) -> str:
    """``("customData", "address", "zip")`` → ``customData.address.zip``;
    array indexes in brackets (``tags[3]``)."""
    text = ""
    for part in location:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else part)
    return text


def _violation(prefix: str, error: SchemaViolation, suffix: str = "") -> ValidationError:
    location = (prefix, *(p if isinstance(p, int) else str(p) for p in error.absolute_path))
    message = _shortened(error.message)
    return ValidationError(f"{dotted(location)}: {message}{suffix}", location=location)


# -- Schemas ---------------------------------------------------------------------


def _references(schema: dict[str, Any]) -> Iterator[tuple[str, str, tuple[str | int, ...]]]:
    """Every ``$ref`` and ``$dynamicRef`` of ``schema``: (base URI, reference,
    location), walked without recursion; the base URI follows ``$id``."""
    stack: list[tuple[Any, str, tuple[str | int, ...]]] = [(schema, "", ())]
    while stack:
        node, base, where = stack.pop()
        if isinstance(node, dict):
            if isinstance(node.get("$id"), str):
                base = urljoin(base, node["$id"])
            for keyword in ("$ref", "$dynamicRef"):
                if isinstance(node.get(keyword), str):
                    yield base, node[keyword], (*where, keyword)
            for key, value in node.items():
                if key not in _NOT_SUBSCHEMAS and isinstance(value, dict | list):
                    stack.append((value, base, (*where, key)))
        elif isinstance(node, list):
            stack.extend((item, base, (*where, i)) for i, item in enumerate(node))


def _check_references(schema: dict[str, Any]) -> None:
    """:class:`ValidationError` naming the first reference that does not
    resolve inside the schema (nothing is fetched)."""
    resource = referencing.jsonschema.DRAFT202012.create_resource(schema)
    registry = _SPECIFICATIONS.combine(_REGISTRY.with_resource(resource.id() or "", resource))
    registry = registry.crawl()
    for base, reference, where in _references(schema):
        try:
            registry.resolver(base_uri=base).lookup(reference)
        except referencing.exceptions.Unresolvable:
            location = ("crudSchema", *where)
            raise ValidationError(
                f"{dotted(location)}: {_shortened(repr(reference))} does not resolve inside "
                "the schema; references outside it are not fetched",
                location=location,
            ) from None


def check_schema(schema: Any) -> None:
    """Refuse, with :class:`ValidationError` naming where, a ``crudSchema``
    that is not a JSON Schema (draft 2020-12) this store applies: not an
    object, beyond the free-form limits, of another dialect, invalid against
    the meta-schema (the library's message), or with a reference that does
    not resolve inside it."""
    if not isinstance(schema, dict):
        raise ValidationError("crudSchema must be a JSON object", location=("crudSchema",))
    check_free_form("crudSchema", schema)
    dialect = schema.get("$schema")
    if dialect is not None and (not isinstance(dialect, str) or dialect.rstrip("#") != DIALECT):
        raise ValidationError(
            f"crudSchema.$schema: only JSON Schema draft 2020-12 ({DIALECT}) is supported",
            location=("crudSchema", "$schema"),
        )
    error = best_match(_META.iter_errors(schema))
    if error is not None:
        raise _violation("crudSchema", error, " (not a valid JSON Schema, draft 2020-12)")
    _check_references(schema)


def compile_schema(schema: dict[str, Any]) -> Validator:
    """A validator of ``customData`` for a schema :func:`check_schema` accepted."""
    return cast(Validator, _Validator(schema, registry=_REGISTRY, format_checker=_FORMATS))


_CACHE: OrderedDict[tuple[str, datetime], Validator] = OrderedDict()


def validator_of(config_id: str, updated_at: datetime, schema: dict[str, Any]) -> Validator:
    """The compiled validator of this version of a group's schema, compiled
    on first use and kept (least recently used dropped past :data:`CACHE_SIZE`)."""
    key = (config_id, updated_at)
    found = _CACHE.get(key)
    if found is None:
        found = _CACHE[key] = compile_schema(schema)
        while len(_CACHE) > CACHE_SIZE:
            _CACHE.popitem(last=False)
    else:
        _CACHE.move_to_end(key)
    return found


def _cached(config_id: str, updated_at: datetime) -> Validator | None:
    found = _CACHE.get((config_id, updated_at))
    if found is not None:
        _CACHE.move_to_end((config_id, updated_at))
    return found


# -- customData ------------------------------------------------------------------


def check_custom_data(validator: Validator, custom_data: Any) -> None:
    """:class:`ValidationError` naming the failing path (``customData.address.zip``)
    and the validator's message when ``custom_data`` (absent: ``{}``) does
    not satisfy the schema."""
    instance = {} if custom_data is None else custom_data
    try:
        error = best_match(validator.iter_errors(instance))
    except referencing.exceptions.Unresolvable as exc:
        raise ValidationError(
            f"customData cannot be validated: the user group's schema has a reference "
            f"that does not resolve ({_shortened(str(exc))})",
            location=("customData",),
        ) from None
    except RecursionError:
        raise ValidationError(
            "customData cannot be validated: the user group's schema refers to itself without end",
            location=("customData",),
        ) from None
    if error is not None:
        raise _violation("customData", error)


def _config_of(user_group: str) -> Any:
    """The id and version of a group's configuration, locked ``FOR KEY SHARE``
    on PostgreSQL until the caller's write commits, so that a concurrent
    deletion of the group (which locks it for update and counts its users)
    either sees the caller's user or makes the caller find no group; a
    replacement of the schema does not wait for it."""
    return (
        select(_CONFIGS.c.id, _CONFIGS.c.updated_at)
        .where(_CONFIGS.c.user_group == user_group)
        .with_for_update(read=True, key_share=True)
    )


async def group_exists(session: AsyncSession, user_group: str) -> bool:
    """Whether ``user_group`` is configured (locked as :func:`check_user_group` does)."""
    return (await session.execute(_config_of(user_group))).first() is not None


async def check_user_group(
    session: AsyncSession,
    user_group: str,
    custom_data: Any,
    *,
    known: dict[str, Any] | None = None,
) -> None:
    """In a user write's transaction: ``user_group`` is a configured group
    and ``custom_data`` satisfies its schema, else :class:`ValidationError`
    (the group's row locked as :func:`_config_of` says). ``known``: the
    validators a batch of writes in this transaction already read, by group
    (``None`` for a group that is not configured), kept up to date here, so
    that a batch reads (and locks) each group once."""
    if known is not None and user_group in known:
        validator = known[user_group]
    else:
        found = (await session.execute(_config_of(user_group))).first()
        validator = None
        if found is not None:
            validator = _cached(found.id, found.updated_at)
            if validator is None:
                schema = await session.scalar(
                    select(_CONFIGS.c.json_schema).where(_CONFIGS.c.id == found.id)
                )
                validator = validator_of(found.id, found.updated_at, schema or {})
        if known is not None:
            known[user_group] = validator
    if validator is None:
        raise ValidationError(
            f"userGroup {_shortened(repr(user_group))} is not a configured user group",
            location=("userGroup",),
        )
    check_custom_data(validator, custom_data)
