"""The HTTP side shared by the clients of remote systems (Microsoft Graph,
Auth0, Rönd): one ``httpx.AsyncClient`` set up alike (a timeout, a connection
pool sized to the client's concurrency, no redirects followed, no proxy or
credentials taken from the environment, JSON asked for), closed with the
client; an answer read up to a size (:meth:`RemoteClient._receive`); the
time a ``Retry-After`` names (:func:`retry_after_at`)."""

from __future__ import annotations

from dataclasses import dataclass
from email.utils import parsedate_to_datetime
from types import TracebackType
from typing import Self

import httpx

__all__ = ["Answer", "RemoteClient", "Unreadable", "retry_after_at"]


@dataclass(frozen=True, slots=True)
class Answer:
    """A remote system's answer, its body read whole (or cut, for an error)."""

    status: int
    headers: httpx.Headers
    body: bytes


class Unreadable(Exception):
    """A 2xx answer larger than the client reads, or one it cannot decode."""


def retry_after_at(headers: httpx.Headers, now: float, *, longest: float) -> float | None:
    """When a ``Retry-After`` header (delta-seconds or an HTTP date) says to
    come back (epoch seconds), between ``now`` and ``now + longest`` (a
    hostile or broken header cannot park a sync for days); ``None`` without
    one that parses."""
    after = headers.get("retry-after", "").strip()
    if after.isdigit() and len(after) <= 9:
        return min(now + float(after), now + longest)
    if not after:
        return None
    try:
        when = parsedate_to_datetime(after)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:
        return None
    return min(max(when.timestamp(), now), now + longest)


class RemoteClient:
    """Base of a remote system's client: ``self._http``, and ``async with``
    / :meth:`aclose` that close it."""

    def __init__(
        self,
        *,
        timeout: float,
        connections: int,
        user_agent: str,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self._http = httpx.AsyncClient(
            transport=transport,
            timeout=httpx.Timeout(timeout),
            limits=httpx.Limits(max_connections=connections, max_keepalive_connections=connections),
            follow_redirects=False,
            trust_env=False,
            headers={"Accept": "application/json", "User-Agent": user_agent},
        )

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        await self._http.aclose()

    async def _receive(self, request: httpx.Request, *, max_body_bytes: int, who: str) -> Answer:
        """Send ``request``; its answer, read up to ``max_body_bytes``: a
        larger 2xx body (declared or streamed) is :class:`Unreadable`, an
        error body is cut there. ``who`` names the system in the message."""
        response = await self._http.send(request, stream=True)
        try:
            success = 200 <= response.status_code < 300
            declared = response.headers.get("content-length", "")
            if success and declared.isdigit() and int(declared) > max_body_bytes:
                raise Unreadable(
                    f"{who}'s answer is {int(declared):,} bytes; at most {max_body_bytes:,} read"
                )
            chunks: list[bytes] = []
            size = 0
            async for chunk in response.aiter_bytes():
                size += len(chunk)
                if size > max_body_bytes:
                    if success:
                        raise Unreadable(
                            f"{who}'s answer is larger than {max_body_bytes:,} bytes; not read"
                        )
                    chunks.append(chunk[: max_body_bytes - (size - len(chunk))])
                    break
                chunks.append(chunk)
        except httpx.DecodingError as exc:
            raise Unreadable(f"{who}'s answer cannot be decoded ({exc})") from exc
        finally:
            await response.aclose()
        return Answer(response.status_code, response.headers, b"".join(chunks))
