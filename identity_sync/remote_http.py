"""The HTTP side shared by the clients of remote systems (Microsoft Graph,
Auth0): one ``httpx.AsyncClient`` set up alike (a timeout, a connection
pool sized to the client's concurrency, no redirects followed, no proxy or
credentials taken from the environment, JSON asked for), closed with the
client."""

from __future__ import annotations

from types import TracebackType
from typing import Self

import httpx

__all__ = ["RemoteClient"]


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
