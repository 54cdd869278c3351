"""What the rows of a CSV import mean: the attributes a column may hold
(:data:`ATTRIBUTES`), which column holds which (:func:`plan_columns`, from
the header and the caller's mapping), a row's values (:func:`row_values`)
and the user's new state with them (:func:`merged`).

A cell left empty gives nothing: a new user does not have the attribute,
an existing one keeps its value. An import never clears a value.

Attribute names are compared without regard to case (``Email`` is
``email``); ``customData.<key>`` sets one key of the user's custom data to
the cell's text, ``customData`` replaces the whole object with the cell's
JSON.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal

from .comparison import normalize
from .csv_files import MAX_NAME_CHARS, shown
from .errors import ValidationError
from .limits import MAX_FREE_FORM_DEPTH
from .user_changes import WRITABLE_COLUMNS, UserInput

__all__ = [
    "ATTRIBUTES",
    "UPSERT_KEYS",
    "ColumnPlan",
    "RowError",
    "RowValues",
    "UpsertKey",
    "merged",
    "plan_columns",
    "row_values",
]

UpsertKey = Literal["userName", "externalId"]
UPSERT_KEYS: tuple[UpsertKey, ...] = ("userName", "externalId")

TEXT: dict[str, str] = {
    "externalId": "external_id",
    "displayName": "display_name",
    "givenName": "given_name",
    "familyName": "family_name",
    "middleName": "middle_name",
    "formattedName": "formatted_name",
    "nickName": "nick_name",
    "honorificPrefix": "honorific_prefix",
    "honorificSuffix": "honorific_suffix",
    "title": "title",
    "locale": "locale",
    "preferredLanguage": "preferred_language",
    "timezone": "timezone",
    "profileUrl": "profile_url",
    "employeeNumber": "employee_number",
    "costCenter": "cost_center",
    "organization": "organization",
    "division": "division",
    "department": "department",
    "manager": "manager_id",
    "idpReferenceId": "idp_reference_id",
    "idpUsername": "idp_username",
    "idpWorkforceId": "idp_workforce_id",
    "idpCloudUsername": "idp_cloud_username",
    "idpSource": "idp_source",
    "userType": "user_type",
    "userGroup": "user_group",
}
"""Attributes whose cell is stored as it is, and their columns."""

BOOLEAN: dict[str, str] = {"active": "active", "blocked": "blocked"}
MOMENT: dict[str, str] = {"expirationDate": "expiration_date"}
ENTRY: dict[str, tuple[str, str]] = {
    "email": ("emails", "value"),
    "emailVerified": ("emails", "verified"),
    "phoneNumber": ("phoneNumbers", "value"),
    "phoneNumberVerified": ("phoneNumbers", "verified"),
}
"""Attributes of the user's primary entry of a multi-valued attribute (the
first one when none is primary; a new ``work`` entry, primary, when it has
none): ``email`` is the value of its primary e-mail."""

USER_NAME = "userName"
CUSTOM_DATA = "customData"
CUSTOM_KEY_PREFIX = "customData."

ATTRIBUTES: tuple[str, ...] = (
    USER_NAME,
    *TEXT,
    *BOOLEAN,
    *MOMENT,
    *ENTRY,
    CUSTOM_DATA,
)
"""Every attribute a column may hold, besides ``customData.<key>``."""

_BY_FOLDED = {name.casefold(): name for name in ATTRIBUTES}
_TRUE = frozenset({"true", "yes", "1"})
_FALSE = frozenset({"false", "no", "0"})
MAX_SAFE_INTEGER = 2**53 - 1
"""Integers a JSON client reads exactly (RFC 8259 §6); a cell's JSON may hold no larger."""
MAX_MOMENT_CHARS = 64

assert set(TEXT.values()) | set(BOOLEAN.values()) | set(MOMENT.values()) <= WRITABLE_COLUMNS


class RowError(ValidationError):
    """A row's cell is not a value of its attribute."""


def canonical(name: str) -> str | None:
    """The attribute ``name`` names (in any letter case), or ``None``."""
    found = _BY_FOLDED.get(name.casefold())
    if found is not None:
        return found
    if name.casefold().startswith(CUSTOM_KEY_PREFIX.casefold()):
        key = name[len(CUSTOM_KEY_PREFIX) :]
        if key and "\x00" not in key:
            return CUSTOM_KEY_PREFIX + key
    return None


@dataclass(frozen=True, slots=True)
class ColumnPlan:
    """Which column of the file holds which attribute; the others are ignored."""

    header: tuple[str, ...]
    columns: tuple[tuple[int, str], ...]
    """(position in a row, attribute) of each column read."""
    key: UpsertKey
    user_group: str | None = None
    """The ``userGroup`` of every row whose own cell does not name one."""

    @property
    def attributes(self) -> dict[str, str]:
        """Column name -> attribute, for the job's parameters."""
        return {self.header[i]: attribute for i, attribute in self.columns}


def plan_columns(
    header: Sequence[str],
    mapping: Mapping[str, str | None],
    key: UpsertKey,
    user_group: str | None = None,
) -> ColumnPlan:
    """The plan of a file with ``header``: each column holds the attribute
    ``mapping`` maps its name to (``None`` or ``""``: ignored), or else the
    attribute it is named after.

    :raises ValidationError: The mapping names a column the header lacks or
        an attribute that does not exist, a column is no attribute and not
        mapped, two columns hold one attribute, or no column holds ``key``.
    """
    if key not in UPSERT_KEYS:
        raise ValidationError(f"upsertBy must be userName or externalId, not {shown(str(key))}")
    positions = {name: i for i, name in enumerate(header)}
    for name, target in mapping.items():
        if name.strip() not in positions:
            raise ValidationError(f"the mapping names column {shown(name)}, which the header lacks")
        if target and canonical(target) is None:
            raise ValidationError(
                f"the mapping maps {shown(name)} to {shown(target)}, which is no attribute "
                f"(attributes: {', '.join(ATTRIBUTES)}, customData.<key>)"
            )
    mapped = {name.strip(): target for name, target in mapping.items()}
    columns: list[tuple[int, str]] = []
    held: dict[str, str] = {}
    for position, name in enumerate(header):
        target = mapped.get(name, name)
        if not target:
            continue
        attribute = canonical(target)
        if attribute is None:
            raise ValidationError(
                f"column {shown(name)} is no attribute: map it to one "
                f'("mapping": {{{json.dumps(name)}: "email"}}) or ignore it '
                f'("mapping": {{{json.dumps(name)}: null}})'
            )
        if attribute in held:
            raise ValidationError(
                f"columns {shown(held[attribute])} and {shown(name)} both hold {attribute}"
            )
        held[attribute] = name
        columns.append((position, attribute))
    if key not in held:
        raise ValidationError(f"upsertBy is {key}: a column must hold {key}")
    if user_group is not None and not 0 < len(user_group) <= 128:
        raise ValidationError("userGroup must be 1-128 characters")
    return ColumnPlan(tuple(header), tuple(columns), key, user_group)


@dataclass(slots=True)
class RowValues:
    """The values one row gives (its empty cells give none)."""

    key: str
    """The upsert key as the store compares it: a ``userName`` normalized
    (:func:`identity_store.comparison.normalize`), an ``externalId`` as written."""
    user_name: str | None = None
    columns: dict[str, Any] = field(default_factory=dict)
    entries: dict[tuple[str, str], Any] = field(default_factory=dict)
    """(multi-valued attribute, field) -> value of its primary entry."""
    custom_data: dict[str, Any] | None = None
    """A whole ``customData`` object."""
    custom_keys: dict[str, str] = field(default_factory=dict)
    """``customData.<key>`` values."""


def _boolean(attribute: str, cell: str) -> bool:
    word = cell.strip().lower()
    if word in _TRUE:
        return True
    if word in _FALSE:
        return False
    raise RowError(f"{attribute} must be true or false (or yes/no, 1/0), not {shown(cell)}")


def _moment(attribute: str, cell: str) -> datetime:
    text = cell.strip()
    if len(text) > MAX_MOMENT_CHARS:
        raise RowError(f"{attribute} must be an ISO 8601 date or time, not {shown(cell)}")
    try:
        value = datetime.fromisoformat(text)
    except ValueError:
        raise RowError(
            f"{attribute} must be an ISO 8601 date or time (2027-01-31 or "
            f"2027-01-31T18:00:00+01:00), not {shown(cell)}"
        ) from None
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    try:
        return value.astimezone(UTC)
    except OverflowError:
        raise RowError(f"{attribute} is out of range: {shown(cell)}") from None


def _no_big_integer(text: str) -> int:
    value = int(text)
    if abs(value) > MAX_SAFE_INTEGER:
        raise RowError(
            f"customData holds the integer {text[:32]}, beyond ±(2^53-1): "
            "JSON clients cannot read it exactly (write it as a string)"
        )
    return value


def _no_constant(name: str) -> Any:
    raise RowError(f"customData holds {name}, which is not JSON")


def _no_special_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise RowError(f"customData holds the number {text[:32]}, beyond a double's range")
    return value


def _custom_data(cell: str) -> dict[str, Any]:
    try:
        value = json.loads(
            cell,
            parse_int=_no_big_integer,
            parse_float=_no_special_float,
            parse_constant=_no_constant,
        )
    except RecursionError:
        raise RowError(f"customData nests deeper than {MAX_FREE_FORM_DEPTH} levels") from None
    except json.JSONDecodeError as exc:
        raise RowError(f"customData is not JSON: {exc.msg} at character {exc.pos + 1}") from None
    if not isinstance(value, dict):
        raise RowError("customData must be a JSON object")
    return value


def row_values(plan: ColumnPlan, cells: Sequence[str]) -> RowValues:
    """The values of a row of ``cells`` (one per column of the header).

    :raises RowError: A cell is not a value of its attribute, or the key is empty.
    """
    values = RowValues(key="")
    for position, attribute in plan.columns:
        cell = cells[position]
        if not cell.strip():
            continue
        if attribute == USER_NAME:
            values.user_name = cell
        elif attribute in TEXT:
            values.columns[TEXT[attribute]] = cell
        elif attribute in BOOLEAN:
            values.columns[BOOLEAN[attribute]] = _boolean(attribute, cell)
        elif attribute in MOMENT:
            values.columns[MOMENT[attribute]] = _moment(attribute, cell)
        elif attribute in ENTRY:
            entry, part = ENTRY[attribute]
            values.entries[(entry, part)] = (
                _boolean(attribute, cell) if part == "verified" else cell
            )
        elif attribute == CUSTOM_DATA:
            values.custom_data = _custom_data(cell)
        else:
            values.custom_keys[attribute[len(CUSTOM_KEY_PREFIX) :]] = cell
    key = values.user_name if plan.key == USER_NAME else values.columns.get("external_id")
    if not key:
        raise RowError(f"{plan.key} is empty")
    if len(key) > MAX_NAME_CHARS:
        raise RowError(f"{plan.key} is {len(key):,} characters long; at most {MAX_NAME_CHARS}")
    values.key = normalize(key) if plan.key == USER_NAME else key
    if plan.user_group is not None:
        values.columns.setdefault("user_group", plan.user_group)
    return values


def _primary(entries: list[dict[str, Any]], attribute: str) -> dict[str, Any] | None:
    mine = [e for e in entries if e["attribute"] == attribute]
    return next((e for e in mine if e.get("primary")), mine[0] if mine else None)


def merged(values: RowValues, current: UserInput | None) -> UserInput:
    """The state a user has after the row: ``current`` (an existing user's
    whole state; ``None`` for a new user) with the row's values.

    :raises RowError: The row gives a ``...Verified`` flag for an entry it
        does not give and the user does not have.
    """
    if current is None:
        data = UserInput(user_name=values.user_name or "")
    else:
        data = UserInput(
            user_name=current.user_name,
            columns=dict(current.columns),
            multi_values=[dict(e) for e in current.multi_values],
            addresses=current.addresses,
            password=current.password,
        )
        if values.user_name is not None:
            data.user_name = values.user_name
    data.columns.update(values.columns)
    if values.custom_data is not None or values.custom_keys:
        custom = dict(
            values.custom_data
            if values.custom_data is not None
            else data.columns.get("custom_data") or {}
        )
        custom.update(values.custom_keys)
        data.columns["custom_data"] = custom
    for (attribute, part), value in sorted(
        values.entries.items(), key=lambda i: i[0][1] != "value"
    ):
        entry = _primary(data.multi_values, attribute)
        if entry is None:
            if part != "value":
                raise RowError(
                    f"the row gives {part} of {attribute} but no value, and there is none"
                )
            entry = {
                "attribute": attribute,
                "value": None,
                "display": None,
                "type": "work",
                "primary": True,
                "verified": None,
            }
            data.multi_values.append(entry)
        entry[part] = value
    return data
