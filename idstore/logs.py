"""Logging of the server process: uvicorn's configuration with a filter that
keeps credentials and personal data out of every line.

The store keeps bound parameters out of its errors (``hide_parameters``) and
the server logs database failures by class and SQLSTATE; this filter is the
last line, on every handler, for what could still carry a secret or a
person's data:

- the access log's query string: every parameter but the harmless paging and
  projection ones (``count``, ``startIndex``, ``attributes``, ...) has its
  value replaced, and a ``filter`` keeps its attributes and operators but
  not its string literals (``filter=userName%20eq%20%22[redacted]%22``);
- in any message or traceback: token secrets (``idst_<id>_[redacted]``: the
  token's id stays, the secret goes), ``Bearer``/``Basic`` credentials,
  ``access_token=``-like pairs, SQLAlchemy's ``[parameters: ...]``,
  PostgreSQL's ``DETAIL`` lines (``Key (user_name)=(...)``, ``Failing row
  contains (...)``) and the values quoted in its data-error messages.
"""

from __future__ import annotations

import http
import logging
import re
from typing import Any
from urllib.parse import parse_qsl, quote

from uvicorn.logging import AccessFormatter as UvicornAccessFormatter

REDACTED = "[redacted]"

HARMLESS_PARAMETERS = frozenset(
    {"attributes", "excludedattributes", "sortby", "sortorder", "startindex", "count", "cursor"}
)
"""Query parameters whose values carry neither credentials nor personal data
(RFC 7644 §3.4.2, RFC 9865 cursors hold ids)."""

_TOKEN = re.compile(r"\bidst_([0-9A-Za-z]{26})_[A-Za-z0-9_\-]+|\bidst_[A-Za-z0-9_\-]+")
_SCHEME = re.compile(r"\b(Bearer|Basic)\s+[A-Za-z0-9._~+/=\-]+", re.IGNORECASE)
_PAIR = re.compile(
    r"\b(access_token|refresh_token|id_token|token|api_?key|password|passwd|secret|"
    r"client_secret)(=|:\s*)[^&\s\"',;)]+",
    re.IGNORECASE,
)
_DETAIL = re.compile(r"^(\s*DETAIL:).*$", re.MULTILINE)
_PARAMETERS = re.compile(r"\[parameters: .*$", re.MULTILINE)
_QUOTED_VALUE = re.compile(
    r"(invalid input syntax for (?:type )?[\w ]+|invalid input value for enum [\w.\"]+|"
    r"field value out of range|malformed [\w ]+ literal|"
    r"invalid input for query argument \$\d+):\s*(\"(?:[^\"\\]|\\.)*\"|'(?:[^'\\]|\\.)*'|.*)"
)
_STRING_LITERAL = re.compile(r'"(?:[^"\\]|\\.)*(?:"|$)')
_SUSPECT = re.compile(
    r"idst_|bearer|basic|token|api_?key|passw|secret|detail:|\[parameters: |"
    r"invalid input|field value out of range|malformed ",
    re.IGNORECASE,
)
"""Text every expression above needs to match (ignoring case, as the
loosest of them does): a line without any has nothing to redact, and is
returned as it is without running them (an access log's path, most
messages)."""


def _token(match: re.Match[str]) -> str:
    return f"idst_{match.group(1)}_{REDACTED}" if match.group(1) else f"idst_{REDACTED}"


def redact(text: str) -> str:
    """``text`` without credentials, bound parameters or the values the
    database quotes in its messages."""
    if _SUSPECT.search(text) is None:
        return text
    return _redact_all(text)


def _redact_all(text: str) -> str:
    """:func:`redact` by every expression, whatever ``text`` holds."""
    text = _TOKEN.sub(_token, text)
    text = _SCHEME.sub(lambda m: f"{m.group(1)} {REDACTED}", text)
    text = _PAIR.sub(lambda m: f"{m.group(1)}{m.group(2)}{REDACTED}", text)
    text = _DETAIL.sub(lambda m: f"{m.group(1)}  {REDACTED}", text)
    text = _PARAMETERS.sub(f"[parameters: {REDACTED}]", text)
    return _QUOTED_VALUE.sub(lambda m: f"{m.group(1)}: {REDACTED}", text)


def _safe(text: str) -> str:
    """URL-encoded as a query string carries it (no space or quote breaks the
    access log's quoted request line), ``[redacted]`` left readable."""
    return quote(text, safe="/:,.-_*()[]")


def redact_target(target: str) -> str:
    """A request target (path and query string) as the access log may show it."""
    path, separator, query = target.partition("?")
    if not separator:
        return redact(target)
    parameters = []
    for name, value in parse_qsl(query, keep_blank_values=True):
        if name.lower() in HARMLESS_PARAMETERS:
            shown = _safe(value)
        elif name.lower() == "filter":
            shown = _safe(_STRING_LITERAL.sub(f'"{REDACTED}"', value))
        else:
            shown = REDACTED
        parameters.append(f"{_safe(name)}={shown}")
    return redact(path) + "?" + "&".join(parameters)


class RedactingFilter(logging.Filter):
    """Rewrites each record so that no handler writes a credential or a
    person's data (module docstring); it never drops a record."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.name == "uvicorn.access" and isinstance(record.args, tuple):
            if len(record.args) == 5:
                client, method, target, version, status = record.args
                record.args = (client, method, redact_target(str(target)), version, status)
            return True
        message = record.getMessage()
        redacted = redact(message)
        if redacted != message:
            record.msg, record.args = redacted, None
            record.__dict__.pop("color_message", None)
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = redact(record.exc_text)
        if record.stack_info:
            record.stack_info = redact(record.stack_info)
        return True


ACCESS_FORMAT = '%(levelprefix)s %(client_addr)s - "%(request_line)s" %(status_code)s'
"""uvicorn's access line: ``INFO:     127.0.0.1:5000 - "GET /x HTTP/1.1" 200 OK``."""

_STATUS_PHRASES = {status.value: status.phrase for status in http.HTTPStatus}


class AccessFormatter(UvicornAccessFormatter):
    """uvicorn's access formatter writing :data:`ACCESS_FORMAT`'s line
    directly from the record: no copies of the record and no ``%`` template
    (uvicorn copies each record twice; formatting was about a third of an
    access line's cost). A record it does not know how to write that way
    (colours on a terminal, another format, an exception or a stack, other
    arguments) is formatted by uvicorn's own; tests/test_logs.py holds both
    to the same lines."""

    def format(self, record: logging.LogRecord) -> str:
        args = record.args
        if (
            self.use_colors
            or self._fmt != ACCESS_FORMAT
            or record.exc_info
            or record.exc_text
            or record.stack_info
            or not isinstance(args, tuple)
            or len(args) != 5
        ):
            return super().format(record)
        record.message = record.getMessage()  # as logging.Formatter does (and fails)
        client, method, target, version, status = args
        code = int(status)  # type: ignore[call-overload]
        level = record.levelname
        return (
            f"{level}:{' ' * (8 - len(level))} {client} - "
            f'"{method} {target} HTTP/{version}" {code} {_STATUS_PHRASES.get(code, "")}'
        )


def log_config(level: str) -> dict[str, Any]:
    """uvicorn's logging configuration, with :class:`RedactingFilter` on both
    of its handlers and the process's other loggers (``idstore.*``, and
    warnings from any library) written through them too."""
    level = level.upper()
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "filters": {"redact": {"()": "idstore.logs.RedactingFilter"}},
        "formatters": {
            "default": {
                "()": "uvicorn.logging.DefaultFormatter",
                "fmt": "%(levelprefix)s %(message)s",
                "use_colors": None,
            },
            "access": {"()": "idstore.logs.AccessFormatter", "fmt": ACCESS_FORMAT},
        },
        "handlers": {
            "default": {
                "formatter": "default",
                "class": "logging.StreamHandler",
                "stream": "ext://sys.stderr",
                "filters": ["redact"],
            },
            "access": {
                "formatter": "access",
                "class": "logging.StreamHandler",
                "stream": "ext://sys.stdout",
                "filters": ["redact"],
            },
        },
        "loggers": {
            "uvicorn": {"handlers": ["default"], "level": level, "propagate": False},
            "uvicorn.error": {"level": level},
            "uvicorn.access": {"handlers": ["access"], "level": level, "propagate": False},
            "idstore": {"handlers": ["default"], "level": level, "propagate": False},
        },
        "root": {"handlers": ["default"], "level": "WARNING"},
    }
