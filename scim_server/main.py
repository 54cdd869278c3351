"""Entry point for ``uvicorn --factory scim_server.main:app_factory``."""

from starlette.applications import Starlette

from identity_store.settings import Settings

from .app import create_app


def app_factory() -> Starlette:
    """Build the application from the environment (read now, not at import)."""
    return create_app(Settings())
