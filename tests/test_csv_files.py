"""Reading a CSV file of users (identity_store.csv_files) and what its
rows mean (identity_store.import_rows): no database, every hostile input
with its message."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from identity_store.csv_files import (
    MAX_RECORD_CHARS,
    CsvFormat,
    Record,
    RecordReader,
    StructureError,
)
from identity_store.errors import ValidationError
from identity_store.import_rows import RowError, merged, plan_columns, row_values
from identity_store.imports import csv_cell
from identity_store.user_changes import UserInput


def _read(
    data: bytes, fmt: CsvFormat | None = None, *, piece: int = 7, cells: int = 20
) -> tuple[list[str] | None, list[Record]]:
    """The header and records of ``data`` pushed in ``piece``-byte pieces."""
    reader = RecordReader(fmt or CsvFormat(), max_columns=10, max_cell_chars=cells)
    records: list[Record] = []
    for start in range(0, len(data), piece):
        records += reader.feed(data[start : start + piece])
    records += reader.finish()
    return reader.header, records


def test_records_are_read_whatever_the_pieces_the_bytes_come_in() -> None:
    """Line breaks (CRLF split between two pieces), quoted line breaks, a
    BOM, blank lines and non-ASCII text survive any cut of the bytes."""
    data = '\ufeffuserName, Mail \r\nann,"a\r\nb"\r\n\r\nbø,"x""y"\r\nlast,\u2028z'.encode()
    for piece in (1, 2, 3, 64):
        header, records = _read(data, piece=piece)
        assert header == ["userName", "Mail"]
        assert records == [
            Record(1, 2, ["ann", "a\r\nb"]),
            Record(2, 5, ["bø", 'x"y']),
            Record(3, 6, ["last", "\u2028z"]),
        ]


@pytest.mark.parametrize(
    ("line", "error"),
    [
        (b"a\x00b,c", "column 'userName' holds a NUL character"),
        (b"a,\xff", "column 'Mail' holds bytes that are not valid utf-8"),
        (
            b"a,\xed\xa0\x80",
            "column 'Mail' holds bytes that are not valid utf-8",
        ),  # a lone surrogate
        (b"a," + b"x" * 21, "column 'Mail' is 21 characters long; at most 20 allowed"),
        (b"a,b,c", "the row has 3 fields; the header has 2"),
        (b"a", "the row has 1 fields; the header has 2"),
        (b",".join([b"x"] * 10_000), "the row has 10,000 fields; the header has 2"),
        (b'"a"b,c', "not CSV of this format: ',' expected after '\"'"),
    ],
)
def test_a_bad_row_fails_alone(line: bytes, error: str) -> None:
    header, records = _read(b"userName,Mail\n" + line + b"\nok,fine\n", piece=4096)
    assert header == ["userName", "Mail"]
    assert records == [Record(1, 2, [], error), Record(2, 3, ["ok", "fine"])]


@pytest.mark.parametrize(
    ("data", "detail"),
    [
        (b"", "the file is empty: it has no header"),
        (b"\n\n", "the file is empty: it has no header"),
        (b"a,b,A\n", "the header names 'A' twice (columns 1 and 3)"),
        (b"a,,b\n", "column 2 of the header has no name"),
        (b"a,\xffb\n", "column 2 of the header holds bytes that are not valid utf-8"),
        (b"a,b\x00\n", "column 2 of the header holds a NUL character"),
        (
            b"a," + b"n" * 256 + b"\n",
            "column 2 of the header is 256 characters long; at most 255 allowed",
        ),
        (
            b",".join(b"c%d" % i for i in range(11)) + b"\n",
            "the header (line 1) has 11 columns; at most 10 are allowed",
        ),
        (b'"a"b\n', "the header (line 1) is not CSV of this format: ',' expected after '\"'"),
        (
            b'a\n"open\nb\nc\n',
            "the record starting at line 2 has a quoted field that is never closed",
        ),
        (
            b"a\n" + b"x" * (MAX_RECORD_CHARS + 1),
            f"line 2 is longer than {MAX_RECORD_CHARS:,} characters",
        ),
        (
            b'a\n"' + b"x\n" * 70_000 + b'"\n',
            "the record starting at line 2 has a field longer than 131,072 characters "
            "(a quote that is never closed?)",
        ),
        (
            b"a,b,c,d,e,f,g,h,i\n" + b",".join([b'"' + b"y\n" * 60_000 + b'"'] * 9) + b"\n",
            f"the record starting at line 2 is longer than {MAX_RECORD_CHARS:,} characters "
            "(a quote that is never closed?)",
        ),
        (b"a\x00b", "the file is not utf-16: UTF-16 stream does not start with BOM"),
    ],
)
def test_a_file_that_cannot_be_read_is_refused_whole(data: bytes, detail: str) -> None:
    fmt = CsvFormat(encoding="utf-16") if detail.startswith("the file is not utf-16") else None
    with pytest.raises(StructureError) as refused:
        _read(data, fmt, piece=65_536)
    assert refused.value.detail == detail


def test_a_long_record_within_the_limit_is_read() -> None:
    """Quoted fields over many lines, under the record limit, are one row."""
    field = '"' + "y\n" * 60_000 + '"'
    data = f"a,b\n{field},{field}\nnext,row\n".encode()
    _, records = _read(data, piece=65_536, cells=200_000)
    assert [r.row for r in records] == [1, 2]
    assert len(records[0].cells[0]) == 120_000


@pytest.mark.parametrize(
    ("fmt", "detail"),
    [
        (
            CsvFormat(encoding="rot13"),
            "encoding must be one of utf-8, utf-8-sig, latin-1, utf-16, not 'rot13'",
        ),
        (
            CsvFormat(delimiter="ab"),
            "delimiter must be one ASCII punctuation character or a tab, not 'ab'",
        ),
        (
            CsvFormat(delimiter="x"),
            "delimiter must be one ASCII punctuation character or a tab, not 'x'",
        ),
        (
            CsvFormat(delimiter="\n"),
            "delimiter must be one ASCII punctuation character or a tab, not '\\n'",
        ),
        (
            CsvFormat(quote_char="\x00"),
            "quoteChar must be one ASCII punctuation character or a tab (or empty for none), "
            "not '\\x00'",
        ),
        (
            CsvFormat(delimiter=";", quote_char=";"),
            "delimiter, quoteChar and escapeChar must be different characters",
        ),
    ],
)
def test_the_format_options_are_checked(fmt: CsvFormat, detail: str) -> None:
    with pytest.raises(ValidationError) as refused:
        fmt.check()
    assert refused.value.detail == detail


def test_no_quote_and_an_escape_character() -> None:
    _, records = _read(
        b'a;b\nx\\;y;"z"\n', CsvFormat(delimiter=";", quote_char="", escape_char="\\")
    )
    assert records == [Record(1, 2, ["x;y", '"z"'])]


@pytest.mark.parametrize(
    ("mapping", "key", "detail"),
    [
        ({"Mail": "email"}, "userName", "the mapping names column 'Mail', which the header lacks"),
        ({"E-Mail": "mail"}, "userName", None),
        ({}, "userName", None),
        (
            {"E-Mail": "email", "Name": "email"},
            "userName",
            "columns 'E-Mail' and 'Name' both hold email",
        ),
        (
            {"E-Mail": None, "Name": None},
            "externalId",
            "upsertBy is externalId: a column must hold externalId",
        ),
        ({"E-Mail": None, "Name": None}, "id", "upsertBy must be userName or externalId, not 'id'"),
    ],
)
def test_the_mapping_is_checked_against_the_header(
    mapping: dict[str, str | None], key: str, detail: str | None
) -> None:
    with pytest.raises(ValidationError) as refused:
        plan_columns(["USERNAME", "E-Mail", "Name"], mapping, key)  # type: ignore[arg-type]
    if detail is not None:
        assert refused.value.detail == detail


def test_cells_become_values_and_overlay_the_current_state() -> None:
    plan = plan_columns(
        ["username", "Mail", "ok", "until", "customData.team", "verified"],
        {"Mail": "email", "ok": "active", "until": "expirationDate", "verified": "emailVerified"},
        "userName",
        "staff",
    )
    values = row_values(plan, ["Ann@X", "ann@x", "No", "2027-01-31", "blue", "yes"])
    assert values.key == "ann@x"
    assert values.columns == {
        "active": False,
        "expiration_date": datetime(2027, 1, 31, tzinfo=UTC),
        "user_group": "staff",
    }
    current = UserInput(
        user_name="ann@x",
        columns={"given_name": "Ann", "custom_data": {"level": 2}, "user_group": "staff"},
        multi_values=[{"attribute": "emails", "value": "old@x", "primary": True, "type": "home"}],
    )
    new = merged(values, current)
    assert new.user_name == "Ann@X"
    assert new.columns["given_name"] == "Ann"
    assert new.columns["custom_data"] == {"level": 2, "team": "blue"}
    assert new.multi_values == [
        {"attribute": "emails", "value": "ann@x", "primary": True, "type": "home", "verified": True}
    ]
    assert current.multi_values[0]["value"] == "old@x"  # the current state is not changed
    assert merged(row_values(plan, ["Ann@X", "", "", "", "", ""]), new) == new


@pytest.mark.parametrize(
    ("cells", "detail"),
    [
        (["", "yes"], "userName is empty"),
        (["a", "maybe"], "active must be true or false (or yes/no, 1/0), not 'maybe'"),
        (
            ["a", "", "0001-01-01T00:00:00+05:00"],
            "expirationDate is out of range: '0001-01-01T00:00:00+05:00'",
        ),
        (["a", "", "", '{"n": 12345678901234567890}'], None),
        (
            ["a", "", "", '{"n": 1e999}'],
            "customData holds the number 1e999, beyond a double's range",
        ),
        (["a", "", "", '{"n": NaN}'], "customData holds NaN, which is not JSON"),
        (["a", "", "", "[" * 5000 + "]" * 5000], "customData nests deeper than 32 levels"),
        (["a", "", "", "[1]"], "customData must be a JSON object"),
        (
            ["a", "", "", "{"],
            "customData is not JSON: Expecting property name enclosed in double quotes "
            "at character 2",
        ),
    ],
)
def test_a_cell_that_is_no_value_of_its_attribute_fails_its_row(
    cells: list[str], detail: str | None
) -> None:
    plan = plan_columns(["userName", "active", "expirationDate", "customData"], {}, "userName")
    padded = cells + [""] * (4 - len(cells))
    with pytest.raises(RowError) as failed:
        row_values(plan, padded)
    if detail is not None:
        assert failed.value.detail == detail


def test_year_one_and_twenty_digit_values_that_are_values() -> None:
    plan = plan_columns(["userName", "employeeNumber", "expirationDate"], {}, "userName")
    values = row_values(plan, ["a", "12345678901234567890", "0001-01-01"])
    assert values.columns == {
        "employee_number": "12345678901234567890",
        "expiration_date": datetime(1, 1, 1, tzinfo=UTC),
    }


@pytest.mark.parametrize(
    ("value", "cell"),
    [
        ("=1+1", "'=1+1"),
        ("+1", "'+1"),
        ("-1", "'-1"),
        ("@SUM(A1)", "'@SUM(A1)"),
        ("\tx", "'\tx"),
        ("\rx", "'\rx"),
        ("a=b", "a=b"),
        (None, ""),
        (12, "12"),
    ],
)
def test_report_cells_a_spreadsheet_would_run_are_quoted(value: object, cell: str) -> None:
    assert csv_cell(value) == cell
