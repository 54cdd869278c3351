"""The store's filter translation (identity_store.filtering) on trees built by
hand, without the SCIM layer: what it refuses, what a look-up reads, and the
comparison key it relies on. tests/test_filters.py runs SCIM filters through
both layers."""

from __future__ import annotations

import sys
import unicodedata
from datetime import UTC, datetime
from typing import Any

import pytest
from scim2_models import ScimFilter
from sqlalchemy import select
from sqlalchemy.dialects import postgresql
from sqlalchemy.ext.asyncio import AsyncSession

from identity_store.attributes import (
    CORE_GROUP_SCHEMA,
    CORE_USER_SCHEMA,
    PRODUCT_USER_SCHEMA,
    USER_ATTRIBUTES,
)
from identity_store.errors import InvalidFilterError, InvalidSortError
from identity_store.filtering import (
    And,
    Compare,
    Filter,
    Not,
    Or,
    Present,
    SortKey,
    Within,
    column_equality,
    group_order,
    group_where,
    user_equality,
    user_order,
    user_where,
)
from identity_store.models import User, UserMultiValue
from identity_store.models.user import NORMALIZED_VALUE_LENGTH
from identity_store.users import normalize
from scim_server.schemas import ScimUser


def core(name: str) -> str:
    return f"{CORE_USER_SCHEMA}:{name}"


def product(name: str) -> str:
    return f"{PRODUCT_USER_SCHEMA}:{name}"


# -- The comparison key ----------------------------------------------------------------

SAMPLES = [
    "BJensen@Example.COM",
    "Élodie",
    "E\u0301lodie",  # NFD
    "ÉQUIPE",
    "Straße STRASSE ẞ",
    "İstanbul",  # lower() adds a combining dot
    "ΣΊΣΥΦΟΣ ὈΔΥΣΣΕΎΣ",
    "Å Å K",  # angstrom and kelvin signs
    "ﬁ ﬀ Ǆ ǅ",
    "Ⅻ ⓐⒶ",
    "한국어 日本語 😀",
    "a\u0345\u0313",  # combining marks whose order NFC fixes
]


def _every_code_point() -> str:
    return "".join(chr(c) for c in range(sys.maxunicode + 1) if not 0xD800 <= c <= 0xDFFF)


def test_normalize_is_scim2_models_comparison_key_of_case_insensitive_strings() -> None:
    """The store compares by :func:`normalize`; scim2-models' ``match`` (and so the
    SCIM layer) by ``AttributeBinding.comparable``: they must be one function."""
    scim_filter = ScimFilter[ScimUser]("userName pr")
    binding = scim_filter.resolve(scim_filter.ast.attr_path, strict=True)
    assert not binding.case_exact
    everything = _every_code_point()
    for text in [*SAMPLES, *(everything[i : i + 64] for i in range(0, len(everything), 64))]:
        assert normalize(text) == binding.comparable(text), repr(text)


def test_a_case_exact_string_compares_by_its_nfc_form_as_scim2_models_has_it() -> None:
    scim_filter = ScimFilter[ScimUser]("externalId pr")
    binding = scim_filter.resolve(scim_filter.ast.attr_path, strict=True)
    assert binding.case_exact
    for text in SAMPLES:
        assert unicodedata.normalize("NFC", text) == binding.comparable(text)


# -- Refusals --------------------------------------------------------------------------

REFUSED_TREES: list[tuple[Filter, str]] = [
    (Present(core("nope")), f"attribute '{core('nope')}' cannot be filtered on this server"),
    (
        Compare(core("password"), "eq", "x", True),
        "'password' cannot be filtered: only a salted hash of it is stored",
    ),
    (Present(product("customData")), "'customData' is a free JSON object and cannot be filtered"),
    (Present(core("meta.version")), "'meta.version' cannot be filtered"),
    (
        Compare(core("name"), "eq", "x", False),
        f"'{core('name')}' is complex: compare one of its sub-attributes",
    ),
    (
        Compare(core("addresses"), "eq", "x", False),
        f"'{core('addresses')}' is complex: compare one of its sub-attributes",
    ),
    (Within(core("title"), Present(core("title"))), f"'{core('title')}' is not multi-valued"),
    (
        Within(core("emails"), Within(core("emails"), Present(core("emails.value")))),
        "value paths cannot be nested",
    ),
    (
        And((Present(core("title")), Compare(core("active"), "eq", "true", False))),
        f"'{core('active')}' is compared to a bool, not 'true'",
    ),
    (
        Compare(core("meta.created"), "gt", datetime(2020, 1, 1), False),
        f"'{core('meta.created')}' is compared to a dateTime without a zone",
    ),
    (
        Compare(core("userName"), "eq", 5, False),
        f"'{core('userName')}' is compared to a str, not 5",
    ),
    (
        Compare(core("active"), "co", True, False),
        f"operator 'co' applies to strings, not to '{core('active')}'",
    ),
    (
        Compare(core("userName"), "ne", "x", False),  # type: ignore[arg-type]
        "unknown operator 'ne'",
    ),
    (Not("userName pr"), "not a filter term: 'userName pr'"),  # type: ignore[arg-type]
]


@pytest.mark.parametrize(("tree", "detail"), REFUSED_TREES)
def test_the_store_refuses_what_it_cannot_filter_on_with_its_reason(
    tree: Filter, detail: str
) -> None:
    with pytest.raises(InvalidFilterError) as raised:
        user_where(tree)
    assert raised.value.detail == detail


def test_a_group_filter_refuses_user_attributes() -> None:
    with pytest.raises(InvalidFilterError):
        group_where(Present(core("userName")))
    group_where(Present(f"{CORE_GROUP_SCHEMA}:members"))


@pytest.mark.parametrize(
    "attribute",
    [core("nope"), core("password"), core("name"), core("groups.display"), product("tags")],
)
def test_the_store_refuses_to_sort_by_what_cannot_be_sorted(attribute: str) -> None:
    with pytest.raises(InvalidSortError) as raised:
        user_order(SortKey(attribute, case_exact=False))
    assert raised.value.detail == f"sortBy: '{attribute}' cannot be sorted by"


def test_groups_sort_by_their_own_attributes_only() -> None:
    group_order(SortKey(f"{CORE_GROUP_SCHEMA}:displayName", case_exact=False))
    with pytest.raises(InvalidSortError):
        group_order(SortKey(f"{CORE_GROUP_SCHEMA}:members.value", case_exact=True))


# -- Trees built by hand run as SQL -------------------------------------------------------


async def _seed(session: AsyncSession) -> None:
    for key, name, title in (("a", "Ann", "Boss"), ("b", "Bob", None)):
        user_id = key.upper().ljust(26, "0")
        session.add(
            User(id=user_id, user_name=name, user_name_normalized=normalize(name), title=title)
        )
        session.add(
            UserMultiValue(
                user_id=user_id,
                attribute="emails",
                type="work",
                value=f"{name}@Example.com",
                value_normalized=normalize(f"{name}@Example.com"),
            )
        )
    await session.commit()


async def _names(session: AsyncSession, tree: Filter) -> set[str]:
    return set(await session.scalars(select(User.user_name).where(user_where(tree))))


async def test_a_tree_built_by_hand_selects_what_it_says(session: AsyncSession) -> None:
    """The store needs no SCIM parser: full names and typed values are enough."""
    await _seed(session)
    work = Compare(core("emails.type"), "eq", "work", False)
    assert await _names(session, Compare(core("userName"), "eq", "ANN", False)) == {"Ann"}
    assert await _names(session, Not(Compare(core("title"), "eq", "boss", False))) == {"Bob"}
    ann_at = Compare(core("emails.value"), "sw", "ann@", False)
    assert await _names(session, Within(core("emails"), And((work, ann_at)))) == {"Ann"}
    since = Compare(core("meta.created"), "gt", datetime(2000, 1, 1, tzinfo=UTC), False)
    assert await _names(session, Or((Present(core("title")), since))) == {"Ann", "Bob"}
    assert await _names(session, Compare(core("meta.resourceType"), "eq", "User", True)) == {
        "Ann",
        "Bob",
    }


def test_strings_order_by_code_point_whatever_the_servers_collation() -> None:
    """The test server's collation is C, where ordering rows would pass without
    this; a production server's may follow a locale: the SQL says COLLATE "C"."""
    dialect = postgresql.dialect()
    where = user_where(Compare(core("userName"), "gt", "c", False))
    assert 'COLLATE "C"' in str(where.compile(dialect=dialect))
    order = user_order(SortKey(core("title"), case_exact=False))
    assert 'COLLATE "C"' in str(order.compile(dialect=dialect))


# -- Look-ups ----------------------------------------------------------------------------

LOOK_UPS: list[tuple[Filter, Any]] = [
    (Compare(core("userName"), "eq", "BJensen", False), ("user_name_normalized", "bjensen")),
    (Compare(core("externalId"), "eq", "Ext-1", True), ("external_id", "Ext-1")),
    (Compare(core("id"), "eq", "01J", True), ("id", "01J")),
    (Compare(product("idpReferenceId"), "eq", "x", False), None),  # lower(column)
    (Compare(core("userName"), "sw", "b", False), None),
    (Compare(core("emails.value"), "eq", "a@b.c", False), None),
    (Not(Compare(core("userName"), "eq", "b", False)), None),
    (
        And(
            (
                Compare(core("userName"), "eq", "b", False),
                Compare(core("externalId"), "eq", "e", True),
            )
        ),
        None,
    ),
]


@pytest.mark.parametrize(("tree", "expected"), LOOK_UPS)
def test_column_equality_reads_one_column_equal_to_a_value_off_the_translation(
    tree: Filter, expected: Any
) -> None:
    """What the prebuilt look-ups (identity_store.prepared_reads) may serve, and with
    which value: the comparison key for a case-insensitive column."""
    assert column_equality(user_where(tree)) == expected


# -- Look-ups read off the tree ------------------------------------------------------------

LONG = NORMALIZED_VALUE_LENGTH
EQUALITY_VALUES: list[Any] = [
    "BJensen",
    "bjensen",
    "E\u0301lodie İstanbul ẞ",  # NFD, and keys longer or shorter than the text
    "",
    "x" * (LONG - 1),  # the longest key a truncated comparison key holds whole
    "x" * LONG,
    "X" * (LONG + 100),
    b"\x00\xffcert",
    True,
    False,
    datetime(2024, 5, 6, 7, 8, 9, tzinfo=UTC),
    datetime(2024, 5, 6, 7, 8, 9),  # no zone: refused
    42,
    None,
]
EQUALITY_OPERATORS = ["eq", "co", "sw", "ew", "gt", "ge", "lt", "le", "ne"]


def _outcome(read: Any, tree: Filter) -> tuple[Any, ...]:
    try:
        answer = read(tree)
    except InvalidFilterError as exc:
        return ("refused", str(exc))
    except Exception as exc:  # compared, not hidden
        return ("failed", type(exc), str(exc))
    return ("answered", answer, type(answer[1]) if answer else None)


def _translated(tree: Filter) -> Any:
    return column_equality(user_where(tree))


@pytest.mark.parametrize(
    "attribute", [*USER_ATTRIBUTES, core("nosuch"), "userName", core("userName.x")]
)
def test_user_equality_reads_a_comparison_as_its_translation_does(attribute: str) -> None:
    """user_equality answers a single comparison as column_equality reads
    user_where's translation of it, for every attribute of the table (refused,
    complex, multi-valued, derived, constant ones included) and any name the
    table does not hold, with every operator, values of every type (and of the
    wrong type), keys shorter and longer than a truncated comparison key, and
    both cases: the same look-up, or the same refusal."""
    differences = []
    for op in EQUALITY_OPERATORS:
        for value in EQUALITY_VALUES:
            for case_exact in (False, True):
                tree = Compare(attribute, op, value, case_exact)  # type: ignore[arg-type]
                expected = _outcome(_translated, tree)
                actual = _outcome(user_equality, tree)
                if expected[0] == "failed" and op != "eq":
                    # SQLAlchemy refuses to order booleans (the SCIM layer never
                    # asks): no look-up, the caller's translation fails alike.
                    expected = ("answered", None, None)
                if actual != expected:
                    differences.append((op, value, case_exact, expected, actual))
    assert differences == []


def test_user_equality_answers_the_look_ups_clients_send() -> None:
    """The comparisons the prepared look-ups serve are answered (not left to
    the translation), with the value the translation binds."""
    assert user_equality(Compare(core("userName"), "eq", "BJensen", False)) == (
        "user_name_normalized",
        "bjensen",
    )
    assert user_equality(Compare(core("userName"), "eq", "BJensen", True)) == (
        "user_name",
        "BJensen",
    )
    assert user_equality(Compare(core("externalId"), "eq", "E\u0301xt", True)) == (
        "external_id",
        unicodedata.normalize("NFC", "E\u0301xt"),
    )
    assert user_equality(Compare(core("id"), "eq", "01J", True)) == ("id", "01J")
    assert user_equality(Compare(product("idpReferenceId"), "eq", "R", True)) == (
        "idp_reference_id",
        "R",
    )


OTHER_TREES: list[Filter] = [
    Not(Compare(core("userName"), "eq", "b", False)),
    And((Compare(core("userName"), "eq", "b", False),)),
    And((Compare(core("userName"), "eq", "b", False), Compare(core("id"), "eq", "1", True))),
    Or((Compare(core("externalId"), "eq", "e", True),)),
    Present(core("userName")),
    Within(core("emails"), Compare(core("emails.value"), "eq", "a@b.c", False)),
    Not(Compare(core("password"), "eq", "secret", True)),  # refused by the translation
    And((Compare(core("nosuch"), "eq", "x", False),)),
]


@pytest.mark.parametrize("tree", OTHER_TREES)
def test_user_equality_leaves_every_other_tree_to_the_translation(tree: Filter) -> None:
    """Only a single comparison is read off the tree: for any other, even one
    the translation reads as a look-up or refuses, the answer is None and the
    caller translates it (which refuses what it refuses)."""
    assert user_equality(tree) is None


def test_user_equality_keeps_a_guard_on_another_column_out_of_look_ups(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Were ``user_name`` nullable, ``userName eq`` would read its comparison
    key under an ``IS NOT NULL`` guard on ``user_name``: no one-column
    look-up, for the translation and for user_equality alike."""
    monkeypatch.setattr(User.__table__.c.user_name, "nullable", True)
    tree = Compare(core("userName"), "eq", "BJensen", False)
    assert _translated(tree) is None
    assert user_equality(tree) is None
