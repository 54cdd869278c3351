"""Reading a CSV file of users (``POST /api/v1/users/import``, ``idstore
import``): bytes in, records out, in bounded memory, with a clear message
for every hostile input.

Bytes are pushed in as they arrive (:meth:`RecordReader.feed`, then
:meth:`RecordReader.finish`): the request's upload, or the pieces of the
file the database keeps. They are decoded incrementally in the encoding
chosen from :data:`ENCODINGS`, cut into lines at ``\\r\\n``, ``\\r`` or
``\\n`` only (never at the other characters :meth:`str.splitlines` breaks
at, which are data inside a cell), and parsed by the standard library's
:mod:`csv` reader (``strict``). The reader is only ever asked for a record
while at least :data:`MAX_RECORD_CHARS` of text wait to be read (or the file
has ended), so it never runs out of lines in the middle of a record that
may legally be read; no more than that, plus one piece of input, is held.

What fails where:

- The file as a whole is refused (:class:`StructureError`, before any row is
  imported) when it cannot be read as CSV of this format from some point
  on: a header that is not valid (no name, a name twice, too many columns,
  bytes not valid in the encoding), a line or a record longer than
  :data:`MAX_RECORD_CHARS`, a field longer than the :mod:`csv` module's
  limit, or a quote still open at the end of the file. Each of these would
  otherwise swallow every row after it.
- A row fails on its own (:attr:`Record.error`) when its fields do not
  match the header's, a cell is longer than the limit, holds a NUL
  character, or holds bytes not valid in the encoding (each undecodable
  byte sequence becomes :data:`UNDECODABLE`, a lone surrogate no valid text
  decodes to), or when the :mod:`csv` reader refuses the record itself
  (``"a"b``): the rows after it are read as usual.
"""

from __future__ import annotations

import codecs
import csv
import re
import string
from collections import deque
from dataclasses import dataclass

from .errors import ValidationError

__all__ = [
    "ENCODINGS",
    "FIELD_LIMIT",
    "MAX_NAME_CHARS",
    "MAX_RECORD_CHARS",
    "CsvFormat",
    "Record",
    "RecordReader",
    "StructureError",
]

ENCODINGS = ("utf-8", "utf-8-sig", "latin-1", "utf-16")
"""The encodings a file may be in (``utf-16`` reads the byte order from the
BOM). A fixed list: any codec name would open the door to codecs that are
not text encodings (``rot13``, ``zlib``...)."""

MAX_RECORD_CHARS = 1_048_576
"""Longest record (header or row, all its lines) or line, in characters."""

FIELD_LIMIT = 131_072
"""The :mod:`csv` module's limit of a field (its default, process-wide; not
changed here): a longer field refuses the file."""

MAX_NAME_CHARS = 255
"""Longest column name of a header."""

UNDECODABLE = "\udc80"
"""What each byte sequence not valid in the file's encoding decodes to."""

_ERRORS = "idstore.undecodable"
_EOL = re.compile(r"\r\n|\r|\n")
_SEPARATORS = frozenset(string.punctuation + "\t")


def _undecodable(exc: UnicodeError) -> tuple[str, int]:
    if isinstance(exc, UnicodeDecodeError):
        return UNDECODABLE, exc.end
    raise exc


codecs.register_error(_ERRORS, _undecodable)


class StructureError(ValidationError):
    """The file cannot be read as CSV of this format: it is refused whole."""


def shown(name: str) -> str:
    """A column name (the caller's text) in a message: quoted, cut to 64 characters."""
    return repr(name if len(name) <= 64 else name[:64] + "…")


@dataclass(frozen=True, slots=True)
class CsvFormat:
    """How a file is written: its separator, quote and escape characters
    (``""``: none) and its encoding (one of :data:`ENCODINGS`)."""

    delimiter: str = ","
    quote_char: str = '"'
    escape_char: str = ""
    encoding: str = "utf-8"

    def check(self) -> None:
        """:class:`ValidationError` naming the first option that is not acceptable."""
        if self.encoding not in ENCODINGS:
            raise ValidationError(
                f"encoding must be one of {', '.join(ENCODINGS)}, not {shown(self.encoding)}"
            )
        for name, value, optional in (
            ("delimiter", self.delimiter, False),
            ("quoteChar", self.quote_char, True),
            ("escapeChar", self.escape_char, True),
        ):
            if optional and value == "":
                continue
            if len(value) != 1 or value not in _SEPARATORS:
                raise ValidationError(
                    f"{name} must be one ASCII punctuation character or a tab"
                    + (" (or empty for none)" if optional else "")
                    + f", not {shown(value)}"
                )
        chosen = [c for c in (self.delimiter, self.quote_char, self.escape_char) if c]
        if len(set(chosen)) != len(chosen):
            raise ValidationError(
                "delimiter, quoteChar and escapeChar must be different characters"
            )

    def reader_options(self) -> dict[str, object]:
        """Keyword arguments of :func:`csv.reader`."""
        return {
            "delimiter": self.delimiter,
            "quotechar": self.quote_char or None,
            "quoting": csv.QUOTE_MINIMAL if self.quote_char else csv.QUOTE_NONE,
            "escapechar": self.escape_char or None,
            "doublequote": bool(self.quote_char),
            "strict": True,
        }


@dataclass(frozen=True, slots=True)
class Record:
    """One data row of the file: its number (the first row after the header
    is 1), the line it starts on, and its cells, or why it fails."""

    row: int
    line: int
    cells: list[str]
    error: str | None = None


class _Lines:
    """The lines the :mod:`csv` reader reads, with how many characters wait."""

    def __init__(self) -> None:
        self.lines: deque[str] = deque()
        self.chars = 0
        self.ran_dry = False

    def push(self, line: str) -> None:
        self.lines.append(line)
        self.chars += len(line)

    def __len__(self) -> int:
        return len(self.lines)

    def __iter__(self) -> _Lines:
        return self

    def __next__(self) -> str:
        if not self.lines:
            self.ran_dry = True
            raise StopIteration
        line = self.lines.popleft()
        self.chars -= len(line)
        return line


class RecordReader:
    """Records of a CSV file pushed in as bytes (module docstring).

    The first record that is not blank is the header (:attr:`header`, names
    stripped of surrounding blanks); every later one is a :class:`Record`.
    Blank lines are skipped and not counted as rows.
    """

    def __init__(self, fmt: CsvFormat, *, max_columns: int, max_cell_chars: int) -> None:
        fmt.check()
        self.format = fmt
        self.max_columns = max_columns
        self.max_cell_chars = max_cell_chars
        self.header: list[str] | None = None
        self._decoder = codecs.getincrementaldecoder(fmt.encoding)(errors=_ERRORS)
        self._lines = _Lines()
        self._reader = csv.reader(self._lines, **fmt.reader_options())  # type: ignore[arg-type]
        self._pending = ""
        self._started = False
        self._rows = 0
        self._folded: dict[str, int] = {}

    @property
    def rows(self) -> int:
        """Data rows read so far."""
        return self._rows

    def feed(self, data: bytes) -> list[Record]:
        """The records that ``data`` (the next bytes of the file) completes."""
        self._add(self._decode(data, final=False), final=False)
        return self._drain(final=False)

    def _decode(self, data: bytes, *, final: bool) -> str:
        try:
            return self._decoder.decode(data, final)
        except UnicodeError as exc:  # not a byte sequence: utf-16 without its byte order mark
            raise StructureError(f"the file is not {self.format.encoding}: {exc}") from None

    def finish(self) -> list[Record]:
        """The last records, at the end of the file.

        :raises StructureError: The file has no header, or ends inside a quote.
        """
        self._add(self._decode(b"", final=True), final=True)
        records = self._drain(final=True)
        if self.header is None:
            raise StructureError("the file is empty: it has no header")
        return records

    # -- Lines -------------------------------------------------------------------

    def _add(self, text: str, *, final: bool) -> None:
        if not self._started and text:
            self._started = True
            text = text.removeprefix("\ufeff")  # a byte order mark, in any encoding
        buffer = self._pending + text if self._pending else text
        start = 0
        for end_of_line in _EOL.finditer(buffer):
            end = end_of_line.end()
            if end == len(buffer) and end_of_line.group() == "\r" and not final:
                break  # its "\n" may come with the next bytes
            self._lines.push(buffer[start:end])
            start = end
        self._pending = buffer[start:]
        if final and self._pending:
            self._lines.push(self._pending)
            self._pending = ""
        if len(self._pending) > MAX_RECORD_CHARS:
            line = self._reader.line_num + len(self._lines) + 1
            raise StructureError(f"line {line} is longer than {MAX_RECORD_CHARS:,} characters")

    # -- Records -------------------------------------------------------------------

    def _drain(self, *, final: bool) -> list[Record]:
        records: list[Record] = []
        while self._lines and (final or self._lines.chars >= MAX_RECORD_CHARS):
            line = self._reader.line_num + 1
            self._lines.ran_dry = False
            waiting = self._lines.chars
            error: str | None = None
            try:
                cells = next(self._reader)
            except StopIteration:
                break
            except csv.Error as exc:
                cells, error = [], str(exc)
                if self._lines.ran_dry or "field limit" in error:
                    raise self._broken(line, error, final=final) from exc
            if waiting - self._lines.chars > MAX_RECORD_CHARS or (
                self._lines.ran_dry and not final
            ):
                raise StructureError(
                    f"the record starting at line {line} is longer than "
                    f"{MAX_RECORD_CHARS:,} characters (a quote that is never closed?)"
                )
            if not cells and error is None:
                continue  # a blank line
            record = self._record(cells, line, error)
            if record is not None:
                records.append(record)
        return records

    def _broken(self, line: int, error: str, *, final: bool) -> StructureError:
        if "field limit" in error:
            return StructureError(
                f"the record starting at line {line} has a field longer than "
                f"{FIELD_LIMIT:,} characters (a quote that is never closed?)"
            )
        if final:
            return StructureError(
                f"the record starting at line {line} has a quoted field that is never closed"
            )
        return StructureError(
            f"the record starting at line {line} is longer than {MAX_RECORD_CHARS:,} characters "
            "(a quote that is never closed?)"
        )

    def _record(self, cells: list[str], line: int, error: str | None) -> Record | None:
        if self.header is None:
            if error is not None:
                raise StructureError(f"the header (line {line}) is not CSV of this format: {error}")
            self.header = self._check_header(cells, line)
            return None
        self._rows += 1
        if error is not None:
            return Record(self._rows, line, [], f"not CSV of this format: {error}")
        error = self._check_row(cells)
        return Record(self._rows, line, cells if error is None else [], error)

    def _check_header(self, cells: list[str], line: int) -> list[str]:
        if len(cells) > self.max_columns:
            raise StructureError(
                f"the header (line {line}) has {len(cells):,} columns; "
                f"at most {self.max_columns:,} are allowed"
            )
        names = [cell.strip() for cell in cells]
        for position, name in enumerate(names, start=1):
            if UNDECODABLE in name:
                raise StructureError(
                    f"column {position} of the header holds bytes that are not valid "
                    f"{self.format.encoding}"
                )
            if "\x00" in name:
                raise StructureError(f"column {position} of the header holds a NUL character")
            if not name:
                raise StructureError(f"column {position} of the header has no name")
            if len(name) > MAX_NAME_CHARS:
                raise StructureError(
                    f"column {position} of the header is {len(name):,} characters long; "
                    f"at most {MAX_NAME_CHARS} allowed"
                )
            earlier = self._folded.setdefault(name.casefold(), position)
            if earlier != position:
                raise StructureError(
                    f"the header names {shown(name)} twice (columns {earlier} and {position})"
                )
        return names

    def _check_row(self, cells: list[str]) -> str | None:
        header = self.header
        assert header is not None
        if len(cells) != len(header):
            return f"the row has {len(cells):,} fields; the header has {len(header):,}"
        if max(map(len, cells)) > self.max_cell_chars:
            name, cell = next(
                (n, c) for n, c in zip(header, cells, strict=True) if len(c) > self.max_cell_chars
            )
            return (
                f"column {shown(name)} is {len(cell):,} characters long; "
                f"at most {self.max_cell_chars:,} allowed"
            )
        joined = "\x1f".join(cells)
        if "\x00" in joined:
            name = next(n for n, c in zip(header, cells, strict=True) if "\x00" in c)
            return f"column {shown(name)} holds a NUL character"
        if UNDECODABLE in joined:
            name = next(n for n, c in zip(header, cells, strict=True) if UNDECODABLE in c)
            return f"column {shown(name)} holds bytes that are not valid {self.format.encoding}"
        return None
