"""What the running application holds: settings, engine, session factory."""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker
from starlette.requests import Request

from identity_store.settings import Settings


@dataclass(slots=True)
class AppState:
    settings: Settings
    engine: AsyncEngine
    sessions: async_sessionmaker[AsyncSession]
    head_revision: str | None


def app_state(request: Request) -> AppState:
    state: AppState = request.app.state.idstore
    return state
