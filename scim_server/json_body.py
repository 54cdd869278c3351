"""Reading a JSON request body within the server's limits, for both
protocols: SCIM (:func:`scim_server.request.read_json`) and ``/api/v1``
(:mod:`scim_server.api.routing`). Each turns :class:`BodyError` into its own
error format.

Written here rather than left to a library: the standard library's parser
(which FastAPI and Starlette call) recurses until ``RecursionError`` at about
1,500 levels, lets lone surrogate escapes through into strings no database
stores, and reads a body of any size; orjson reads a 65-bit integer as a
float. So the body is read with a byte limit, its nesting measured by one
linear pass before any parser sees it, and the parsed document refused when
it holds what no endpoint accepts.
"""

from __future__ import annotations

import json
import re
from collections.abc import AsyncIterable
from typing import Any, Literal

BodyErrorKind = Literal["tooLarge", "invalidSyntax", "invalidValue"]
"""What is wrong, named as RFC 7644 §3.12's ``scimType`` does: the body is
too large (413), not JSON this server reads (400), or holds a value no
endpoint accepts (400)."""


class BodyError(Exception):
    """A request body refused before any endpoint saw it."""

    def __init__(self, status: int, detail: str, kind: BodyErrorKind) -> None:
        super().__init__(detail)
        self.status = status
        self.detail = detail
        self.kind = kind


def too_large(limit: int) -> BodyError:
    return BodyError(413, f"the request body exceeds {limit} bytes", "tooLarge")


async def read_limited(
    chunks: AsyncIterable[bytes], declared_length: str | None, limit: int
) -> bytes:
    """The whole body, or 413 past ``limit`` bytes (``maxPayloadSize``):
    refused at once when ``Content-Length`` says so, and counted while
    reading, so that a missing or false ``Content-Length`` does not get
    around it."""
    if declared_length and declared_length.isdigit() and int(declared_length) > limit:
        raise too_large(limit)
    parts: list[bytes] = []
    size = 0
    async for chunk in chunks:
        size += len(chunk)
        if size > limit:
            raise too_large(limit)
        parts.append(chunk)
    return b"".join(parts)


_STRING = re.compile(rb'"[^"\\]*(?:\\.[^"\\]*)*"')
_NOT_BRACKETS = bytes(b for b in range(256) if b not in b"[]{}")
_SURROGATE_ESCAPE = re.compile(rb"\\u[dD][89a-fA-F]")


def check_depth(raw: bytes, limit: int) -> None:
    """400 when ``raw`` nests arrays and objects deeper than ``limit``, found
    by one linear pass over the bytes outside strings, before the standard
    library's recursive parser (which raises ``RecursionError`` at about
    1,500 levels) sees them. An unterminated document counts the levels it
    opened."""
    if raw.count(b"[") + raw.count(b"{") <= limit:
        return  # nothing to scan: most bodies
    brackets = _STRING.sub(b"", raw).translate(None, _NOT_BRACKETS)
    if len(brackets) <= limit:
        return
    depth = 0
    for byte in brackets:
        if byte in b"[{":
            depth += 1
            if depth > limit:
                raise BodyError(
                    400, f"the request body nests deeper than {limit} levels", "invalidSyntax"
                )
        else:
            depth -= 1


def nul_path(body: Any) -> str | None:
    """Where in ``body`` a string (key or value) holds a NUL character,
    walked without recursion; ``None`` when none does."""
    stack: list[tuple[str, Any]] = [("", body)]
    while stack:
        where, value = stack.pop()
        if isinstance(value, str):
            if "\x00" in value:
                return where or "the body"
        elif isinstance(value, dict):
            for key, item in value.items():
                if "\x00" in key:
                    return f"{where}.{key!r}".lstrip(".")
                stack.append((f"{where}.{key}".lstrip("."), item))
        elif isinstance(value, list):
            stack.extend((f"{where}[{i}]", item) for i, item in enumerate(value))
    return None


def parse(raw: bytes, max_depth: int, *, nul_allowed: bool = False) -> Any:
    """The JSON document in ``raw``, or 400.

    ``invalidSyntax`` for malformed JSON: invalid UTF-8 (raw surrogates
    included), escaped lone surrogates, integers of more digits than Python
    converts, nesting deeper than ``max_depth``. ``invalidValue`` for a NUL
    character in any string, which PostgreSQL cannot store in text
    (``nul_allowed``: left to the caller, as SCIM ``/Bulk`` leaves it to each
    operation)."""
    check_depth(raw, max_depth)
    try:
        # Decoded strictly here: json.loads(bytes) decodes with
        # "surrogatepass", which lets raw UTF-8 surrogates (ED A0 80) through.
        text = raw.decode(json.detect_encoding(raw))
        # The standard library, not orjson: orjson reads an integer beyond
        # 64 bits as a float, silently changing it.
        body = json.loads(text)
        if _SURROGATE_ESCAPE.search(raw):
            # A \uD800-\uDFFF escape that does not pair up leaves a lone
            # surrogate no database can store: refuse it here, not with a 500.
            json.dumps(body, ensure_ascii=False).encode()
    except UnicodeEncodeError as exc:
        raise BodyError(
            400, "the request body has an unpaired UTF-16 surrogate escape", "invalidSyntax"
        ) from exc
    except UnicodeDecodeError as exc:
        raise BodyError(
            400, f"the request body is not valid UTF-8: {exc}", "invalidSyntax"
        ) from exc
    except (ValueError, RecursionError) as exc:
        # JSONDecodeError, and the ValueError of an integer longer than
        # sys.get_int_max_str_digits().
        raise BodyError(400, f"the request body is not valid JSON: {exc}", "invalidSyntax") from exc
    if not nul_allowed and "\\u0000" in text:
        where = nul_path(body)
        if where is not None:
            raise BodyError(400, f"{where} contains a NUL character", "invalidValue")
    return body
