"""A minimal HTTP/1.1 client on an asyncio ``Protocol``, parsed by ``httptools``.

The load generator needs a client that costs far less CPU than the servers it
measures. This one writes pre-built request bytes and parses the response with
the same C parser uvicorn uses, so a request costs a few tens of microseconds
of generator CPU. It keeps the connection alive when the server allows it and
reconnects otherwise (the peer's ``wsgiref`` server answers HTTP/1.0 and closes
after every response): the reconnection is part of the next request's latency,
as it would be for a real client.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import cast
from urllib.parse import quote

import httptools

DEFAULT_TIMEOUT = 30.0


class HttpError(Exception):
    """The connection failed, broke, or the response could not be parsed."""


def encode_query(params: dict[str, str | int]) -> str:
    """A query string; values are percent-encoded (``filter`` holds quotes and spaces)."""
    return "&".join(f"{k}={quote(str(v), safe='')}" for k, v in params.items())


@dataclass(slots=True)
class RequestTemplate:
    """Headers shared by every request to one server."""

    host: str
    port: int
    token: str | None = None
    extra: dict[str, str] = field(default_factory=dict)
    media_type: str = "application/scim+json"
    """``Accept`` and the body's ``Content-Type`` (the JSON API's is ``application/json``)."""

    def build(self, method: str, path: str, body: bytes | None = None) -> bytes:
        """The request's bytes, ready to be written."""
        lines = [
            f"{method} {path} HTTP/1.1",
            f"Host: {self.host}:{self.port}",
            f"Accept: {self.media_type}",
        ]
        if self.token:
            lines.append(f"Authorization: Bearer {self.token}")
        lines.extend(f"{k}: {v}" for k, v in self.extra.items())
        if body is not None:
            lines.append(f"Content-Type: {self.media_type}")
            lines.append(f"Content-Length: {len(body)}")
        head = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")
        return head + body if body is not None else head


class _ResponseProtocol(asyncio.Protocol):
    """Feeds bytes to ``httptools`` and completes one future per response."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.parser = httptools.HttpResponseParser(self)
        self.waiter: asyncio.Future[tuple[int, bytes, bool]] | None = None
        self.body: list[bytes] = []
        self.headers_done = False
        self.closed = False

    # asyncio callbacks
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports do not subclass asyncio.Transport.
        self.transport = cast(asyncio.Transport, transport)

    def data_received(self, data: bytes) -> None:
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError as exc:
            self._fail(HttpError(f"bad response: {exc}"))

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        waiter = self.waiter
        if exc is None and self.headers_done and waiter is not None and not waiter.done():
            # A body delimited by the end of the connection (HTTP/1.0 without
            # Content-Length) ends here.
            self.waiter = None
            waiter.set_result((self.parser.get_status_code(), b"".join(self.body), False))
            return
        self._fail(HttpError(f"connection lost: {exc or 'closed by the server'}"))

    # httptools callbacks
    def on_message_begin(self) -> None:
        self.body = []
        self.headers_done = False

    def on_headers_complete(self) -> None:
        self.headers_done = True

    def on_body(self, body: bytes) -> None:
        self.body.append(body)

    def on_message_complete(self) -> None:
        waiter = self.waiter
        self.waiter = None
        if waiter is not None and not waiter.done():
            keep = self.parser.should_keep_alive()
            waiter.set_result((self.parser.get_status_code(), b"".join(self.body), keep))

    def _fail(self, exc: Exception) -> None:
        waiter = self.waiter
        self.waiter = None
        if waiter is not None and not waiter.done():
            waiter.set_exception(exc)


def _expire(waiter: asyncio.Future[tuple[int, bytes, bool]], timeout: float) -> None:
    if not waiter.done():
        waiter.set_exception(HttpError(f"no response within {timeout} s"))


class Connection:
    """One client connection; :meth:`send` is not reentrant (one request at a time)."""

    def __init__(self, host: str, port: int, timeout: float = DEFAULT_TIMEOUT) -> None:
        self.host = host
        self.port = port
        self.timeout = timeout
        self._proto: _ResponseProtocol | None = None
        self.connects = 0

    async def _connect(self) -> _ResponseProtocol:
        loop = asyncio.get_running_loop()
        try:
            _, proto = await asyncio.wait_for(
                loop.create_connection(_ResponseProtocol, self.host, self.port), self.timeout
            )
        except (OSError, TimeoutError) as exc:
            raise HttpError(f"connect failed: {exc!r}") from exc
        self.connects += 1
        return proto

    async def send(self, data: bytes) -> tuple[int, bytes]:
        """Write one request, return its status and body."""
        proto = self._proto
        if proto is None or proto.closed:
            proto = self._proto = await self._connect()
        loop = asyncio.get_running_loop()
        waiter: asyncio.Future[tuple[int, bytes, bool]] = loop.create_future()
        proto.waiter = waiter
        # A timer rather than asyncio.wait_for, which costs a task per request.
        timer = loop.call_later(self.timeout, _expire, waiter, self.timeout)
        assert proto.transport is not None
        proto.transport.write(data)
        try:
            status, body, keep_alive = await waiter
        except HttpError:
            self.close()
            raise
        finally:
            timer.cancel()
        if not keep_alive:
            self.close()
        return status, body

    def close(self) -> None:
        if self._proto is not None and self._proto.transport is not None:
            self._proto.transport.close()
        self._proto = None
