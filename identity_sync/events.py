"""One structured log line per event of the sync (a JSON object as the
message), so that a request id, a job or a user can be followed by grepping
one field: what the dispatcher, the import jobs and the ticket jobs write."""

from __future__ import annotations

import logging

import orjson

__all__ = ["log_event"]


def log_event(log: logging.Logger, event: str, **fields: object) -> None:
    """Write ``{"event": event, **fields}`` on ``log`` at INFO."""
    log.info(orjson.dumps({"event": event, **fields}).decode())
